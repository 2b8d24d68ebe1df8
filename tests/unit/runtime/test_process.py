"""ProcessDriver against real host processes (no mocks).

Every process a test starts is killed in fixture teardown, by pid *and* /proc start time,
even when the test fails half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.errors import DriverError
from shoal.runtime import ContainerConfig, ContainerStatus, PortRequest, ProcessDriver
from shoal.runtime import _procutil as pu

PY = sys.executable
DriverFactory = Callable[..., ProcessDriver]


def config(
    command: list[str],
    *,
    name: str = "app",
    pod_uid: str | None = None,
    attempt: int = 0,
    **kw: Any,
) -> ContainerConfig:
    return ContainerConfig(
        pod_uid=pod_uid or str(uuid.uuid4()),
        pod_name="web-1",
        namespace="default",
        name=name,
        attempt=attempt,
        command=command,
        **kw,
    )


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def _kill_record(pid: int | None, ticks: int | None, popen: subprocess.Popen[bytes] | None) -> None:
    if pid is not None and pu.is_same_process(pid, ticks):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
            popen.wait(timeout=5)


@pytest.fixture
async def make_driver(tmp_path: Path) -> AsyncIterator[DriverFactory]:
    """Drivers share one state/log dir (like successive agent runs); all are cleaned up."""
    drivers: list[ProcessDriver] = []

    def factory(**kw: Any) -> ProcessDriver:
        d = ProcessDriver(tmp_path / "state", tmp_path / "logs", **kw)
        drivers.append(d)
        return d

    yield factory
    for d in drivers:
        d.close()
        for c in list(d._containers.values()):
            _kill_record(c.pid, c.start_ticks, c.popen)


Spawn = Callable[[list[str]], subprocess.Popen[bytes]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start a process by hand (outside the driver); killed at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=5)


async def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def wait_exited(d: ProcessDriver, cid: str, timeout: float = 5.0) -> ContainerStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = await d.inspect(cid)
        if st.state == "exited":
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"{cid} still {st.state}")
        await asyncio.sleep(0.02)


async def wait_log(d: ProcessDriver, cid: str, text: str, attempt: int = 0) -> str:
    path = d.log_path(cid, attempt)
    await wait_until(lambda: path.exists() and text in path.read_text())
    return path.read_text()


def gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts as gone)."""
    return pu.proc_state(pid) in (None, "Z", "X")


# --- exit codes ------------------------------------------------------------------------------


@pytest.mark.parametrize("use_pidfd", [True, False], ids=["pidfd", "polling"])
async def test_exit_zero_is_completed(make_driver: DriverFactory, use_pidfd: bool) -> None:
    d = make_driver(use_pidfd=use_pidfd, poll_interval=0.05)
    cfg = config(sh("exit 0"))
    st = await d.start(cfg)
    assert st.state == "running" and st.pid is not None and st.started_at is not None
    st = await wait_exited(d, cfg.container_id)
    assert (st.exit_code, st.reason) == (0, "Completed")
    assert st.finished_at is not None and st.finished_at >= st.started_at  # type: ignore[operator]


async def test_nonzero_exit_is_error(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(sh("exit 3"))
    await d.start(cfg)
    st = await wait_exited(d, cfg.container_id)
    assert (st.exit_code, st.reason) == (3, "Error")


async def test_signal_death_is_128_plus_signal(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(sh("kill -USR1 $$; sleep 5"))
    await d.start(cfg)
    st = await wait_exited(d, cfg.container_id)
    assert st.exit_code == 128 + signal.SIGUSR1


# --- environment and ports -------------------------------------------------------------------


async def test_env_has_ports_identity_and_user_env(
    make_driver: DriverFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_TEST_SECRET", "must-not-leak")
    d = make_driver()
    cfg = config(
        [PY, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
        ports=[
            PortRequest(8080, "http"),
            PortRequest(9090, "metrics-port"),
            PortRequest(7000),
        ],
        env={"FOO": "bar", "SHOAL_POD_NAME": "overridden"},
    )
    st = await d.start(cfg)
    assert set(st.host_ports) == {8080, 9090, 7000}
    assert len(set(st.host_ports.values())) == 3
    await wait_exited(d, cfg.container_id)
    env = json.loads(d.log_path(cfg.container_id, 0).read_text())
    assert env["PORT"] == str(st.host_ports[8080])
    assert env["SHOAL_PORT_HTTP"] == str(st.host_ports[8080])
    assert env["SHOAL_PORT_METRICS_PORT"] == str(st.host_ports[9090])
    assert env["FOO"] == "bar"
    assert env["SHOAL_POD_NAME"] == "overridden"  # user env wins
    assert env["HOSTNAME"] == "web-1"
    assert env["SHOAL_POD_NAMESPACE"] == "default"
    assert env["SHOAL_POD_UID"] == cfg.pod_uid
    assert "PATH" in env
    assert "SHOAL_TEST_SECRET" not in env


async def test_http_server_listens_on_reported_port(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(
        sh('exec "$PY" -m http.server "$PORT" --bind 127.0.0.1'),
        ports=[PortRequest(80, "http")],
        env={"PY": PY},
        working_dir=str(Path(__file__).parent),
    )
    st = await d.start(cfg)
    port = st.host_ports[80]
    assert port != 80

    async def get() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data

    deadline = time.monotonic() + 10
    while True:
        try:
            body = await get()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
    assert body.startswith(b"HTTP/1.0 200")
    assert b"test_process.py" in body
    st = await d.stop(cfg.container_id, 5)
    assert st.state == "exited"


async def test_restart_reuses_host_ports_and_others_differ(make_driver: DriverFactory) -> None:
    d = make_driver()
    uid = str(uuid.uuid4())
    first = await d.start(config(sh("exit 0"), pod_uid=uid, ports=[PortRequest(80, "http")]))
    other = await d.start(config(sh("sleep 30"), name="other", ports=[PortRequest(80, "http")]))
    assert other.host_ports[80] != first.host_ports[80]
    await wait_exited(d, first.container_id)
    again = await d.start(
        config(sh("exit 0"), pod_uid=uid, attempt=1, ports=[PortRequest(80, "http")])
    )
    assert again.attempt == 1
    assert again.host_ports == first.host_ports


async def test_restart_gets_new_port_when_old_one_is_taken(make_driver: DriverFactory) -> None:
    import socket

    d = make_driver()
    uid = str(uuid.uuid4())
    first = await d.start(config(sh("exit 0"), pod_uid=uid, ports=[PortRequest(80)]))
    await wait_exited(d, first.container_id)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first.host_ports[80]))
        squatter.listen()
        again = await d.start(config(sh("exit 0"), pod_uid=uid, attempt=1, ports=[PortRequest(80)]))
    assert again.host_ports[80] != first.host_ports[80]


# --- start errors ----------------------------------------------------------------------------


async def test_command_not_found(make_driver: DriverFactory) -> None:
    d = make_driver()
    with pytest.raises(DriverError, match=r'exec: "no-such-cmd-xyz": executable file not found'):
        await d.start(config(["no-such-cmd-xyz"], name="web"))
    assert await d.list() == []


async def test_start_errors_are_clear(make_driver: DriverFactory, tmp_path: Path) -> None:
    d = make_driver()
    with pytest.raises(DriverError, match=r'cannot run image "nginx:1.25" without a `command`'):
        await d.start(config([], image="nginx:1.25", name="web"))
    script = tmp_path / "not-exec.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(DriverError, match="permission denied"):
        await d.start(config([str(script)]))
    with pytest.raises(DriverError, match="working directory"):
        await d.start(config(["true"], working_dir=str(tmp_path / "missing")))
    cfg = config(sh("sleep 30"))
    await d.start(cfg)
    with pytest.raises(DriverError, match="already running"):
        await d.start(cfg)


# --- stop ------------------------------------------------------------------------------------


async def test_stop_sigkills_process_ignoring_sigterm(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(sh("trap '' TERM; echo ready; sleep 100"))
    await d.start(cfg)
    await wait_log(d, cfg.container_id, "ready")
    t0 = time.monotonic()
    st = await d.stop(cfg.container_id, 1.0)
    elapsed = time.monotonic() - t0
    assert st.state == "exited"
    assert st.exit_code == 137
    assert 0.9 <= elapsed < 2.0
    assert st.pid is not None and gone(st.pid)


async def test_stop_sigterm_is_graceful(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(sh("sleep 100"))
    await d.start(cfg)
    t0 = time.monotonic()
    st = await d.stop(cfg.container_id, 10.0)
    assert time.monotonic() - t0 < 2.0
    assert (st.exit_code, st.reason) == (143, "Error")
    # stopping again just reports
    assert await d.stop(cfg.container_id, 10.0) == st


async def test_stop_kills_grandchildren_in_group(
    make_driver: DriverFactory, tmp_path: Path
) -> None:
    d = make_driver()
    pidfile = tmp_path / "grandchild.pid"
    cfg = config(sh(f"sleep 100 & echo $! > {shlex.quote(str(pidfile))}; wait"))
    await d.start(cfg)
    await wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    grandchild = int(pidfile.read_text())
    assert not gone(grandchild)
    await d.stop(cfg.container_id, 2.0)
    await wait_until(lambda: gone(grandchild), timeout=2.0)


async def test_exit_of_main_process_kills_rest_of_group(
    make_driver: DriverFactory, tmp_path: Path
) -> None:
    d = make_driver()
    pidfile = tmp_path / "left-behind.pid"
    cfg = config(sh(f"sleep 100 & echo $! > {shlex.quote(str(pidfile))}; exit 0"))
    await d.start(cfg)
    st = await wait_exited(d, cfg.container_id)
    assert st.exit_code == 0
    grandchild = int(pidfile.read_text())
    await wait_until(lambda: gone(grandchild), timeout=2.0)


@pytest.mark.parametrize("use_pidfd", [True, False], ids=["pidfd", "polling"])
async def test_on_exit_fires(make_driver: DriverFactory, use_pidfd: bool) -> None:
    seen: list[ContainerStatus] = []
    fired = asyncio.Event()

    def hook(st: ContainerStatus) -> None:
        seen.append(st)
        fired.set()

    d = make_driver(on_exit=hook, use_pidfd=use_pidfd, poll_interval=0.05)
    cfg = config(sh("sleep 0.1; exit 7"))
    await d.start(cfg)
    await asyncio.wait_for(fired.wait(), 5)
    assert len(seen) == 1
    assert (seen[0].container_id, seen[0].exit_code, seen[0].reason) == (
        cfg.container_id,
        7,
        "Error",
    )


# --- logs ------------------------------------------------------------------------------------


async def test_logs_captured_per_attempt(make_driver: DriverFactory, tmp_path: Path) -> None:
    d = make_driver()
    uid = str(uuid.uuid4())
    cfg0 = config(sh("echo to-stdout; echo to-stderr >&2; exit 1"), pod_uid=uid)
    await d.start(cfg0)
    await wait_exited(d, cfg0.container_id)
    cfg1 = config(sh("echo second"), pod_uid=uid, attempt=1)
    await d.start(cfg1)
    await wait_exited(d, cfg1.container_id)
    p0 = d.log_path(cfg0.container_id, 0)
    assert p0 == tmp_path / "logs" / uid / "app" / "0.log"
    assert p0.read_text() == "to-stdout\nto-stderr\n"
    assert d.log_path(cfg0.container_id, 1).read_text() == "second\n"
    d.remove_logs(uid)
    assert not (tmp_path / "logs" / uid).exists()


async def test_log_rotation_copytruncates(make_driver: DriverFactory, tmp_path: Path) -> None:
    d = make_driver(log_max_bytes=1000)
    trigger = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "sys.stdout.write('x' * 5000 + '\\n'); sys.stdout.flush()\n"
        f"while not os.path.exists({str(trigger)!r}): time.sleep(0.02)\n"
        "print('after', flush=True)\n"
        "time.sleep(60)\n"
    )
    cfg = config([PY, "-c", code])
    await d.start(cfg)
    log_file = d.log_path(cfg.container_id, 0)
    await wait_until(lambda: log_file.exists() and log_file.stat().st_size > 5000)
    await d.enforce_log_limits()
    rotated = log_file.with_name("0.log.1")
    assert rotated.read_text() == "x" * 5000 + "\n"
    assert log_file.stat().st_size == 0
    trigger.touch()
    await wait_log(d, cfg.container_id, "after")
    assert log_file.read_text() == "after\n"  # O_APPEND: no hole of NULs before it
    await d.enforce_log_limits()  # under the cap now: untouched
    assert log_file.read_text() == "after\n"


# --- recover ---------------------------------------------------------------------------------


async def test_recover_adopts_running_process(make_driver: DriverFactory) -> None:
    d1 = make_driver()
    cfg = config(sh("echo started; exec sleep 100"), ports=[PortRequest(80, "http")])
    st1 = await d1.start(cfg)
    await wait_log(d1, cfg.container_id, "started")
    d1.close()  # the agent goes away; the process must not

    exits: list[ContainerStatus] = []
    d2 = make_driver(on_exit=exits.append)
    recovered = await d2.recover()
    assert len(recovered) == 1
    st2 = recovered[0]
    assert (st2.state, st2.pid, st2.attempt) == ("running", st1.pid, 0)
    assert st2.host_ports == st1.host_ports
    assert st2.started_at == st1.started_at
    assert d2.log_path(cfg.container_id, 0).read_text() == "started\n"  # not restarted
    assert await d2.list() == [st2]

    st3 = await d2.stop(cfg.container_id, 5)
    assert st3.state == "exited"
    assert (st3.exit_code, st3.reason) == (None, "Unknown")  # not our child: status unseen
    assert st1.pid is not None
    await wait_until(lambda: gone(st1.pid))  # type: ignore[arg-type]
    assert [e.container_id for e in exits] == [cfg.container_id]


async def test_adopted_process_exit_fires_on_exit(
    make_driver: DriverFactory, tmp_path: Path
) -> None:
    trigger = tmp_path / "stop-now"
    d1 = make_driver()
    cfg = config(sh(f"while [ ! -e {shlex.quote(str(trigger))} ]; do sleep 0.02; done"))
    await d1.start(cfg)
    d1.close()
    fired = asyncio.Event()
    d2 = make_driver(on_exit=lambda st: fired.set())
    (st,) = await d2.recover()
    assert st.state == "running"
    trigger.touch()
    await asyncio.wait_for(fired.wait(), 5)
    st = await d2.inspect(cfg.container_id)
    assert (st.state, st.exit_code, st.reason) == ("exited", None, "Unknown")


async def test_recover_reports_processes_that_died_meanwhile(make_driver: DriverFactory) -> None:
    d1 = make_driver()
    finished = config(sh("exit 4"), name="finished")
    killed = config(sh("sleep 100"), name="killed")
    await d1.start(finished)
    await wait_exited(d1, finished.container_id)
    st_killed = await d1.start(killed)
    d1.close()
    assert st_killed.pid is not None
    os.killpg(st_killed.pid, signal.SIGKILL)  # dies while no agent watches
    await wait_until(lambda: gone(st_killed.pid))  # type: ignore[arg-type]

    d2 = make_driver()
    by_name = {st.name: st for st in await d2.recover()}
    assert (by_name["finished"].exit_code, by_name["finished"].reason) == (4, "Error")
    assert by_name["killed"].state == "exited"
    assert (by_name["killed"].exit_code, by_name["killed"].reason) == (None, "Unknown")
    assert by_name["killed"].finished_at is not None


async def test_recover_does_not_adopt_reused_pid(
    make_driver: DriverFactory, tmp_path: Path, spawn: Spawn
) -> None:
    stranger = spawn(["sleep", "100"])
    ticks = pu.proc_start_ticks(stranger.pid)
    assert ticks is not None
    uid = str(uuid.uuid4())
    state = {
        "container_id": f"{uid}_app",
        "pod_uid": uid,
        "name": "app",
        "attempt": 2,
        "pid": stranger.pid,
        "pgid": stranger.pid,
        "start_ticks": ticks - 1,  # an older process had this pid
        "started_at": 1.0,
        "host_ports": {},
        "log_path": str(tmp_path / "x.log"),
        "state": "running",
    }
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / f"{uid}_app.json").write_text(json.dumps(state))

    d = make_driver()
    (st,) = await d.recover()
    assert (st.state, st.exit_code, st.reason, st.attempt) == ("exited", None, "Unknown", 2)
    st = await d.stop(f"{uid}_app", 0.1)
    assert st.state == "exited"
    await asyncio.sleep(0.2)
    assert stranger.poll() is None  # never signalled


# --- bookkeeping -----------------------------------------------------------------------------


async def test_remove_deletes_state_but_not_logs(
    make_driver: DriverFactory, tmp_path: Path
) -> None:
    d = make_driver()
    cfg = config(sh("echo bye"))
    await d.start(cfg)
    state_file = tmp_path / "state" / f"{cfg.container_id}.json"
    saved = json.loads(state_file.read_text())
    assert saved["pid"] == saved["pgid"] and saved["start_ticks"] is not None
    await wait_exited(d, cfg.container_id)
    assert json.loads(state_file.read_text())["exit_code"] == 0
    await d.remove(cfg.container_id)
    assert not state_file.exists()
    assert d.log_path(cfg.container_id, 0).read_text() == "bye\n"
    with pytest.raises(DriverError, match="no such container"):
        await d.inspect(cfg.container_id)
    await d.remove(cfg.container_id)  # idempotent


async def test_remove_running_is_refused(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(sh("sleep 30"))
    await d.start(cfg)
    with pytest.raises(DriverError, match="stop it"):
        await d.remove(cfg.container_id)


def test_fingerprint(tmp_path: Path) -> None:
    fp = ProcessDriver(tmp_path / "s", tmp_path / "l").fingerprint()
    assert fp.driver == "process"
    assert fp.cpu_millis == (os.cpu_count() or 1) * 1000
    assert fp.memory_bytes > 0
    assert fp.attributes["driver.process"] == "1"
    assert fp.attributes["os"] == sys.platform
