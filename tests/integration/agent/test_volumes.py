"""Pod volumes and securityContext on the process runtime, through a real agent: emptyDir
created before the start and removed with the pod, hostPath checks reported as FailedMount
and retried, workingDir under a mount mapped to its host directory, and runAsNonRoot
refusals as CreateContainerConfigError."""

from __future__ import annotations

import os
from pathlib import Path

from shoal.api import Pod
from tests.integration.agent.conftest import Harness, eventually, py


def waiting(pod: Pod) -> tuple[str | None, str | None]:
    cs = pod.status.container_statuses
    if cs and cs[0].state.waiting is not None:
        return cs[0].state.waiting.reason, cs[0].state.waiting.message
    return None, None


async def test_empty_dir_lives_and_dies_with_the_pod(harness: Harness) -> None:
    await harness.start_agent()
    code = "import os, time; open('made-by-pod', 'w').write(os.getcwd()); time.sleep(60)"
    await harness.create_pod(
        "scratch",
        [{"name": "c", "command": py(code), "workingDir": "/work",
          "volumeMounts": [{"name": "scratch", "mountPath": "/work"}]}],
        volumes=[{"name": "scratch", "emptyDir": {}}],
        terminationGracePeriodSeconds=1,
    )  # fmt: skip
    pod = await harness.wait_pod("scratch", lambda p: p.status.phase == "Running")
    volume = harness.data_dir / "pods" / str(pod.metadata.uid) / "volumes" / "scratch"
    made = volume / "made-by-pod"
    await eventually(made.exists)
    assert made.read_text() == str(volume), "workingDir /work ran in the emptyDir's directory"

    await harness.client.pods.delete("scratch", "default")

    async def gone() -> bool:
        return not [p for p in await harness.client.pods.list("default")]

    await eventually(gone)
    await eventually(lambda: not volume.parent.parent.exists())


async def test_missing_host_path_is_failed_mount_until_it_appears(
    harness: Harness, tmp_path: Path
) -> None:
    apps = tmp_path / "apps"
    await harness.start_agent()
    await harness.create_pod(
        "app",
        [{"name": "c", "command": py("import os; print(os.getcwd(), flush=True)"),
          "workingDir": "/app/web", "volumeMounts": [{"name": "app", "mountPath": "/app"}]}],
        volumes=[{"name": "app", "hostPath": {"path": str(apps), "type": "Directory"}}],
        restartPolicy="Never",
    )  # fmt: skip
    event = await harness.wait_event("app", "FailedMount")
    assert event.type == "Warning"
    assert event.message == (
        f'MountVolume.SetUp failed for volume "app" : hostPath type check failed: {apps} is '
        "not a directory"
    )
    pod = await harness.client.pods.get("app", "default")
    assert pod.status.phase == "Pending"
    assert waiting(pod)[0] == "ContainerCreating"

    (apps / "web").mkdir(parents=True)  # the retry (back-off from 0.5 s) finds it
    pod = await harness.wait_pod("app", lambda p: p.status.phase == "Succeeded", timeout=10)
    log = harness.data_dir / "logs" / str(pod.metadata.uid) / "c" / "0.log"
    assert log.read_text() == f"{apps / 'web'}\n", "workingDir under the mount ran in its source"


async def test_run_as_non_root_refusals(harness: Harness) -> None:
    await harness.start_agent()
    await harness.create_pod(
        "rooted",
        [{"name": "c", "command": py("print('should not run')"),
          "securityContext": {"runAsUser": 0}}],
        securityContext={"runAsNonRoot": True},
    )  # fmt: skip
    pod = await harness.wait_pod("rooted", lambda p: waiting(p)[0] == "CreateContainerConfigError")
    expected = (
        "container's runAsUser breaks non-root policy "
        f'(pod: "rooted_default({pod.metadata.uid})", container: c)'
    )
    assert waiting(pod)[1] == expected
    failed = await harness.wait_event("rooted", "Failed")
    assert (failed.type, failed.message) == ("Warning", f"Error: {expected}")
    assert "Started" not in [e.reason for e in await harness.events("rooted")]

    # Without runAsUser the process runtime runs containers as the agent's own user.
    await harness.create_pod(
        "inherits",
        [{"name": "c", "command": py("import time; time.sleep(30)")}],
        securityContext={"runAsNonRoot": True},
    )
    if os.geteuid() == 0:
        pod = await harness.wait_pod(
            "inherits", lambda p: waiting(p)[0] == "CreateContainerConfigError"
        )
        assert "image will run as root" in (waiting(pod)[1] or "")
    else:
        await harness.wait_pod("inherits", lambda p: p.status.phase == "Running")
