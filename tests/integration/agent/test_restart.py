"""Agent restarts: running containers are adopted, not restarted; orphans are stopped."""

from __future__ import annotations

import asyncio
import time

from shoal.runtime import _procutil as pu
from tests.integration.agent.conftest import Harness, alive, eventually, py

SLEEP = py("import time; time.sleep(60)")


async def test_restart_adopts_running_containers_and_kills_orphans(harness: Harness) -> None:
    agent = await harness.start_agent()
    keep = await harness.create_pod(
        "keeper",
        [{"name": "c", "command": SLEEP, "ports": [{"containerPort": 80}]}],
    )
    drop = await harness.create_pod("dropped", [{"name": "c", "command": SLEEP}])
    for name in ("keeper", "dropped"):
        await harness.wait_pod(name, lambda p: p.status.phase == "Running")
    statuses = {s.pod_uid: s for s in await agent.driver.list()}
    kept, dropped = statuses[keep.metadata.uid or ""], statuses[drop.metadata.uid or ""]
    assert kept.pid and dropped.pid
    kept_ticks, dropped_ticks = pu.proc_start_ticks(kept.pid), pu.proc_start_ticks(dropped.pid)
    assert kept_ticks and dropped_ticks
    before = await harness.client.pods.get("keeper", "default")

    await harness.stop_agent(agent)
    assert alive(kept.pid, kept_ticks), "containers must outlive the agent"
    assert alive(dropped.pid, dropped_ticks)
    # Deleted while no agent runs: the object goes away at once (force), the process stays.
    await harness.client.pods.delete("dropped", "default", grace_period_seconds=0)

    agent2 = await harness.start_agent()
    await eventually(lambda: not alive(dropped.pid, dropped_ticks), timeout=5)  # type: ignore[arg-type]
    assert alive(kept.pid, kept_ticks), "adopted container must not be restarted"
    (adopted,) = [s for s in await agent2.driver.list() if s.pod_uid == keep.metadata.uid]
    assert adopted.pid == kept.pid and adopted.state == "running"
    assert adopted.host_ports == kept.host_ports
    await asyncio.sleep(0.5)
    after = await harness.client.pods.get("keeper", "default")
    cs_before, cs_after = before.status.container_statuses[0], after.status.container_statuses[0]
    assert cs_after.restart_count == cs_before.restart_count == 0
    assert cs_after.state.running is not None
    assert cs_after.state.running.started_at == cs_before.state.running.started_at  # type: ignore[union-attr]
    assert cs_after.ready and after.status.phase == "Running"
    assert not (harness.data_dir / "logs" / str(drop.metadata.uid)).exists()
    # The adopted process's exit is still noticed (and it is restarted per policy).
    import os
    import signal

    os.kill(kept.pid, signal.SIGKILL)

    def restarted(p) -> bool:  # type: ignore[no-untyped-def]
        return (
            p.status.container_statuses[0].restart_count == 1
            and p.status.container_statuses[0].state.running is not None
        )

    pod = await harness.wait_pod("keeper", restarted)
    last = pod.status.container_statuses[0].last_state.terminated
    assert last is not None and last.reason == "ContainerStatusUnknown"


async def test_restart_keeps_restart_count(harness: Harness) -> None:
    agent = await harness.start_agent()
    await harness.create_pod(
        "counted",
        [{"name": "c", "command": ["sh", "-c", "sleep 0.3; exit 1"]}],
        restartPolicy="OnFailure",
    )
    await harness.wait_pod(
        "counted",
        lambda p: (
            bool(p.status.container_statuses)
            and p.status.container_statuses[0].restart_count >= 1
            and p.status.container_statuses[0].state.running is not None
        ),
    )
    await harness.stop_agent(agent)
    count = (
        (await harness.client.pods.get("counted", "default"))
        .status.container_statuses[0]
        .restart_count
    )
    await harness.start_agent()
    pod = await harness.wait_pod(
        "counted", lambda p: p.status.container_statuses[0].restart_count > count, timeout=10
    )
    assert pod.status.container_statuses[0].restart_count == count + 1


async def test_stop_pods_on_exit(harness: Harness) -> None:
    agent = await harness.start_agent(stop_pods_on_exit=True)
    stubborn = py(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n"
    )
    pod = await harness.create_pod(
        "short", [{"name": "c", "command": stubborn}], terminationGracePeriodSeconds=1
    )
    await harness.wait_pod("short", lambda p: p.status.phase == "Running")
    (st,) = [s for s in await agent.driver.list() if s.pod_uid == pod.metadata.uid]
    assert st.pid
    ticks = pu.proc_start_ticks(st.pid)
    assert ticks
    began = time.monotonic()
    await harness.stop_agent(agent)
    took = time.monotonic() - began
    assert not alive(st.pid, ticks)
    assert 0.9 <= took < 4, "SIGTERM, then SIGKILL after the pod's own grace period"


async def test_graceful_deletion_while_the_agent_was_down(harness: Harness) -> None:
    agent = await harness.start_agent()
    pod = await harness.create_pod(
        "leaving", [{"name": "c", "command": SLEEP}], terminationGracePeriodSeconds=1
    )
    await harness.wait_pod("leaving", lambda p: p.status.phase == "Running")
    (st,) = [s for s in await agent.driver.list() if s.pod_uid == pod.metadata.uid]
    assert st.pid
    ticks = pu.proc_start_ticks(st.pid)
    assert ticks
    await harness.stop_agent(agent)
    await harness.client.pods.delete("leaving", "default")  # graceful: only marked
    marked = await harness.client.pods.get("leaving", "default")
    assert marked.metadata.deletion_timestamp
    await harness.start_agent()

    async def removed() -> bool:
        return "leaving" not in [p.metadata.name for p in await harness.client.pods.list("default")]

    await eventually(removed, timeout=5)
    assert not alive(st.pid, ticks)


async def test_deleting_a_finished_pod_cleans_up(harness: Harness) -> None:
    agent = await harness.start_agent()
    pod = await harness.create_pod(
        "done", [{"name": "c", "command": ["true"]}], restartPolicy="Never"
    )
    await harness.wait_pod("done", lambda p: p.status.phase == "Succeeded")
    uid = pod.metadata.uid or ""
    assert (harness.data_dir / "logs" / uid).exists()
    await harness.client.pods.delete("done", "default")
    await eventually(lambda: uid not in agent.workers, timeout=5)
    assert not (harness.data_dir / "logs" / uid).exists()
    assert not any(s.pod_uid == uid for s in await agent.driver.list())
