"""The distributed mode: `shoal server` (control plane) and `shoal agent` as separate
processes, the same components `shoal up` runs in one."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shoal.testing import free_port
from tests.e2e.conftest import SHOAL, ShoalProcess, kill_leftover_containers, pod_ready, wait_for
from tests.e2e.manifests import deployment

pytestmark = pytest.mark.e2e


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    server = ShoalProcess([*SHOAL, "server", "--data-dir", str(tmp_path / "server"), "--port", str(port),
                           "--consul-port", str(free_port()), "--dns-port", str(free_port())],
                          tmp_path / "server", tmp_path / "server.log")  # fmt: skip
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", tmp_path
    finally:
        assert server.stop(signal.SIGINT) == 0, server.output()


def test_server_and_agent_run_a_deployment(control_plane: tuple[str, Path]) -> None:
    url, tmp = control_plane
    wait_for(lambda: _ready(url), timeout=20, what="shoal server ready")
    agent = ShoalProcess([*SHOAL, "agent", "--server", url, "--node-name", "worker-1",
                          "--data-dir", str(tmp / "agent"), "--heartbeat-interval", "1", "--runtime", "process"],
                         tmp / "agent", tmp / "agent.log")  # fmt: skip
    agent.start()
    try:
        wait_for(
            lambda: httpx.get(f"{url}/api/v1/nodes/worker-1").status_code == 200,
            what="node registered",
        )
        body = deployment("dist", 2)
        res = subprocess.run([*SHOAL, "--server", url, "apply", "-f", "-"], input=body,
                                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert res.returncode == 0, res.stderr

        def ready() -> list[dict[str, object]]:
            items = httpx.get(
                f"{url}/api/v1/namespaces/default/pods", params={"labelSelector": "app=dist"}
            ).json()["items"]
            return [p for p in items if pod_ready(p)]

        pods = wait_for(
            lambda: len(r := ready()) == 2 and r, timeout=30, what="2 ready pods on the agent"
        )
        assert {p["spec"]["nodeName"] for p in pods} == {"worker-1"}  # type: ignore[index]
        # Logs travel API server -> agent.
        name = pods[0]["metadata"]["name"]  # type: ignore[index]
        logs = httpx.get(f"{url}/api/v1/namespaces/default/pods/{name}/log", timeout=10)
        assert logs.status_code == 200 and "listening on" in logs.text
    finally:
        agent.stop(signal.SIGTERM)
        kill_leftover_containers(agent.data_dir)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
