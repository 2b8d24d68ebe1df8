"""ProcessDriver exec, stats, runAsUser and the workingDir-under-a-volume mapping, against
real host processes (fixtures and helpers shared with test_process)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from shoal.errors import DriverError
from shoal.runtime import Mount, SecurityConfig
from shoal.runtime.process import host_working_dir
from tests.rootreq import require_root
from tests.unit.runtime import test_process as base
from tests.unit.runtime.test_process import (
    PY,
    DriverFactory,
    config,
    gone,
    sh,
    wait_exited,
    wait_log,
    wait_until,
)

make_driver = base.make_driver
"""The shared fixture: drivers on one state dir, every process killed at teardown."""

# --- exec ------------------------------------------------------------------------------------


async def test_exec_uses_the_containers_env_and_cwd_with_pipes(
    make_driver: DriverFactory, tmp_path: Path
) -> None:
    d = make_driver()
    work = tmp_path / "work"
    work.mkdir()
    cfg = config(sh("exec sleep 30"), env={"GREETING": "hi"}, working_dir=str(work))
    await d.start(cfg)
    proc = await d.exec(
        cfg.container_id,
        ["sh", "-c", 'echo "$GREETING $SHOAL_POD_NAME"; pwd; cat; echo oops >&2; exit 3'],
    )
    out, err = await asyncio.wait_for(proc.communicate(b"from stdin\n"), 5)
    assert out.decode().splitlines() == ["hi web-1", str(work), "from stdin"]
    assert err == b"oops\n"
    assert proc.returncode == 3


async def test_exec_errors(make_driver: DriverFactory) -> None:
    d = make_driver()
    done = config(sh("exit 0"), name="done")
    await d.start(done)
    await wait_exited(d, done.container_id)
    with pytest.raises(DriverError, match="is not running"):
        await d.exec(done.container_id, ["true"])
    with pytest.raises(DriverError, match="no such container"):
        await d.exec("nope_x", ["true"])
    running = config(sh("exec sleep 30"), name="running")
    await d.start(running)
    with pytest.raises(DriverError, match='"no-such-tool": executable file not found'):
        await d.exec(running.container_id, ["no-such-tool"])
    with pytest.raises(DriverError, match="no command"):
        await d.exec(running.container_id, [])


async def test_exec_dies_with_its_container(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(sh("exec sleep 30"))
    await d.start(cfg)
    proc = await d.exec(cfg.container_id, ["sleep", "60"])
    assert proc.returncode is None
    try:
        await d.stop(cfg.container_id, 2)
        await asyncio.wait_for(proc.wait(), 5)
        assert proc.returncode == -9
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_exec_into_adopted_container_keeps_its_env(make_driver: DriverFactory) -> None:
    d1 = make_driver()
    cfg = config(sh("exec sleep 30"), env={"FROM_SPEC": "kept"})
    await d1.start(cfg)
    d1.close()
    d2 = make_driver()
    await d2.recover()
    proc = await d2.exec(cfg.container_id, ["sh", "-c", 'echo "$FROM_SPEC"'])
    out, _ = await asyncio.wait_for(proc.communicate(), 5)
    assert out == b"kept\n"


# --- stats -----------------------------------------------------------------------------------

BUSY = (
    "import time\n"
    "block = bytearray(48 * 2**20)\n"
    "for i in range(0, len(block), 4096): block[i] = 1\n"  # touch every page: resident
    "end = time.process_time() + 0.4\n"
    "while time.process_time() < end: pass\n"
    "print('busy done', flush=True)\n"
    "time.sleep(30)\n"
)


async def test_stats_sum_cpu_and_memory_of_the_group(make_driver: DriverFactory) -> None:
    d = make_driver()
    # The shell stays as the group leader; the Python child does the work.
    cfg = config(sh(f'{PY} -c "$BUSY"; sleep 30'), env={"BUSY": BUSY}, memory_limit_bytes=2**30)
    await d.start(cfg)
    await wait_log(d, cfg.container_id, "busy done")
    st = await d.stats(cfg.container_id)
    assert st.container_id == cfg.container_id
    assert st.cpu_usage_nanos >= 300_000_000, st
    assert st.memory_bytes >= 48 * 2**20, st
    assert st.memory_limit_bytes == 2**30
    assert st.pids == 2  # sh + python
    assert abs(st.timestamp - __import__("time").time()) < 5
    again = await d.stats(cfg.container_id)
    assert again.cpu_usage_nanos >= st.cpu_usage_nanos


async def test_stats_of_a_stopped_container_is_an_error(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(sh("exit 0"))
    await d.start(cfg)
    await wait_exited(d, cfg.container_id)
    with pytest.raises(DriverError, match="is not running"):
        await d.stats(cfg.container_id)


# --- workingDir under a volume mount ---------------------------------------------------------


def test_host_working_dir_mapping() -> None:
    mounts = [
        Mount(source=Path("/srv/apps"), destination="/app"),
        Mount(source=Path("/data/web"), destination="/app/web/"),
        Mount(source=Path("/tmp/x"), destination="/x"),
    ]
    assert host_working_dir("/app", mounts) == "/srv/apps"
    assert host_working_dir("/app/api/v1", mounts) == "/srv/apps/api/v1"
    assert host_working_dir("/app/web", mounts) == "/data/web", "the deepest mountPath wins"
    assert host_working_dir("/app/web/static", mounts) == "/data/web/static"
    assert host_working_dir("/application", mounts) == "/application", "not under /app"
    assert host_working_dir("/srv", mounts) == "/srv"
    assert host_working_dir("", mounts) == ""


async def test_working_dir_under_a_mount_runs_in_its_source(
    make_driver: DriverFactory, tmp_path: Path
) -> None:
    apps = tmp_path / "apps"
    (apps / "web").mkdir(parents=True)
    d = make_driver()
    mounts = [Mount(source=apps, destination="/app")]
    cfg = config(sh("pwd"), working_dir="/app/web", mounts=mounts)
    await d.start(cfg)
    await wait_exited(d, cfg.container_id)
    assert d.log_path(cfg.container_id, 0).read_text() == f"{apps / 'web'}\n"

    missing = config(sh("pwd"), name="missing", working_dir="/app/nope", mounts=mounts)
    with pytest.raises(DriverError, match=r"working directory '/app/nope' \(.*/apps/nope\) does"):
        await d.start(missing)


# --- runAsUser -------------------------------------------------------------------------------


async def test_run_as_user_and_group(make_driver: DriverFactory, tmp_path: Path) -> None:
    require_root()
    d = make_driver()
    cfg = config(
        sh('echo "$(id -u):$(id -g):$(id -G)"; exec sleep 30'),
        working_dir="/",
        security=SecurityConfig(run_as_user=65534, run_as_group=65533),
    )
    st = await d.start(cfg)
    text = await wait_log(d, cfg.container_id, ":")
    assert text == "65534:65533:65533\n", "no supplementary groups of the agent leak in"
    proc = await d.exec(cfg.container_id, ["id", "-u"])
    out, _ = await asyncio.wait_for(proc.communicate(), 5)
    assert out == b"65534\n"
    await d.stop(cfg.container_id, 2)
    assert st.pid is not None
    await wait_until(lambda: gone(st.pid))  # type: ignore[arg-type]


def test_run_as_another_user_without_root_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("as root the driver can switch users (covered above)")
    from shoal.runtime.process import _identity

    with pytest.raises(DriverError, match="cannot run as user 12345: the agent is not root"):
        _identity(SecurityConfig(run_as_user=12345), "container 'app'")
    assert _identity(SecurityConfig(run_as_user=os.geteuid()), "x") == (None, None)
