"""Deciding created/configured/unchanged, and what an update carries over from the cluster."""

from __future__ import annotations

import copy
from typing import Any

from shoal.cli._app import error_lines
from shoal.cli._apply import api_error_lines, differs, with_live_fields
from shoal.cli._manifest import ManifestError, PlannedObject, parse_text, plan_objects
from shoal.errors import FieldError, InvalidError, NotFoundError, ServerUnreachableError

POD = """
apiVersion: v1
kind: Pod
metadata: {name: p1, labels: {app: a}}
spec:
  containers: [{name: c, image: nginx:1.25}]
"""


def _planned(text: str = POD) -> PlannedObject:
    return plan_objects(parse_text(text, "x.yaml"))[0]


def _live(planned: PlannedObject, **changes: Any) -> dict[str, Any]:
    """What the server would hold after creating ``planned`` (and the cluster's work)."""
    live = copy.deepcopy(planned.normalized)
    live["metadata"].update(uid="u1", resourceVersion="7", creationTimestamp="2024-01-01T00:00:00Z")
    live["status"] = {"phase": "Running", "podIP": "10.0.0.3"}
    for key, value in changes.items():
        live["spec"][key] = value
    return live


def test_same_manifest_is_unchanged_even_after_scheduling() -> None:
    planned = _planned()
    live = _live(planned, nodeName="node-a")
    desired = with_live_fields(planned, live)
    assert not differs(desired, live)
    assert desired["spec"]["nodeName"] == "node-a"
    assert desired["status"] == live["status"]
    assert desired["metadata"]["resourceVersion"] == "7"


def test_changed_spec_or_labels_is_configured() -> None:
    planned = _planned()
    live = _live(planned)
    changed_image = _planned(POD.replace("nginx:1.25", "nginx:1.26"))
    assert differs(with_live_fields(changed_image, live), live)
    relabeled = _planned(POD.replace("{app: a}", "{app: b}"))
    assert differs(with_live_fields(relabeled, live), live)


def test_owner_references_and_finalizers_set_by_controllers_are_kept() -> None:
    planned = _planned()
    live = _live(planned)
    live["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "r1"}
    ]
    live["metadata"]["finalizers"] = ["shoal.io/cleanup"]
    desired = with_live_fields(planned, live)
    assert desired["metadata"]["ownerReferences"] == live["metadata"]["ownerReferences"]
    assert desired["metadata"]["finalizers"] == ["shoal.io/cleanup"]
    assert not differs(desired, live)


def test_service_cluster_ip_and_node_ports_are_kept() -> None:
    svc = _planned(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
        "spec: {type: NodePort, ports: [{port: 80}]}\n"
    )
    live = copy.deepcopy(svc.normalized)
    live["spec"]["clusterIP"] = "10.96.0.10"
    live["spec"]["ports"][0]["nodePort"] = 30080
    desired = with_live_fields(svc, live)
    assert desired["spec"]["clusterIP"] == "10.96.0.10"
    assert desired["spec"]["ports"][0]["nodePort"] == 30080
    assert not differs(desired, live)


def test_invalid_error_prints_one_cause_per_line() -> None:
    err = InvalidError(
        'Pod "p" is invalid: spec.restartPolicy: Unsupported value, spec.x: Required value',
        kind="Pod",
        name="p",
        causes=[
            FieldError("spec.restartPolicy", "FieldValueNotSupported", "Unsupported value"),
            FieldError("spec.x", "FieldValueRequired", "Required value"),
        ],
    )
    assert api_error_lines(err, "a.yaml (document 2)") == [
        'error: a.yaml (document 2): Pod "p" is invalid:',
        "  spec.restartPolicy: Unsupported value",
        "  spec.x: Required value",
    ]


def test_error_lines_for_each_failure() -> None:
    server = "http://127.0.0.1:1"
    assert error_lines(ServerUnreachableError("boom"), server) == [
        f"error: cannot reach the API server at {server}: is `shoal up` running?"
    ]
    assert error_lines(NotFoundError('pods "x" not found'), server) == ['error: pods "x" not found']
    try:
        plan_objects(parse_text(POD.replace("image: nginx:1.25", "ports: []"), "p.yaml"))
    except ManifestError as exc:
        lines = error_lines(exc, server)
    assert lines[0] == 'error: p.yaml (document 1): Pod "p1" is invalid:'
    assert lines[1].startswith("  spec.containers[0].image: Required value")
