"""End to end on the runc driver: `shoal up --runtime runc` runs the quickstart isolated in the
host sandbox, runs an image loaded into its store, reports OOM kills, and leaves nothing behind
(no runc containers, mounts or cgroups) when it exits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.runtime.runc import _cgroups as cg
from shoal.runtime.runc import _rootfs as rfs
from tests.e2e.conftest import REPO, Cluster, pod_ready, wait_for
from tests.integration.runtime.conftest import leftovers
from tests.netleftovers import network_leftovers
from tests.oci_support import build_busybox_image

pytestmark = pytest.mark.e2e

BUSYBOX_POD = """
apiVersion: v1
kind: Pod
metadata: {name: bb}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: shoal.test/busybox:1
      imagePullPolicy: Never
      command: ["sh", "-c", "echo started; exec sleep 3600"]
"""

OOM_POD = """
apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  restartPolicy: Never
  containers:
    - name: hog
      command: ["python3", "-c", "a = b'x' * (256 * 2**20)"]
      resources:
        limits: {memory: 32Mi}
"""


def _pod(c: Cluster, name: str) -> dict[str, Any]:
    r = c.api("GET", f"/api/v1/namespaces/default/pods/{name}")
    return r.json() if r.status_code == 200 else {}


def _leftovers(c: Cluster, node: str) -> dict[str, Any]:
    """Everything the runc driver of this cluster could have left on the host: its runc
    containers and cgroups, any mount under the data dir, and an empty top /shoal cgroup."""
    found = leftovers(c.up.data_dir / "agent" / "runc", f"/shoal/{node}")
    found["mounts"] = rfs.mounts_under(c.up.data_dir)
    found["empty /shoal"] = [
        top
        for top in cg.CgroupLayout.detect().dirs("/shoal")
        if top.is_dir() and not any(d.is_dir() for d in top.iterdir())
    ]
    return found


def test_runc_cluster_isolates_runs_images_and_cleans_up(
    runc_cluster: Cluster, tmp_path: Path
) -> None:
    c = runc_cluster
    node = c.get_json("/api/v1/nodes")["items"][0]
    node_name = node["metadata"]["name"]
    assert node["metadata"]["labels"]["shoal.dev/runtime"] == "runc"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("runc://")

    # The quickstart, unchanged: host programs in the sandbox, the app from a hostPath volume.
    c.cli("apply", "-f", str(REPO / "examples" / "quickstart.yaml"))
    pods = wait_for(
        lambda: (
            [p for p in c.pods("app=hello") if pod_ready(p)] if len(c.pods("app=hello")) else []
        ),
        timeout=60,
        what="quickstart pods Ready",
    )
    pod = pods[0]
    name = pod["metadata"]["name"]
    assert c.cli("exec", name, "--", "hostname").stdout.strip() == name
    ps = c.cli("exec", name, "--", "python3", "-c", "import os; print(os.getpid())")
    assert ps.stdout.strip() != ""
    # The sandbox's /usr is the host's, read-only.
    ro = c.cli("exec", name, "--", "touch", "/usr/shoal-test", check=False)
    assert ro.returncode != 0
    # The pod has its own network namespace and address; the app answers there (the node
    # reaches its pods through the network's bridge).
    ip = pod["status"]["podIP"]
    assert ip.startswith("10.244.") and pod["status"]["podIPs"] == [{"ip": ip}]
    assert httpx.get(f"http://{ip}:8080/", timeout=5).text.strip() == f"hello from {name}"

    # An image loaded into the node's store, run with imagePullPolicy Never.
    layout = build_busybox_image(tmp_path / "img", tag="1")
    c.cli("image", "load", "--data-dir", str(c.up.data_dir), str(layout), "--tag",
          "shoal.test/busybox:1")  # fmt: skip
    c.cli("apply", "-f", "-", input=BUSYBOX_POD)
    wait_for(lambda: _pod(c, "bb").get("status", {}).get("phase") == "Running", timeout=30,
             what="busybox pod Running")  # fmt: skip
    ps_out = c.cli("exec", "bb", "--", "busybox", "ps", "-o", "pid,comm").stdout.split("\n")[1:]
    pids = [line.split()[0] for line in ps_out if line.strip()]
    assert pids[0] == "1" and len(pids) <= 3, ps_out  # sleep, ps: its own PID namespace
    assert "started" in c.cli("logs", "bb").stdout

    # Past its memory limit, a container ends OOMKilled, visible in get/describe.
    c.cli("apply", "-f", "-", input=OOM_POD)

    def oom_killed() -> bool:
        statuses = _pod(c, "hog").get("status", {}).get("containerStatuses") or [{}]
        term = statuses[0].get("state", {}).get("terminated") or {}
        return term.get("reason") == "OOMKilled" and term.get("exitCode") == 137

    wait_for(oom_killed, timeout=30, what="hog OOMKilled")
    assert "OOMKilled" in c.cli("get", "pod", "hog").stdout
    assert "OOMKilled" in c.cli("describe", "pod", "hog").stdout

    # Deleting pods and stopping shoal leaves nothing on the host.
    c.cli("delete", "pod", "bb")
    wait_for(lambda: not _pod(c, "bb"), timeout=20, what="bb deleted")
    c.up.stop()
    assert all(not v for v in _leftovers(c, node_name).values()), _leftovers(c, node_name)
    left = network_leftovers(c.network_prefix)
    assert all(not v for v in left.values()), left
