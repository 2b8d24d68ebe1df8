"""Pods run by a real agent: start, report, restart, probe, delete."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from shoal.api import ContainerStatus, Pod, get_condition
from shoal.runtime import ProcessDriver
from tests.integration.agent.conftest import Harness, alive, eventually, py

HTTP_SERVER = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = b'hello from ' + os.environ['SHOAL_POD_NAME'].encode()\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n"
)
SLEEP = py("import time; time.sleep(60)")


def ready(pod: Pod) -> bool:
    cond = get_condition(pod.status.conditions, "Ready")
    return cond is not None and cond.status == "True"


def first(pod: Pod) -> ContainerStatus | None:
    return pod.status.container_statuses[0] if pod.status.container_statuses else None


def restarts(pod: Pod) -> int:
    cs = first(pod)
    return cs.restart_count if cs is not None else 0


async def test_http_server_pod_runs_ready_on_reported_host_port(harness: Harness) -> None:
    await harness.start_agent()
    await harness.create_pod(
        "web",
        [
            {
                "name": "web",
                "image": "python:3",
                "command": py(HTTP_SERVER),
                "ports": [{"containerPort": 8080, "name": "http"}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
            }
        ],
    )
    pod = await harness.wait_pod("web", lambda p: p.status.phase == "Running" and ready(p))
    cs = first(pod)
    assert cs is not None and cs.ready and cs.started and cs.restart_count == 0
    assert cs.state.running is not None and cs.state.running.started_at
    assert cs.container_id == f"process://{pod.metadata.uid}_web"
    assert cs.image == "python:3"
    assert pod.status.pod_ip == pod.status.host_ip == "127.0.0.1"
    assert pod.status.start_time
    types = [c.type for c in pod.status.conditions]
    assert types == ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
    assert len(cs.ports) == 1
    port = cs.ports[0]
    assert (port.container_port, port.name, port.protocol) == (8080, "http", "TCP")
    assert port.host_port
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"http://127.0.0.1:{port.host_port}/")
    assert resp.text == "hello from web"
    started = await harness.wait_event("web", "Started")
    assert started.source.component == "agent" and started.source.host == "node-a"


async def test_env_and_working_dir_reach_the_process(harness: Harness, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    await harness.start_agent()
    await harness.create_pod(
        "envy",
        [
            {
                "name": "main",
                "command": ["sh", "-c"],
                "args": ['echo "$GREETING $WHO" > out.txt; pwd >> out.txt; exec sleep 60'],
                "env": [
                    {"name": "GREETING", "value": "hello"},
                    {"name": "WHO", "value": "first"},
                    {"name": "WHO", "value": "world"},
                ],
                "workingDir": str(workdir),
            }
        ],
    )
    await harness.wait_pod("envy", lambda p: p.status.phase == "Running")
    out = workdir / "out.txt"
    await eventually(lambda: out.exists() and len(out.read_text().splitlines()) == 2)
    assert out.read_text().splitlines() == ["hello world", str(workdir)]


async def test_crashing_container_backs_off(harness: Harness) -> None:
    await harness.start_agent()
    pod = await harness.create_pod("crash", [{"name": "c", "command": ["sh", "-c", "exit 1"]}])
    uid = pod.metadata.uid

    def looping(p: Pod) -> bool:
        cs = first(p)
        return (
            cs is not None
            and cs.restart_count >= 2
            and cs.state.waiting is not None
            and cs.state.waiting.reason == "CrashLoopBackOff"
        )

    pod = await harness.wait_pod("crash", looping)
    cs = first(pod)
    assert cs is not None and cs.state.waiting is not None
    assert cs.state.waiting.message is not None
    assert cs.state.waiting.message.startswith("back-off ")
    assert cs.state.waiting.message.endswith(
        f"restarting failed container=c pod=crash_default({uid})"
    )
    last = cs.last_state.terminated
    assert last is not None
    assert (last.exit_code, last.reason) == (1, "Error")
    assert last.started_at and last.finished_at
    assert pod.status.phase == "Running"  # restartPolicy Always: on its way back
    assert not cs.ready
    backoff = await harness.wait_event("crash", "BackOff")
    assert backoff.type == "Warning"
    count = cs.restart_count
    await harness.wait_pod("crash", lambda p: restarts(p) > count)


async def test_restart_policy_never_fails_pod(harness: Harness) -> None:
    await harness.start_agent()
    await harness.create_pod(
        "once", [{"name": "c", "command": ["sh", "-c", "exit 3"]}], restartPolicy="Never"
    )
    pod = await harness.wait_pod("once", lambda p: p.status.phase == "Failed")
    cs = first(pod)
    assert cs is not None and cs.restart_count == 0
    assert cs.state.terminated is not None
    assert (cs.state.terminated.exit_code, cs.state.terminated.reason) == (3, "Error")
    cond = get_condition(pod.status.conditions, "Ready")
    assert cond is not None and (cond.status, cond.reason) == ("False", "PodCompleted")


async def test_on_failure_with_exit_zero_succeeds(harness: Harness) -> None:
    await harness.start_agent()
    await harness.create_pod(
        "job",
        [
            {"name": "a", "command": ["sh", "-c", "exit 0"]},
            {"name": "b", "command": ["sh", "-c", "sleep 0.3"]},
        ],
        restartPolicy="OnFailure",
    )
    pod = await harness.wait_pod("job", lambda p: p.status.phase == "Succeeded")
    for cs in pod.status.container_statuses:
        assert cs.restart_count == 0
        assert cs.state.terminated is not None
        assert (cs.state.terminated.exit_code, cs.state.terminated.reason) == (0, "Completed")


async def test_on_failure_restarts_failures(harness: Harness) -> None:
    await harness.start_agent()
    await harness.create_pod(
        "flaky", [{"name": "c", "command": ["sh", "-c", "exit 2"]}], restartPolicy="OnFailure"
    )
    pod = await harness.wait_pod("flaky", lambda p: restarts(p) >= 1)
    assert pod.status.phase == "Running"


async def test_missing_executable_is_run_container_error(harness: Harness) -> None:
    await harness.start_agent()
    await harness.create_pod("typo", [{"name": "c", "command": ["no-such-program-shoal"]}])

    def failing(p: Pod) -> bool:
        cs = first(p)
        return (
            cs is not None
            and cs.state.waiting is not None
            and cs.state.waiting.reason == "RunContainerError"
        )

    pod = await harness.wait_pod("typo", failing)
    cs = first(pod)
    assert cs is not None and cs.state.waiting is not None
    assert "no-such-program-shoal" in (cs.state.waiting.message or "")
    assert pod.status.phase == "Pending"
    assert cs.restart_count == 0
    failed = await harness.wait_event("typo", "Failed")
    assert failed.type == "Warning" and "no-such-program-shoal" in failed.message


async def test_readiness_probe_drives_ready(harness: Harness, tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    await harness.start_agent()
    await harness.create_pod(
        "gate",
        [
            {
                "name": "c",
                "command": SLEEP,
                "readinessProbe": {
                    "exec": {"command": ["test", "-f", str(flag)]},
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
            }
        ],
    )
    pod = await harness.wait_pod("gate", lambda p: p.status.phase == "Running")
    await asyncio.sleep(1.2)
    pod = await harness.client.pods.get("gate", "default")
    assert not ready(pod)
    cs = first(pod)
    assert cs is not None and not cs.ready and cs.started
    flag.touch()
    await harness.wait_pod("gate", ready, timeout=5)
    flag.unlink()
    await harness.wait_pod("gate", lambda p: not ready(p), timeout=5)
    unhealthy = await harness.wait_event("gate", "Unhealthy")
    assert unhealthy.type == "Warning" and unhealthy.message.startswith("Readiness probe failed")


async def test_liveness_failure_restarts_container(harness: Harness) -> None:
    await harness.start_agent()
    await harness.create_pod(
        "sick",
        [
            {
                "name": "c",
                "command": SLEEP,
                "livenessProbe": {
                    "exec": {"command": ["sh", "-c", "exit 1"]},
                    "periodSeconds": 1,
                    "failureThreshold": 2,
                },
            }
        ],
        terminationGracePeriodSeconds=2,
    )
    pod = await harness.wait_pod("sick", lambda p: restarts(p) >= 1, timeout=10)
    cs = first(pod)
    assert cs is not None and cs.last_state.terminated is not None
    assert cs.last_state.terminated.exit_code == 143  # SIGTERM
    unhealthy = await harness.wait_event("sick", "Unhealthy")
    assert unhealthy.message.startswith("Liveness probe failed")
    killing = await harness.wait_event("sick", "Killing")
    assert "failed liveness probe" in killing.message


async def test_graceful_deletion_kills_after_grace_and_removes_pod(harness: Harness) -> None:
    agent = await harness.start_agent()
    stubborn = py(
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    pod = await harness.create_pod(
        "stubborn", [{"name": "c", "command": stubborn}], terminationGracePeriodSeconds=1
    )
    await harness.wait_pod("stubborn", lambda p: p.status.phase == "Running")
    (st,) = [s for s in await agent.driver.list() if s.pod_uid == pod.metadata.uid]
    assert st.pid is not None
    ticks = _ticks(st.pid)
    began = time.monotonic()
    await harness.client.pods.delete("stubborn", "default")
    gone = False
    while time.monotonic() - began < 8:
        names = [p.metadata.name for p in await harness.client.pods.list("default")]
        if "stubborn" not in names:
            gone = True
            break
        await asyncio.sleep(0.1)
    took = time.monotonic() - began
    assert gone, "pod object was not removed"
    assert took >= 0.9, "SIGTERM-ignoring process must get its grace period"
    assert not alive(st.pid, ticks)
    killing = await harness.wait_event("stubborn", "Killing")
    assert killing.message == "Stopping container c"
    assert isinstance(agent.driver, ProcessDriver)
    driver = agent.driver
    await eventually(
        lambda: not any(c.pod_uid == pod.metadata.uid for c in driver._containers.values())
    )
    assert not (harness.data_dir / "logs" / str(pod.metadata.uid)).exists()


async def test_force_deleted_pod_is_stopped_and_cleaned(harness: Harness) -> None:
    agent = await harness.start_agent()
    pod = await harness.create_pod("doomed", [{"name": "c", "command": SLEEP}])
    await harness.wait_pod("doomed", lambda p: p.status.phase == "Running")
    (st,) = [s for s in await agent.driver.list() if s.pod_uid == pod.metadata.uid]
    assert st.pid is not None
    ticks = _ticks(st.pid)
    await harness.client.pods.delete("doomed", "default", grace_period_seconds=0)
    await eventually(lambda: not alive(st.pid, ticks), timeout=5)  # type: ignore[arg-type]
    await eventually(lambda: pod.metadata.uid not in agent.workers, timeout=5)
    assert not (harness.data_dir / "logs" / str(pod.metadata.uid)).exists()
    assert not any(s.pod_uid == pod.metadata.uid for s in await agent.driver.list())


async def test_status_is_written_only_when_it_changes(harness: Harness) -> None:
    agent = await harness.start_agent()
    await harness.create_pod("calm", [{"name": "c", "command": SLEEP}])
    await harness.wait_pod("calm", ready)
    await asyncio.sleep(0.3)
    writes = agent.reporter.writes
    assert writes <= 3
    await asyncio.sleep(1.5)
    assert agent.reporter.writes == writes


def _ticks(pid: int) -> int:
    from shoal.runtime import _procutil as pu

    ticks = pu.proc_start_ticks(pid)
    assert ticks is not None
    return ticks
