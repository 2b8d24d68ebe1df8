"""Resource usage of the node and its containers, in the kubelet's Summary API shape.

The agent samples ``driver.stats()`` for every running container (and the node from /proc)
once per housekeeping interval and keeps the last two samples of each: cumulative CPU time
is what drivers report, and a rate (``usageNanoCores``) needs two readings. ``summary()``
builds the subset of ``/stats/summary`` that ``kubectl top`` and the autoscaler read:

    {"node": {"nodeName", "cpu": {...}, "memory": {...}},
     "pods": [{"podRef": {"name", "namespace", "uid"},
               "containers": [{"name", "cpu": {...}, "memory": {...}}],
               "cpu": {...}, "memory": {...}}]}

``cpu`` is ``{"time", "usageNanoCores", "usageCoreNanoSeconds"}`` (usageNanoCores only once
two samples exist), ``memory`` is ``{"time", "workingSetBytes", "usageBytes"}`` (the node's
also has ``availableBytes``). A pod's figures are the sums of its containers'.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal._util import Clock, format_time
from shoal.errors import DriverError
from shoal.runtime import ContainerStats, Driver

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Target:
    """One running container to sample."""

    pod_uid: str
    name: str
    container_id: str


@dataclass(frozen=True)
class PodRef:
    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class _Reading:
    timestamp: float
    cpu_nanos: int
    working_set: int
    usage: int
    available: int | None = None


def _cpu(samples: list[_Reading]) -> dict[str, Any]:
    last = samples[-1]
    out: dict[str, Any] = {
        "time": format_time(last.timestamp),
        "usageCoreNanoSeconds": last.cpu_nanos,
    }
    if len(samples) > 1:
        first = samples[0]
        elapsed = last.timestamp - first.timestamp
        if elapsed > 0:
            out["usageNanoCores"] = max(0, round((last.cpu_nanos - first.cpu_nanos) / elapsed))
    return out


def _memory(r: _Reading) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": format_time(r.timestamp),
        "workingSetBytes": r.working_set,
        "usageBytes": r.usage,
    }
    if r.available is not None:
        out["availableBytes"] = r.available
    return out


def _sum(parts: list[dict[str, Any]], keys: Iterable[str]) -> dict[str, Any]:
    """A pod's cpu or memory block: its containers' values added up (a key is present
    only if every container has it, so a rate is never a partial sum)."""
    out: dict[str, Any] = {"time": max(p["time"] for p in parts)}
    for key in keys:
        if all(key in p for p in parts):
            out[key] = sum(p[key] for p in parts)
    return out


def read_node_usage(now: float) -> _Reading:
    """The whole machine, from /proc/stat (busy CPU ticks) and /proc/meminfo."""
    cpu_ticks = 0
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                # user nice system idle iowait irq softirq steal: everything but idle+iowait
                cpu_ticks = sum(v[:3]) + sum(v[5:8])
                break
    except (OSError, ValueError):
        pass
    mem: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                mem[key] = int(parts[0]) * 1024
    except (OSError, ValueError):
        pass
    total = mem.get("MemTotal", 0)
    available = mem.get("MemAvailable", mem.get("MemFree", 0))
    return _Reading(
        timestamp=now,
        cpu_nanos=cpu_ticks * 1_000_000_000 // _TICKS,
        working_set=max(0, total - available),
        usage=max(0, total - mem.get("MemFree", 0)),
        available=available,
    )


class StatsKeeper:
    """The last two samples of the node and of each running container."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._node: list[_Reading] = []
        self._containers: dict[tuple[str, str], list[_Reading]] = {}
        """(pod uid, container name) -> samples, oldest first; the same container_id."""
        self._ids: dict[tuple[str, str], str] = {}

    async def sample(self, driver: Driver, targets: Iterable[Target]) -> None:
        """Read every target's usage concurrently; containers no longer running are
        forgotten (a restarted container starts a fresh series: its CPU counter did)."""
        wanted = list(targets)

        async def one(t: Target) -> tuple[Target, ContainerStats | None]:
            try:
                return t, await driver.stats(t.container_id)
            except DriverError:
                return t, None

        results = await asyncio.gather(*(one(t) for t in wanted))
        node = await asyncio.to_thread(read_node_usage, self.clock.now())
        self._node = [*self._node[-1:], node]
        seen: set[tuple[str, str]] = set()
        for t, st in results:
            if st is None:
                continue
            key = (t.pod_uid, t.name)
            seen.add(key)
            reading = _Reading(st.timestamp, st.cpu_usage_nanos, st.memory_bytes, st.memory_bytes)
            series = self._containers.get(key, [])
            if self._ids.get(key) != t.container_id or (
                series and reading.cpu_nanos < series[-1].cpu_nanos
            ):
                series = []  # another container, or it restarted in between
            self._containers[key] = [*series[-1:], reading]
            self._ids[key] = t.container_id
        for key in list(self._containers):
            if key not in seen:
                del self._containers[key]
                self._ids.pop(key, None)

    def summary(self, node_name: str, pods: Iterable[tuple[PodRef, list[str]]]) -> dict[str, Any]:
        """The Summary document for ``pods`` ((ref, container names) of the pods this node
        runs); pods with no sampled container are left out."""
        node: dict[str, Any] = {"nodeName": node_name}
        if self._node:
            node["cpu"] = _cpu(self._node)
            node["memory"] = _memory(self._node[-1])
        out_pods = []
        for ref, names in pods:
            containers: list[dict[str, Any]] = []
            for name in names:
                series = self._containers.get((ref.uid, name))
                if series:
                    containers.append(
                        {"name": name, "cpu": _cpu(series), "memory": _memory(series[-1])}
                    )
            if not containers:
                continue
            out_pods.append(
                {
                    "podRef": {"name": ref.name, "namespace": ref.namespace, "uid": ref.uid},
                    "containers": containers,
                    "cpu": _sum(
                        [c["cpu"] for c in containers], ("usageNanoCores", "usageCoreNanoSeconds")
                    ),
                    "memory": _sum(
                        [c["memory"] for c in containers], ("workingSetBytes", "usageBytes")
                    ),
                }
            )
        return {"node": node, "pods": out_pods}
