"""The pure parts of exec, top, image and manifest loading: kubectl's and docker's formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal._util.remotecommand import exit_code_of, exit_status, negotiate
from shoal.api import Node, Pod
from shoal.cli._exec import default_container, format_cores, format_mib, node_row, pod_usages
from shoal.cli._image import human_size, image_rows, short_id, split_tag
from shoal.cli._manifest import load_documents, parse_text, resolve_host_paths
from shoal.errors import APIStatusError
from shoal.runtime.images import ImageConfig, ImageRecord


def _pod(names: list[str], annotations: dict[str, str] | None = None) -> Pod:
    return Pod.model_validate(
        {"metadata": {"name": "p", "annotations": annotations or {}},
         "spec": {"containers": [{"name": n} for n in names]}}
    )  # fmt: skip


def test_default_container_like_kubectl() -> None:
    assert default_container(_pod(["a"])) == ("a", None)
    assert default_container(_pod(["a", "b"])) == ("a", 'Defaulted container "a" out of: a, b')
    annotated = _pod(["a", "b"], {"kubectl.kubernetes.io/default-container": "b"})
    assert default_container(annotated) == ("b", None)


def test_exit_status_round_trip() -> None:
    assert exit_status(0) == {"metadata": {}, "status": "Success"}
    assert exit_code_of(exit_status(0)) == 0
    failed = exit_status(42, ["sh", "-c", "exit 42"])
    assert failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "42"}]
    assert exit_code_of(failed) == 42
    with pytest.raises(APIStatusError, match="could not start"):
        exit_code_of({"status": "Failure", "reason": "InternalError", "message": "could not start"})


def test_negotiate_prefers_the_clients_order() -> None:
    assert negotiate(["v5.channel.k8s.io", "v4.channel.k8s.io"]) == "v5.channel.k8s.io"
    assert negotiate(["channel.k8s.io", "v4.channel.k8s.io"]) == "v4.channel.k8s.io"
    assert negotiate(["base64.channel.k8s.io"]) is None


def test_top_formats_round_like_kubectl() -> None:
    assert format_cores(12_000_001) == "13m"
    assert format_cores(0) == "0m"
    assert format_mib(34 * 1024 * 1024 + 5) == "34Mi"
    summary = {
        "pods": [
            {"podRef": {"name": "b", "namespace": "default"},
             "cpu": {"usageNanoCores": 5e6}, "memory": {"workingSetBytes": 2**21}},
            {"podRef": {"name": "a", "namespace": "default"}, "containers": [
                {"cpu": {"usageNanoCores": 1e6}, "memory": {"workingSetBytes": 2**20}},
                {"cpu": {"usageNanoCores": 2e6}, "memory": {"workingSetBytes": 2**20}}]},
            {"podRef": {"name": "fresh", "namespace": "default"}, "cpu": {}, "memory": {}},
            {"podRef": {"name": "sys", "namespace": "kube-system"},
             "cpu": {"usageNanoCores": 1}, "memory": {"workingSetBytes": 1}},
        ]
    }  # fmt: skip
    usages = pod_usages([summary], "default")
    assert [(u.name, u.nano_cores, u.working_set) for u in usages] == [
        ("a", 3e6, 2**21),
        ("b", 5e6, 2**21),
    ]
    assert len(pod_usages([summary], None)) == 3


def test_top_node_row_against_allocatable() -> None:
    node = Node.model_validate(
        {"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "2", "memory": "1Gi"}}}
    )
    summary = {"node": {"cpu": {"usageNanoCores": 500e6}, "memory": {"workingSetBytes": 2**28}}}
    assert node_row(node, summary) == ["n1", "500m", "25%", "256Mi", "25%"]
    assert node_row(node, None) == ["n1", *["<unknown>"] * 4]


def test_image_listing_like_docker() -> None:
    assert short_id("sha256:" + "0123456789abcdef" * 4) == "0123456789ab"
    assert [human_size(n) for n in (12, 4_261_000, 1_500)] == ["12B", "4.26MB", "1.5kB"]
    assert split_tag("docker.io/library/busybox:1.36") == ("busybox", "1.36")
    assert split_tag("127.0.0.1:5000/team/app:v2") == ("127.0.0.1:5000/team/app", "v2")
    assert split_tag("127.0.0.1:5000/app") == ("127.0.0.1:5000/app", "<none>")
    rec = ImageRecord(
        id="sha256:" + "ab" * 32,
        digest="sha256:" + "cd" * 32,
        repo_tags=["docker.io/library/busybox:1", "127.0.0.1:5000/bb:x"],
        config=ImageConfig(),
        layers=[],
        size=2_000_000,
        created="2024-01-01T00:00:00Z",
    )
    untagged = ImageRecord("sha256:" + "ef" * 32, "sha256:" + "00" * 32, [], ImageConfig(), [], 10)
    rows = image_rows([rec, untagged], now=1704067200 + 3600)
    assert ["busybox", "1", "abababababab", "60m ago", "2MB"] in rows
    assert ["127.0.0.1:5000/bb", "x", "abababababab", "60m ago", "2MB"] in rows
    assert ["<none>", "<none>", "efefefefefef", "N/A", "10B"] in rows


MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, command: [python3, app.py]}]
      volumes:
        - {name: app, hostPath: {path: ./apps}}
        - {name: up, hostPath: {path: ../shared/data}}
        - {name: abs, hostPath: {path: /var/lib/x}}
        - {name: tmp, emptyDir: {}}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: c}]
  volumes: [{name: v, hostPath: {path: data}}]
---
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {volumes: [{hostPath: {path: not-a-pod}}]}
"""


def test_relative_host_paths_resolve_against_the_manifest_dir(tmp_path: Path) -> None:
    sub = tmp_path / "project" / "deploy"
    sub.mkdir(parents=True)
    (sub / "app.yaml").write_text(MANIFEST)
    dep, pod, svc = load_documents([str(sub / "app.yaml")])
    vols = dep.data["spec"]["template"]["spec"]["volumes"]
    assert [v.get("hostPath", {}).get("path") for v in vols] == [
        str(sub / "apps"),
        str(tmp_path / "project" / "shared" / "data"),
        "/var/lib/x",
        None,
    ]
    assert pod.data["spec"]["volumes"][0]["hostPath"]["path"] == str(sub / "data")
    assert svc.data["spec"]["volumes"][0]["hostPath"]["path"] == "not-a-pod"  # not a pod spec


def test_relative_host_paths_leave_documents_alone_otherwise() -> None:
    docs = parse_text(MANIFEST, "<test>")
    resolved = resolve_host_paths(docs, Path("/base"))
    assert resolved[2] is docs[2]
    assert docs[0].data["spec"]["template"]["spec"]["volumes"][0]["hostPath"]["path"] == "./apps"
    assert resolved[0].data["spec"]["template"]["spec"]["volumes"][0]["hostPath"]["path"] == (
        "/base/apps"
    )
