"""An agent restart on the runc runtime adopts the running containers without restarting
them (same container PID before and after), and still notices their exit afterwards."""

from __future__ import annotations

import os
import signal

from shoal.api import Pod
from tests.integration.agent.test_images_runc import RuncSetup, runc_agent

__all__ = ["runc_agent"]  # the fixture, imported for this module


def _restarts(p: Pod) -> int:
    return p.status.container_statuses[0].restart_count if p.status.container_statuses else -1


async def test_agent_restart_adopts_runc_container_with_same_pid(runc_agent: RuncSetup) -> None:
    h = runc_agent.h
    agent1 = await runc_agent.start()
    await h.create_pod("keeper", [{"name": "c", "command": ["sleep", "3600"]}])
    pod = await h.wait_pod("keeper", lambda p: p.status.phase == "Running", timeout=20)
    uid = pod.metadata.uid
    (before,) = [s for s in await agent1.driver.list() if s.pod_uid == uid]
    assert before.state == "running" and before.pid is not None
    await h.stop_agent(agent1)  # the containers stay: a kubelet restart, not a node shutdown
    os.kill(before.pid, 0)  # still alive while no agent runs

    agent2 = await runc_agent.start()
    (after,) = [s for s in await agent2.driver.list() if s.pod_uid == uid]
    assert (after.pid, after.state, after.attempt) == (before.pid, "running", before.attempt)
    pod = await h.wait_pod("keeper", lambda p: p.status.phase == "Running", timeout=10)
    assert _restarts(pod) == 0

    # The adopted container's exit is still seen, and it is restarted per restartPolicy.
    os.kill(before.pid, signal.SIGKILL)
    pod = await h.wait_pod("keeper", lambda p: _restarts(p) == 1, timeout=30)
    (again,) = [s for s in await agent2.driver.list() if s.pod_uid == uid]
    assert again.state == "running" and again.pid != before.pid
