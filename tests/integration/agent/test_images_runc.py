"""The agent on the runc runtime pulls images as the kubelet does: ErrImagePull, then
ImagePullBackOff with back-off retries; ErrImageNeverPull; and a real pull from a local
registry that runs the pod and cleans it away on deletion.

Real parts only: a real API server, runc, a docker-registry on loopback, and for the failing
pull a closed loopback port (connection refused). Each test gets its own data dir and a
unique cgroup parent, swept at teardown even when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shoal.agent import Agent
from shoal.api import ContainerStatus, Event, Pod
from shoal.runtime.runc import _rootfs as rfs
from shoal.testing import free_port
from tests.integration.agent.conftest import Harness, eventually
from tests.integration.runtime.conftest import cleanup_everything
from tests.oci_support import TOOLS, build_busybox_image, push, registry
from tests.rootreq import require_root


@dataclass
class RuncSetup:
    h: Harness
    cgroup_parent: str

    async def start(self, **overrides: object) -> Agent:
        settings: dict[str, object] = {
            "runtime": "runc",
            "cgroup_parent": self.cgroup_parent,
            "image_pull_backoff_initial": 2.0,
            "image_pull_backoff_cap": 4.0,
        }
        settings.update(overrides)
        return await self.h.start_agent(**settings)


@pytest.fixture
async def runc_agent(harness: Harness) -> AsyncIterator[RuncSetup]:
    require_root("runc")
    setup = RuncSetup(harness, f"/shoal-test-{uuid.uuid4().hex[:10]}")
    try:
        yield setup
    finally:
        for _agent, task in harness.agents:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        cleanup_everything(harness.data_dir / "runc", setup.cgroup_parent)
        for point in rfs.mounts_under(harness.data_dir):
            with contextlib.suppress(Exception):
                rfs.unmount(point)


def waiting_reason(pod: Pod) -> str | None:
    cs = pod.status.container_statuses
    if cs and cs[0].state.waiting is not None:
        return cs[0].state.waiting.reason
    return None


def status(pod: Pod) -> ContainerStatus:
    return pod.status.container_statuses[0]


async def events_of(h: Harness, name: str, reason: str) -> list[Event]:
    return [e for e in await h.events(name) if e.reason == reason]


async def test_unreachable_registry_err_image_pull_then_back_off(runc_agent: RuncSetup) -> None:
    h = runc_agent.h
    await runc_agent.start()
    image = f"127.0.0.1:{free_port()}/busybox:1"  # nothing listens: connection refused
    await h.create_pod("pull", [{"name": "c", "image": image, "command": ["sh"]}])

    pod = await h.wait_pod("pull", lambda p: waiting_reason(p) == "ErrImagePull")
    assert pod.status.phase == "Pending"
    message = status(pod).state.waiting.message  # type: ignore[union-attr]
    assert message is not None and "connection refused" in message and image in message
    failed = await h.wait_event("pull", "Failed")
    assert failed.type == "Warning"
    texts = [e.message for e in await events_of(h, "pull", "Failed")]
    assert f'Failed to pull image "{image}": {message}' in texts
    assert "Error: ErrImagePull" in texts
    pulling = await h.wait_event("pull", "Pulling")
    assert pulling.message == f'Pulling image "{image}"' and pulling.type == "Normal"

    pod = await h.wait_pod("pull", lambda p: waiting_reason(p) == "ImagePullBackOff", timeout=5)
    waiting = status(pod).state.waiting
    assert waiting is not None and waiting.message == (
        f'Back-off pulling image "{image}": ErrImagePull: {message}'
    )
    backoff = await h.wait_event("pull", "BackOff")
    assert (backoff.type, backoff.message) == ("Normal", f'Back-off pulling image "{image}"')

    # After the back-off (2 s) it tries again: a second Pulling, then ErrImagePull again.
    async def pulled_twice() -> bool:
        return len(await events_of(h, "pull", "Pulling")) >= 2

    await eventually(pulled_twice, timeout=8)
    await h.wait_pod("pull", lambda p: waiting_reason(p) == "ErrImagePull", timeout=5)
    assert status(await h.client.pods.get("pull", "default")).restart_count == 0

    # Deleting a pod stuck pulling works at once.
    await h.client.pods.delete("pull", "default")

    async def gone() -> bool:
        return "pull" not in [p.metadata.name for p in await h.client.pods.list("default")]

    await eventually(gone, timeout=10)


async def test_never_pull_policy_with_absent_image(runc_agent: RuncSetup) -> None:
    h = runc_agent.h
    await runc_agent.start()
    image = "shoal.test/absent:1"
    await h.create_pod(
        "never", [{"name": "c", "image": image, "imagePullPolicy": "Never", "command": ["sh"]}]
    )
    pod = await h.wait_pod("never", lambda p: waiting_reason(p) == "ErrImageNeverPull")
    expected = f'Container image "{image}" is not present with pull policy of Never'
    assert status(pod).state.waiting.message == expected  # type: ignore[union-attr]
    event = await h.wait_event("never", "ErrImageNeverPull")
    assert (event.type, event.message) == ("Warning", expected)
    assert not await events_of(h, "never", "Pulling"), "Never never pulls"


async def test_pod_runs_from_a_local_registry_and_is_deleted_cleanly(
    runc_agent: RuncSetup, tmp_path: Path
) -> None:
    require_root("runc", *TOOLS)
    h = runc_agent.h
    layout = build_busybox_image(tmp_path / "img", tag="1")
    with registry(tmp_path / "registry") as reg:
        image = f"{reg.host}/shoal/busybox:1"
        push(layout, image)
        agent = await runc_agent.start()
        containers: list[dict[str, Any]] = [
            {"name": "main", "image": image, "command": ["sh", "-c", "echo started; exec sleep 3600"],
             "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
            {"name": "side", "image": image, "command": ["sh", "-c", "exec sleep 3600"]},
        ]  # fmt: skip
        await h.create_pod(
            "bb", containers, volumes=[{"name": "scratch", "emptyDir": {}}],
            terminationGracePeriodSeconds=1,
        )  # fmt: skip
        pod = await h.wait_pod(
            "bb", lambda p: p.status.phase == "Running" and all(c.ready for c in p.status.container_statuses),
            timeout=30,
        )  # fmt: skip
    uid = pod.metadata.uid
    assert status(pod).container_id == f"runc://{uid}_main"
    assert status(pod).image == image
    pulled = [e.message for e in await events_of(h, "bb", "Pulled")]
    assert any(m.startswith(f'Successfully pulled image "{image}" in ') for m in pulled), pulled
    # Two containers of one image, started together: one pull (shared), the other either
    # joined it or found the image present.
    assert len(await events_of(h, "bb", "Pulling")) <= 2
    node = await h.client.nodes.get("node-a")
    assert node.metadata.labels["shoal.dev/runtime"] == "runc"
    assert node.status.node_info.container_runtime_version.startswith("runc://1.")

    scratch = h.data_dir / "pods" / str(uid) / "volumes" / "scratch"
    assert scratch.is_dir(), "the emptyDir exists while the pod runs"
    proc = await agent.driver.exec(f"{uid}_main", ["sh", "-c", "echo hi > /scratch/f"])
    await asyncio.wait_for(proc.communicate(), 10)
    assert (scratch / "f").read_text() == "hi\n", "the emptyDir is mounted in the container"
    log_path = agent.driver.log_path(f"{uid}_main", 0)
    assert log_path.read_text() == "started\n"

    await h.client.pods.delete("bb", "default")

    async def gone() -> bool:
        return "bb" not in [p.metadata.name for p in await h.client.pods.list("default")]

    await eventually(gone, timeout=20)
    await eventually(lambda: not (h.data_dir / "pods" / str(uid)).exists(), timeout=5)
    listed = await asyncio.to_thread(
        subprocess.run,
        ["runc", "--root", str(h.data_dir / "runc" / "state"), "list", "--format", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(listed.stdout or "null") in (None, [])
    assert rfs.mounts_under(h.data_dir) == []


async def test_oom_kill_and_restarts_show_in_pod_status(runc_agent: RuncSetup) -> None:
    """A container past its memory limit is OOMKilled (137); restarted per OnFailure, the
    kill shows as lastState.terminated and restartCount, as kubectl describe shows it."""
    h = runc_agent.h
    await runc_agent.start()
    hog = "a = b'x' * (256 * 2**20)"
    await h.create_pod(
        "hog",
        [{"name": "hog", "command": ["python3", "-c", hog],
          "resources": {"limits": {"memory": "32Mi"}}}],
        restartPolicy="OnFailure",
    )  # fmt: skip

    def killed_and_restarted(p: Pod) -> bool:
        cs = p.status.container_statuses
        last = cs[0].last_state.terminated if cs else None
        return last is not None and cs[0].restart_count >= 1

    pod = await h.wait_pod("hog", killed_and_restarted, timeout=30)
    last = status(pod).last_state.terminated
    assert last is not None
    assert (last.reason, last.exit_code) == ("OOMKilled", 137)
    assert last.container_id == f"runc://{pod.metadata.uid}_hog"
