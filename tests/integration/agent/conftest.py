"""A real API server, real agents with the real ProcessDriver, and a guarantee that every
process a test started is dead when it ends (killed by pid *and* /proc start time from the
driver's state files, even if the test failed half-way)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shoal.agent import Agent, AgentConfig
from shoal.agent._volumes import PodVolumes
from shoal.api import Event, Pod
from shoal.client import Client
from shoal.runtime import _procutil as pu
from shoal.testing import RunningAPIServer, running_api_server

PY = sys.executable
NODE = "node-a"


def py(code: str) -> list[str]:
    """A container command running Python code."""
    return [PY, "-c", code]


@dataclass
class Harness:
    api: RunningAPIServer
    client: Client
    data_dir: Path
    agents: list[tuple[Agent, asyncio.Task[None]]] = field(default_factory=list)

    def config(self, **overrides: Any) -> AgentConfig:
        settings: dict[str, Any] = {
            "node_name": NODE,
            "data_dir": self.data_dir,
            "heartbeat_interval": 0.5,
            "backoff_initial": 0.2,
            "backoff_cap": 1.0,
            "housekeeping_interval": 0.5,
            "force_kill_grace": 1.0,
        }
        settings.update(overrides)
        return AgentConfig(**settings)

    async def start_agent(self, **overrides: Any) -> Agent:
        agent = Agent(self.client, self.config(**overrides))
        task = asyncio.create_task(agent.run())
        self.agents.append((agent, task))
        ready = asyncio.create_task(agent.ready.wait())
        await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            await task
        assert agent.ready.is_set(), "agent did not become ready"
        return agent

    async def stop_agent(self, agent: Agent) -> None:
        for a, task in self.agents:
            if a is agent:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def create_pod(self, name: str, containers: list[dict[str, Any]], **spec: Any) -> Pod:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": NODE, "containers": containers, **spec},
        }
        return await self.client.pods.create(body)

    async def wait_pod(
        self, name: str, predicate: Callable[[Pod], bool], timeout: float = 10.0
    ) -> Pod:
        deadline = time.monotonic() + timeout
        pod = await self.client.pods.get(name, "default")
        while not predicate(pod):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"pod {name} did not reach the expected state; last status:\n"
                    + json.dumps(pod.status.to_dict(), indent=1)
                )
            await asyncio.sleep(0.1)
            pod = await self.client.pods.get(name, "default")
        return pod

    async def events(self, name: str) -> list[Event]:
        return [
            e for e in await self.client.events.list("default") if e.involved_object.name == name
        ]

    async def wait_event(self, name: str, reason: str, timeout: float = 10.0) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            for e in await self.events(name):
                if e.reason == reason:
                    return e
            if time.monotonic() > deadline:
                reasons = [e.reason for e in await self.events(name)]
                raise AssertionError(f"no {reason} event for {name}; saw {reasons}")
            await asyncio.sleep(0.1)


def recorded_processes(data_dir: Path) -> list[tuple[int, int]]:
    """(pid, start_ticks) of every process the driver ever recorded under ``data_dir``."""
    found = []
    for path in (data_dir / "containers").glob("*.json"):
        data = pu.read_json(path) or {}
        if data.get("pid") and data.get("start_ticks"):
            found.append((int(data["pid"]), int(data["start_ticks"])))
    return found


def alive(pid: int, ticks: int) -> bool:
    return pu.is_running(pid, ticks)


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def _reap(pids: Iterable[int]) -> None:
    """Collect the exit of any of our own children among ``pids`` (no zombies left)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api_server(tmp_path / "server") as api, Client(api.url) as client:
        h = Harness(api, client, tmp_path / "agent")
        seen: set[tuple[int, int]] = set()
        try:
            yield h
        finally:
            for _agent, task in h.agents:
                task.cancel()
            for _agent, task in h.agents:
                with contextlib.suppress(BaseException):
                    await task
            seen.update(recorded_processes(h.data_dir))
            for agent, _task in h.agents:
                for c in getattr(agent.driver, "_containers", {}).values():
                    if c.pid is not None and c.start_ticks is not None:
                        seen.add((c.pid, c.start_ticks))
            for pid, ticks in seen:
                if pu.is_same_process(pid, ticks):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
            _reap(pid for pid, _ in seen)
            await eventually(lambda: not any(alive(p, t) for p, t in seen), timeout=5)
            # Memory emptyDirs are tmpfs mounts when root: never leave one behind.
            PodVolumes(h.data_dir / "pods").release_mounts()
