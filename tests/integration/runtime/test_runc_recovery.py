"""RuncDriver across agent restarts: adoption, sweeping orphans, and leaving nothing behind."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

from shoal.runtime import ContainerStatus
from shoal.runtime.runc import _cgroups as cg
from shoal.runtime.runc import _rootfs as rfs
from tests.integration.runtime.conftest import (
    DriverFactory,
    config,
    leftovers,
    run_to_exit,
    sh,
    wait_exited,
)


async def test_adopts_running_container_after_restart(make_driver: DriverFactory) -> None:
    first = make_driver()
    cfg = config(["sleep", "60"])
    done = config(sh("exit 5"), name="done", pod_uid=cfg.pod_uid)
    started = await first.start(cfg)
    await run_to_exit(first, done)
    first.close()  # the agent goes away; the container keeps running

    seen: list[ContainerStatus] = []
    second = make_driver(on_exit=seen.append)
    recovered = {s.container_id: s for s in await second.recover()}
    again = recovered[cfg.container_id]
    assert again.state == "running"
    assert again.pid == started.pid
    assert started.pid is not None and _alive(started.pid)
    assert (recovered[done.container_id].exit_code, recovered[done.container_id].reason) == (
        5,
        "Error",
    )
    stopped = await second.stop(cfg.container_id, grace_period=0.2)
    assert stopped.state == "exited"
    assert [s.container_id for s in seen] == [cfg.container_id]
    await second.remove(cfg.container_id)
    await second.remove(done.container_id)
    assert await second.list() == []


async def test_container_that_died_while_agent_was_away(make_driver: DriverFactory) -> None:
    first = make_driver()
    cfg = config(sh("sleep 0.2; exit 9"))
    await first.start(cfg)
    first.close()
    await asyncio.sleep(0.5)
    second = make_driver()
    (status,) = await second.recover()
    assert status.state == "exited"
    # Still our child (same process, subreaper), so the status was not lost.
    assert (status.exit_code, status.reason) == (9, "Error")


async def test_recover_sweeps_orphans(make_driver: DriverFactory, tmp_path: Path) -> None:
    first = make_driver()
    kept = config(["sleep", "60"], name="kept")
    orphan = config(["sleep", "60"], name="orphan")
    await first.start(kept)
    await first.start(orphan)
    orphan_c = first._containers[orphan.container_id]
    orphan_bundle = first.bundles_dir / orphan_c.runc_id
    first.close()
    # The agent crashed before it could record the container: no metadata.
    (orphan_bundle / "meta.json").unlink()
    # A stray mount and a stray cgroup (pod and container level) under the driver's names.
    stray_mount = first.root / "bundles" / "stray" / "rootfs"
    stray_mount.mkdir(parents=True)
    _mount_tmpfs(stray_mount)
    layout = cg.CgroupLayout.detect()
    stray_cgroup = f"{first.cgroup_parent}/ghostpod/ghost"
    mem = layout.dir_for("memory", stray_cgroup)
    assert mem is not None
    mem.mkdir(parents=True)

    second = make_driver()
    statuses = await second.recover()
    assert [s.container_id for s in statuses] == [kept.container_id]
    assert statuses[0].state == "running"
    state = leftovers(second.root, second.cgroup_parent)
    assert state["runc"] == [second._containers[kept.container_id].runc_id]
    assert state["mounts"] == [second.bundles_dir / state["runc"][0] / "rootfs"]
    assert not orphan_bundle.exists()
    assert not (first.root / "bundles" / "stray").exists()
    assert not mem.exists() and not mem.parent.exists()
    assert not any(d.exists() for d in layout.dirs(orphan_c.cgroup_path))
    assert orphan_c.pid is not None
    await asyncio.sleep(0.05)
    assert not _alive(orphan_c.pid)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _mount_tmpfs(target: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(target)], check=True)


async def test_nothing_leaks_after_stop_and_remove(
    make_driver: DriverFactory, tmp_path: Path
) -> None:
    d = make_driver()
    pod = uuid.uuid4().hex[:12]
    volume = tmp_path / "vol"
    volume.mkdir()
    configs = [
        config(["sleep", "60"], name="a", pod_uid=pod),
        config(["sleep", "60"], name="b", pod_uid=pod, memory_limit_bytes=32 << 20),
        config(sh("exit 0"), name="c"),
        config(["sleep", "60"], name="sbx", image=""),
    ]
    for cfg in configs:
        await d.start(cfg)
    await wait_exited(d, configs[2].container_id)
    assert leftovers(d.root, d.cgroup_parent)["cgroups"]  # while running they exist
    for cfg in configs:
        await d.stop(cfg.container_id, grace_period=0.2)
        await d.remove(cfg.container_id)
    assert leftovers(d.root, d.cgroup_parent) == {"runc": [], "mounts": [], "cgroups": []}
    assert list(d.bundles_dir.iterdir()) == []
    assert list(d.pods_dir.iterdir()) == []
    assert rfs.mounts_under(d.root) == []
    # Logs outlive the containers until the pod's logs are removed.
    assert d.log_path(configs[0].container_id, 0).exists()
