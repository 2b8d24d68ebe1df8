"""The stats keeper over a real ProcessDriver: two samples make a CPU rate, the Summary
shape is the kubelet's, restarted or stopped containers start over or drop out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shoal._util import SystemClock
from shoal.agent._stats import PodRef, StatsKeeper, Target, read_node_usage
from shoal.runtime import ContainerConfig, ProcessDriver
from shoal.runtime import _procutil as pu

SPIN = "import time\nwhile True: pass\n"


@pytest.fixture
async def driver(tmp_path: Path) -> AsyncIterator[ProcessDriver]:
    d = ProcessDriver(tmp_path / "state", tmp_path / "logs")
    try:
        yield d
    finally:
        d.close()
        for c in d._containers.values():
            if c.pid is not None and pu.is_same_process(c.pid, c.start_ticks):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.pid, signal.SIGKILL)
            if c.popen is not None:
                c.popen.wait(5)


def cfg(uid: str, name: str, code: str) -> ContainerConfig:
    return ContainerConfig(
        pod_uid=uid, pod_name="p", namespace="ns", name=name, attempt=0,
        command=[sys.executable, "-c", code],
    )  # fmt: skip


async def test_two_samples_give_rates_in_the_summary_shape(driver: ProcessDriver) -> None:
    uid = str(uuid.uuid4())
    spin, idle = cfg(uid, "spin", SPIN), cfg(uid, "idle", "import time; time.sleep(60)")
    await driver.start(spin)
    await driver.start(idle)
    keeper = StatsKeeper(SystemClock())
    targets = [Target(uid, "spin", spin.container_id), Target(uid, "idle", idle.container_id)]
    await keeper.sample(driver, targets)
    ref = PodRef("p", "ns", uid)
    first = keeper.summary("node-1", [(ref, ["spin", "idle"])])
    assert "usageNanoCores" not in first["pods"][0]["cpu"], "one sample gives no rate"
    await asyncio.sleep(0.5)
    await keeper.sample(driver, targets)
    summary = keeper.summary("node-1", [(ref, ["spin", "idle"]), (PodRef("q", "ns", "x"), ["c"])])

    node = summary["node"]
    assert node["nodeName"] == "node-1"
    assert node["cpu"]["usageNanoCores"] > 0 and node["cpu"]["usageCoreNanoSeconds"] > 0
    assert node["memory"]["availableBytes"] > 0 and node["memory"]["workingSetBytes"] > 0
    (pod,) = summary["pods"]  # the pod with no sampled container is left out
    assert pod["podRef"] == {"name": "p", "namespace": "ns", "uid": uid}
    by_name = {c["name"]: c for c in pod["containers"]}
    spin_cpu = by_name["spin"]["cpu"]["usageNanoCores"]
    idle_cpu = by_name["idle"]["cpu"]["usageNanoCores"]
    assert 0.5e9 < spin_cpu < 1.3e9, "a busy loop uses about one core"
    assert idle_cpu < 0.1e9
    assert by_name["spin"]["memory"]["workingSetBytes"] > 1_000_000
    assert set(by_name["spin"]["cpu"]) == {"time", "usageNanoCores", "usageCoreNanoSeconds"}
    assert set(by_name["spin"]["memory"]) == {"time", "workingSetBytes", "usageBytes"}
    assert pod["cpu"]["usageNanoCores"] == spin_cpu + idle_cpu
    assert pod["memory"]["workingSetBytes"] == sum(
        c["memory"]["workingSetBytes"] for c in pod["containers"]
    )

    # A stopped container drops out; a restarted one starts a fresh series (its CPU counter
    # started over).
    await driver.stop(idle.container_id, 1)
    await driver.stop(spin.container_id, 1)
    await driver.start(cfg(uid, "spin", "import time; time.sleep(60)"))
    await keeper.sample(driver, targets)
    after = keeper.summary("node-1", [(ref, ["spin", "idle"])])
    assert [c["name"] for c in after["pods"][0]["containers"]] == ["spin"]
    assert "usageNanoCores" not in after["pods"][0]["containers"][0]["cpu"]


def test_node_usage_reads_proc() -> None:
    r = read_node_usage(123.0)
    assert r.timestamp == 123.0 and r.cpu_nanos > 0
    assert r.available is not None and r.available > 0 and r.working_set > 0
