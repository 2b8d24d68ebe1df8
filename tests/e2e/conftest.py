"""End-to-end harness: real `shoal up` / `shoal agent` processes in temporary data dirs on
free loopback ports, driven only through the CLI and HTTP.

Cleanup ends only processes the tests started, by PID: the shoal processes themselves, and
any container process they leave behind (found through the process driver's state files,
checked against /proc start times so a recycled PID is never signalled).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.runtime import _procutil as pu
from shoal.runtime.runc import _cgroups as cg
from shoal.runtime.runc import _rootfs as rfs
from shoal.testing import free_port
from tests.integration.runtime.conftest import cleanup_everything
from tests.netleftovers import remove_network_leftovers
from tests.rootreq import require_root

SHOAL = [sys.executable, "-m", "shoal.cli"]
REPO = Path(__file__).resolve().parents[2]


def kill_leftover_containers(data_dir: Path) -> None:
    """Kill container processes recorded in a process-driver state dir (ours only)."""
    for state in data_dir.rglob("*.json"):
        try:
            info = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        pid, pgid, started = info.get("pid"), info.get("pgid"), info.get("start_ticks")
        if not isinstance(pid, int) or started is None:
            continue
        if pu.is_same_process(pid, started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid or pid, signal.SIGKILL)


def cleanup_runc(data_dir: Path, node: str, runc_root: Path | None = None) -> None:
    """After a failed runc test: what the node's runc driver left (containers, mounts,
    cgroups, via the runtime tests' helper), mounts elsewhere under the data dir (emptyDir
    tmpfs), and the top /shoal cgroup when no other node uses it. ``runc_root`` is the
    driver's dir: ``DATA/agent/runc`` for `shoal up`, ``DATA/runc`` for `shoal agent`."""
    cleanup_everything(runc_root or data_dir / "agent" / "runc", f"/shoal/{node}")
    for point in rfs.mounts_under(data_dir):
        with contextlib.suppress(Exception):
            rfs.unmount(point)
    for top in cg.CgroupLayout.detect().dirs("/shoal"):
        with contextlib.suppress(OSError):
            top.rmdir()


@dataclass
class ShoalProcess:
    args: list[str]
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Cluster:
    """One `shoal up` (API server + scheduler + controllers + agent) and optional extra agents."""

    tmp: Path
    port: int
    up: ShoalProcess
    runtime: str = "process"
    extra: list[ShoalProcess] = field(default_factory=list)
    consul_port: int = 0
    dns_port: int = 0
    network_prefix: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.up.proc is not None and self.up.proc.poll() is not None:
                raise AssertionError(f"shoal up exited early:\n{self.up.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    nodes = httpx.get(f"{self.url}/api/v1/nodes", timeout=2).json()["items"]
                    if nodes:
                        return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"shoal up not ready in {timeout}s:\n{self.up.output()}")

    def cli(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [*SHOAL, "--server", self.url, *args],
            input=input,
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"shoal {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
            )
        return res

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=10, **kw)

    def get_json(self, path: str) -> Any:
        r = self.api("GET", path)
        assert r.status_code == 200, r.text
        return r.json()

    def pods(self, selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": selector} if selector else None
        items: list[dict[str, Any]] = self.api(
            "GET", "/api/v1/namespaces/default/pods", params=params
        ).json()["items"]
        return items

    def add_agent(self, name: str) -> ShoalProcess:
        data = self.tmp / f"agent-{name}"
        agent = ShoalProcess(
            [*SHOAL, "agent", "--server", self.url, "--node-name", name, "--data-dir", str(data),
             "--heartbeat-interval", "1", "--runtime", self.runtime],
            data,
            self.tmp / f"agent-{name}.log",
        )  # fmt: skip
        agent.start()
        self.extra.append(agent)
        return agent

    def restart(self) -> None:
        self.up.start()
        self.wait_ready()


def wait_for(
    pred: Callable[[], Any], timeout: float = 30, interval: float = 0.2, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def pod_ready(p: dict[str, Any]) -> bool:
    conds = (p.get("status") or {}).get("conditions") or []
    return p.get("status", {}).get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conds
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A one-node cluster on the process driver (the control-plane tests need no root)."""
    yield from _cluster(tmp_path, "process")


@pytest.fixture
def runc_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A one-node cluster on the runc driver (root; CI is root), pods on bridge networks."""
    require_root("runc", "nft", "ip")
    yield from _cluster(tmp_path, "runc")


def _cluster(tmp_path: Path, runtime: str) -> Iterator[Cluster]:
    port, consul_port, dns_port = free_port(), free_port(), free_port()
    data = tmp_path / "up"
    # runc: a unique node name, since the driver's cgroups live under /shoal/<node>.
    node = "node-a" if runtime == "process" else f"node-{secrets.token_hex(3)}"
    # Bridges, pod netns and the nft table get a unique prefix (runc pods are networked).
    prefix = "t" + secrets.token_hex(3)[:5]
    up = ShoalProcess(
        [*SHOAL, "up", "--data-dir", str(data), "--api-port", str(port), "--node-name", node,
         "--node-monitor-grace", "3", "--pod-eviction-timeout", "3", "--heartbeat-interval", "1",
         "--runtime", runtime, "--consul-port", str(consul_port), "--dns-port", str(dns_port),
         "--network-prefix", prefix],
        data,
        tmp_path / "up.log",
    )  # fmt: skip
    c = Cluster(tmp_path, port, up, runtime, consul_port=consul_port, dns_port=dns_port,
                network_prefix=prefix)  # fmt: skip
    up.start()
    try:
        c.wait_ready()
        yield c
    finally:
        for agent in c.extra:
            agent.stop(signal.SIGTERM)
        up.stop(signal.SIGINT)
        for proc in [up, *c.extra]:
            kill_leftover_containers(proc.data_dir)
            if runtime == "runc":
                cleanup_runc(proc.data_dir, node)
        if runtime == "runc":
            remove_network_leftovers(prefix)
