from typing import Any

import pytest

from shoal.api import Deployment, kind_info, resolve_kind, validate_object
from shoal.errors import InvalidError


def deployment(**spec_overrides: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]},
            },
        },
    }
    d["spec"].update(spec_overrides)
    return d


def errors(kind: str, data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidError) as info:
        validate_object(kind_info(kind), data)
    return {c.field: c.message for c in info.value.causes}


def test_valid_deployment_parses() -> None:
    obj = validate_object(kind_info("Deployment"), deployment())
    assert isinstance(obj, Deployment)
    assert obj.spec.replicas == 3


def test_every_error_reported_with_its_path() -> None:
    d = deployment(replicas=-1)
    d["spec"]["template"]["spec"]["containers"] = [{"name": "c"}, {"name": "c", "image": "x"}]
    d["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    errs = errors("Deployment", d)
    assert errs["spec.replicas"].startswith("Invalid value: -1")
    assert errs["spec.template.spec.containers[0].image"].startswith("Required value")
    assert errs["spec.template.spec.containers[1].name"] == 'Duplicate value: "c"'
    assert "does not match template" in errs["spec.template.metadata.labels"]


def test_type_and_enum_errors_come_from_the_model() -> None:
    d = deployment(replicas="three")
    d["spec"]["template"]["spec"]["restartPolicy"] = "Sometimes"
    d["spec"]["unknownField"] = 1
    errs = errors("Deployment", d)
    assert errs["spec.replicas"].startswith('Invalid value: "three"')
    assert errs["spec.template.spec.restartPolicy"].startswith('Unsupported value: "Sometimes"')
    assert errs["spec.unknownField"] == "Unknown field"


def test_missing_required_fields() -> None:
    errs = errors(
        "Deployment",
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {}},
    )
    assert errs["spec.selector"] == "Required value"
    assert errs["spec.template"] == "Required value"


def test_pod_rules() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "Bad_Name", "labels": {"ok": "x" * 64}},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "command": ["sleep"],
                    "ports": [
                        {"containerPort": 0, "name": "http"},
                        {"containerPort": 80, "name": "http"},
                    ],
                    "resources": {
                        "requests": {"cpu": "2", "memory": "lots"},
                        "limits": {"cpu": "1"},
                    },
                    "readinessProbe": {"httpGet": {"port": "nope"}, "periodSeconds": 0},
                }
            ]
        },
    }
    errs = errors("Pod", pod)
    assert "metadata.name" in errs
    assert "metadata.labels.ok" in errs
    assert "spec.containers[0].ports[0].containerPort" in errs
    assert errs["spec.containers[0].ports[1].name"] == 'Duplicate value: "http"'
    assert "quantity" in errs["spec.containers[0].resources.requests.memory"]
    assert "spec.containers[0].readinessProbe.httpGet.port" in errs
    assert "spec.containers[0].readinessProbe.periodSeconds" in errs


def test_requests_above_limits() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "command": ["x"],
                                    "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]}}  # fmt: skip
    errs = errors("Pod", pod)
    assert "less than or equal to cpu limit" in errs["spec.containers[0].resources.requests"]


def test_strategy_rules() -> None:
    errs = errors(
        "Deployment", deployment(strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}})
    )
    assert "may not be 0" in errs["spec.strategy.rollingUpdate.maxUnavailable"]
    errs = errors("Deployment", deployment(strategy={"rollingUpdate": {"maxSurge": "x%"}}))
    assert "percent" in errs["spec.strategy.rollingUpdate.maxSurge"]


def test_service_rules() -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"ports": [{"port": 80}, {"port": 70000, "name": "b", "nodePort": 80}]}}  # fmt: skip
    errs = errors("Service", svc)
    assert errs["spec.ports[0].name"] == "Required value"
    assert "spec.ports[1].port" in errs
    assert "30000-32767" in errs["spec.ports[1].nodePort"]


def test_kind_resolution() -> None:
    for short, kind in [("po", "Pod"), ("deploy", "Deployment"), ("svc", "Service"), ("no", "Node"),
                        ("ep", "Endpoints"), ("ns", "Namespace"), ("pods", "Pod"), ("Deployment", "Deployment"),
                        ("deployments.apps", "Deployment"), ("rs", "ReplicaSet")]:  # fmt: skip
        info = resolve_kind(short)
        assert info is not None and info.kind == kind
    assert resolve_kind("widgets") is None
