"""Pod spec -> driver config and probe targets (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.agent._spec import (
    container_config,
    merged_security,
    non_root_violation,
    probe_env,
    resolve_port,
)
from shoal.api import Pod
from shoal.runtime import Mount, SecurityConfig


def _pod() -> Pod:
    return Pod.model_validate(
        {
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-1"},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "python:3",
                        "command": ["python3"],
                        "args": ["-m", "http.server"],
                        "env": [
                            {"name": "A", "value": "1"},
                            {"name": "A", "value": "2"},
                            {"name": "B", "value": "x"},
                        ],
                        "workingDir": "/srv",
                        "ports": [
                            {"containerPort": 8080, "name": "http"},
                            {"containerPort": 9090, "name": "admin-port"},
                        ],
                        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                    }
                ]
            },
        }
    )


def test_container_config_translates_the_spec() -> None:
    pod = _pod()
    cfg = container_config(pod, pod.spec.containers[0], attempt=3)
    assert (cfg.pod_uid, cfg.pod_name, cfg.namespace, cfg.name, cfg.attempt) == (
        "u-1",
        "web",
        "prod",
        "app",
        3,
    )
    assert cfg.command == ["python3"] and cfg.args == ["-m", "http.server"]
    assert cfg.env == {"A": "2", "B": "x"}, "a later duplicate wins, as in Kubernetes"
    assert cfg.working_dir == "/srv" and cfg.image == "python:3"
    assert [(p.container_port, p.name, p.protocol) for p in cfg.ports] == [
        (8080, "http", "TCP"),
        (9090, "admin-port", "TCP"),
    ]
    assert (cfg.cpu_limit_millis, cfg.memory_limit_bytes) == (500, 64 * 2**20)
    assert cfg.container_id == "u-1_app"


def test_resolve_port_maps_declared_and_named_ports() -> None:
    c = _pod().spec.containers[0]
    ports = {8080: 40001, 9090: 40002}
    assert resolve_port(c, 8080, ports) == 40001
    assert resolve_port(c, "http", ports) == 40001
    assert resolve_port(c, "admin-port", ports) == 40002
    assert resolve_port(c, "9090", ports) == 40002
    assert resolve_port(c, 7000, ports) == 7000, "an undeclared port is taken literally"
    assert resolve_port(c, "nope", ports) is None


def test_probe_env_is_what_the_container_sees() -> None:
    pod = _pod()
    env = probe_env(pod, pod.spec.containers[0], {8080: 40001, 9090: 40002})
    assert env["PORT"] == "40001"
    assert env["SHOAL_PORT_ADMIN_PORT"] == "40002"
    assert env["SHOAL_POD_NAME"] == "web" and env["SHOAL_POD_NAMESPACE"] == "prod"
    assert env["A"] == "2" and env["PATH"]


# --- volumes, security, requests, hostname ----------------------------------------------------


def _secure_pod(pod_ctx: dict[str, object] | None, ctr_ctx: dict[str, object] | None) -> Pod:
    container: dict[str, object] = {
        "name": "app",
        "image": "busybox:1",
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "apps", "mountPath": "/app", "readOnly": True, "subPath": "web/v1"},
        ],
        "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "128Mi"}},
    }
    if ctr_ctx is not None:
        container["securityContext"] = ctr_ctx
    spec: dict[str, object] = {
        "containers": [container],
        "volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "apps", "hostPath": {"path": "/srv/apps"}},
        ],
    }
    if pod_ctx is not None:
        spec["securityContext"] = pod_ctx
    return Pod.model_validate({"metadata": {"name": "web", "uid": "u-9"}, "spec": spec})


def test_mounts_resolve_volume_paths_and_subpaths() -> None:
    pod = _secure_pod(None, None)
    paths = {"data": Path("/var/lib/shoal/pods/u-9/volumes/data"), "apps": Path("/srv/apps")}
    cfg = container_config(pod, pod.spec.containers[0], 0, paths)
    assert cfg.mounts == [
        Mount(source=paths["data"], destination="/data", read_only=False),
        Mount(source=Path("/srv/apps/web/v1"), destination="/app", read_only=True),
    ]


def test_requests_default_to_limits_and_hostname_to_pod_name() -> None:
    pod = _secure_pod(None, None)
    cfg = container_config(pod, pod.spec.containers[0], 0, {"data": Path("/d"), "apps": Path("/a")})
    assert (cfg.cpu_request_millis, cfg.cpu_limit_millis) == (250, 1000)
    assert cfg.memory_request_bytes == cfg.memory_limit_bytes == 128 * 2**20
    assert cfg.hostname == "web"
    pod.spec.hostname = "db-0"
    assert (
        container_config(
            pod, pod.spec.containers[0], 0, {"data": Path("/d"), "apps": Path("/a")}
        ).hostname
        == "db-0"
    )


def test_security_container_overrides_pod() -> None:
    pod = _secure_pod(
        {"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 3000},
        {"runAsUser": 1001, "readOnlyRootFilesystem": True},
    )
    assert merged_security(pod, pod.spec.containers[0]) == SecurityConfig(
        run_as_user=1001, run_as_group=2000, read_only_root_filesystem=True, privileged=False
    )
    pod = _secure_pod({"runAsUser": 0}, {"privileged": True})
    assert merged_security(pod, pod.spec.containers[0]) == SecurityConfig(
        run_as_user=0, run_as_group=None, read_only_root_filesystem=False, privileged=True
    )
    plain = _secure_pod(None, None)
    assert merged_security(plain, plain.spec.containers[0]) == SecurityConfig()


WHERE = '(pod: "web_default(u-9)", container: app)'


@pytest.mark.parametrize(
    ("pod_ctx", "ctr_ctx", "image_user", "expected"),
    [
        (None, None, "", None),  # no runAsNonRoot: anything goes
        ({"runAsNonRoot": True}, None, "1000", None),
        ({"runAsNonRoot": True}, None, "1000:0", None),
        (
            {"runAsNonRoot": True},
            None,
            "",
            f"container has runAsNonRoot and image will run as root {WHERE}",
        ),
        (
            {"runAsNonRoot": True},
            None,
            "0:0",
            f"container has runAsNonRoot and image will run as root {WHERE}",
        ),
        (
            None,
            {"runAsNonRoot": True},
            "nobody",
            "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify "
            f"user is non-root {WHERE}",
        ),
        (
            {"runAsNonRoot": True, "runAsUser": 0},
            None,
            "1000",
            f"container's runAsUser breaks non-root policy {WHERE}",
        ),
        ({"runAsNonRoot": True}, {"runAsUser": 1000}, "", None),  # runAsUser beats the image
        ({"runAsNonRoot": True}, {"runAsNonRoot": False}, "", None),  # container overrides pod
    ],
)
def test_run_as_non_root(
    pod_ctx: dict[str, object] | None,
    ctr_ctx: dict[str, object] | None,
    image_user: str,
    expected: str | None,
) -> None:
    pod = _secure_pod(pod_ctx, ctr_ctx)
    pod.metadata.namespace = None
    assert non_root_violation(pod, pod.spec.containers[0], image_user) == expected
