"""Pod spec -> driver config and probe targets (pure)."""

from __future__ import annotations

from shoal.agent._spec import container_config, probe_env, resolve_port
from shoal.api import Pod


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
