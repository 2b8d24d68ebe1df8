"""RuncDriver running real containers: isolation, limits, exit codes, stop, logs, exec, stats."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from shoal.errors import DriverError
from shoal.runtime import ContainerStatus, Mount, PortRequest
from tests.integration.runtime.conftest import (
    DriverFactory,
    config,
    host_cgroup_file,
    run_to_exit,
    sh,
)
from tests.rootreq import require_root


async def test_pid_namespace_hostname_and_env(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(
        sh("ps -o pid,comm; echo pid=$$; echo host=$(hostname); env | sort"),
        pod_name="web-7",
        ports=[PortRequest(8080, "http"), PortRequest(9090, "metrics-port")],
        env={"IMG": "spec-wins"},
    )
    status, text = await run_to_exit(d, cfg)
    assert (status.exit_code, status.reason) == (0, "Completed")
    # Only the shell (pid 1) and ps itself: nothing of the host is visible.
    assert text.splitlines()[0].split() == ["PID", "COMMAND"]
    procs = [line.split() for line in text.splitlines() if re.match(r"^\s*\d+\s", line)]
    assert [p[1] for p in procs] == ["sh", "ps"]
    assert procs[0][0] == "1"
    assert "pid=1" in text
    assert "host=web-7" in text
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and " " not in line)
    assert env["IMG"] == "spec-wins"  # the spec's env beats the image's
    assert env["PATH"] == "/bin"  # the image's PATH is kept
    assert env["SHOAL_POD_NAME"] == "web-7"
    assert env["HOSTNAME"] == "web-7"
    assert env["PORT"] == str(status.host_ports[8080])
    assert env["SHOAL_PORT_HTTP"] == str(status.host_ports[8080])
    assert env["SHOAL_PORT_METRICS_PORT"] == str(status.host_ports[9090])
    assert status.host_ports[8080] != status.host_ports[9090]


async def test_exit_codes_and_on_exit_hook(make_driver: DriverFactory) -> None:
    seen: list[ContainerStatus] = []
    d = make_driver(on_exit=seen.append)
    ok, _ = await run_to_exit(d, config(sh("exit 0")))
    bad, _ = await run_to_exit(d, config(sh("exit 3")))
    assert (ok.exit_code, ok.reason) == (0, "Completed")
    assert (bad.exit_code, bad.reason) == (3, "Error")
    assert [(s.exit_code, s.reason) for s in seen] == [(0, "Completed"), (3, "Error")]


async def test_memory_limit_ends_in_oomkilled(make_driver: DriverFactory) -> None:
    d = make_driver()
    # busybox tail keeps everything it read when there is no newline: it grows until killed.
    cfg = config(sh("exec tail /dev/zero"), memory_limit_bytes=16 * 1024 * 1024)
    status, _ = await run_to_exit(d, cfg, timeout=20)
    assert (status.exit_code, status.reason) == (137, "OOMKilled")


async def test_cgroup_limits_in_files(make_driver: DriverFactory) -> None:
    d = make_driver(default_pids_limit=321)
    limited = config(
        ["sleep", "30"],
        cpu_limit_millis=250,
        cpu_request_millis=500,
        memory_limit_bytes=64 * 1024 * 1024,
        pids_limit=42,
    )
    plain = config(["sleep", "30"], name="plain", pod_uid=limited.pod_uid)
    await d.start(limited)
    await d.start(plain)
    path = d._containers[limited.container_id].cgroup_path
    assert path == f"{d.cgroup_parent}/{limited.pod_uid}/app"
    assert host_cgroup_file(path, "cpu", "cpu.cfs_quota_us") == "25000"
    assert host_cgroup_file(path, "cpu", "cpu.cfs_period_us") == "100000"
    assert host_cgroup_file(path, "cpu", "cpu.shares") == "512"
    assert host_cgroup_file(path, "memory", "memory.limit_in_bytes") == str(64 * 1024 * 1024)
    assert host_cgroup_file(path, "pids", "pids.max") == "42"
    plain_path = d._containers[plain.container_id].cgroup_path
    assert host_cgroup_file(plain_path, "cpu", "cpu.shares") == "2"
    assert host_cgroup_file(plain_path, "cpu", "cpu.cfs_quota_us") == "-1"
    assert host_cgroup_file(plain_path, "pids", "pids.max") == "321"


async def test_pids_limit_is_enforced(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(sh("for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; echo forked"), pids_limit=4)
    status, text = await run_to_exit(d, cfg)
    assert "can't fork" in text
    assert "forked" not in text
    assert status.reason == "Error"


async def test_stop_escalates_when_pid1_ignores_sigterm(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(["sleep", "60"])  # PID 1 without a handler: the kernel drops SIGTERM
    await d.start(cfg)
    began = time.monotonic()
    status = await d.stop(cfg.container_id, grace_period=0.5)
    took = time.monotonic() - began
    assert status.state == "exited"
    assert status.exit_code == 137
    assert 0.5 <= took < 1.5


async def test_stop_honours_sigterm_handler(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(sh("trap 'echo bye; exit 7' TERM; echo up; while true; do sleep 0.05; done"))
    await d.start(cfg)
    log = d.log_path(cfg.container_id, 0)
    for _ in range(200):
        if "up" in log.read_text():
            break
        await asyncio.sleep(0.01)
    status = await d.stop(cfg.container_id, grace_period=5)
    assert (status.exit_code, status.reason) == (7, "Error")
    assert "bye" in log.read_text()


async def test_logs_and_copytruncate(make_driver: DriverFactory) -> None:
    d = make_driver(log_max_bytes=1000)
    cfg = config(sh("i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done; sleep 30"))
    await d.start(cfg)
    log = d.log_path(cfg.container_id, 0)
    assert log.parent.parent.name == cfg.pod_uid
    for _ in range(200):
        if "line-199" in log.read_text():
            break
        await asyncio.sleep(0.01)
    assert log.stat().st_size > 1000
    await d.enforce_log_limits()
    assert log.stat().st_size == 0
    rotated = log.with_name(log.name + ".1").read_text()
    assert rotated.splitlines()[0] == "line-0" and "line-199" in rotated
    d.remove_logs(cfg.pod_uid)
    assert not log.parent.exists()


async def test_exec_and_stats(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(
        sh(
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; head -c 3000000 /dev/zero > /tmp/f; sleep 30"
        ),
        env={"GREETING": "hello"},
        working_dir="/tmp",
    )
    await d.start(cfg)
    proc = await d.exec(cfg.container_id, ["sh", "-c", 'echo "$GREETING from $(pwd)"; cat; exit 4'])
    out, err = await asyncio.wait_for(proc.communicate(b"fed-in\n"), 10)
    assert proc.returncode == 4, err
    assert out.decode() == "hello from /tmp\nfed-in\n"
    for _ in range(200):
        stats = await d.stats(cfg.container_id)
        if stats.cpu_usage_nanos > 10_000_000 and stats.memory_bytes > 0:
            break
        await asyncio.sleep(0.02)
    assert stats.cpu_usage_nanos > 10_000_000
    assert stats.memory_bytes > 0
    assert stats.pids >= 1
    assert stats.memory_limit_bytes is None
    await d.stop(cfg.container_id, 0)
    with pytest.raises(DriverError, match="not running"):
        await d.stats(cfg.container_id)
    with pytest.raises(DriverError, match="not running"):
        await d.exec(cfg.container_id, ["true"])


async def test_start_errors_are_clear(make_driver: DriverFactory) -> None:
    d = make_driver()
    with pytest.raises(DriverError, match="nothing to run"):
        await d.start(config([], image="test/busybox-empty:1"))
    with pytest.raises(DriverError, match="not found"):
        await d.start(config(["true"], image="no/such:image"))
    with pytest.raises(DriverError, match="no-such-binary"):
        await d.start(config(["no-such-binary"]))
    with pytest.raises(DriverError, match=r"mounts\[0\].source"):
        await d.start(config(["true"], mounts=[Mount(Path("/nonexistent-x"), "/data")]))
    assert await d.list() == []


async def test_restart_reuses_host_port_and_gets_fresh_upper(make_driver: DriverFactory) -> None:
    d = make_driver()
    cfg = config(sh("ls /; echo x > /written; exit 1"), ports=[PortRequest(80)])
    first, text = await run_to_exit(d, cfg)
    assert "written" not in text
    again = config(sh("ls /"), pod_uid=cfg.pod_uid, attempt=1, ports=[PortRequest(80)])
    second, text = await run_to_exit(d, again)
    assert second.attempt == 1
    assert second.host_ports == first.host_ports
    assert "written" not in text  # a new container: the last attempt's writes are gone
    assert d.log_path(cfg.container_id, 0).exists()


def _netns(action: str, name: str) -> None:
    subprocess.run(["ip", "netns", action, name], check=action == "add", capture_output=True)


async def test_pod_network_namespace(make_driver: DriverFactory) -> None:
    require_root("ip")
    d = make_driver()
    ns = f"shoal-test-{uuid.uuid4().hex[:8]}"
    _netns("add", ns)
    try:
        cfg = config(
            sh("ls /sys/class/net; echo PORT=$PORT"),
            network_namespace=f"/var/run/netns/{ns}",
            ports=[PortRequest(8080)],
        )
        status, text = await run_to_exit(d, cfg)
        assert status.host_ports == {8080: 8080}  # its own network: no host port to map
        assert text.splitlines() == ["lo", "PORT=8080"]
    finally:
        _netns("delete", ns)
