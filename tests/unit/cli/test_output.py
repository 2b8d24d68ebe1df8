"""kubectl's rules for AGE, pod STATUS/READY/RESTARTS and the other table columns."""

from __future__ import annotations

from typing import Any

import pytest

from shoal._util import format_time
from shoal.api import Endpoints, Node, Pod, Service, kind_info
from shoal.cli._output import (
    TableOptions,
    age,
    format_endpoints,
    headers,
    human_duration,
    kind_ref,
    node_roles,
    node_status,
    object_ref,
    plain_table,
    pod_ready,
    pod_restarts,
    pod_status,
    row,
    service_ports,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (200, "3m20s"),
        (599, "9m59s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (2 * 86400 + 5 * 3600, "2d5h"),
        (10 * 86400, "10d"),
        (3 * 365 * 86400, "3y"),
        (3 * 365 * 86400 + 4 * 86400, "3y4d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_age_from_timestamps() -> None:
    assert age(format_time(NOW - 200), NOW) == "3m20s"
    assert age(None, NOW) == "<unknown>"
    assert age("garbage", NOW) == "<unknown>"


def _pod(
    statuses: list[dict[str, Any]] | None = None,
    phase: str = "Running",
    containers: int = 1,
    **meta: Any,
) -> Pod:
    return Pod.model_validate(
        {
            "metadata": {"name": "p", "namespace": "default", **meta},
            "spec": {"containers": [{"name": f"c{i}", "image": "x"} for i in range(containers)]},
            "status": {"phase": phase, "containerStatuses": statuses or []},
        }
    )


RUNNING = {"name": "c0", "ready": True, "state": {"running": {"startedAt": "2023-11-14T22:00:00Z"}}}


def test_status_is_the_phase_by_default() -> None:
    assert pod_status(_pod(phase="Pending")) == "Pending"
    assert pod_status(_pod([RUNNING])) == "Running"


def test_waiting_reason_wins_over_running_phase() -> None:
    crashing = {"name": "c0", "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}  # fmt: skip
    assert pod_status(_pod([crashing])) == "CrashLoopBackOff"
    creating = {"name": "c0", "state": {"waiting": {"reason": "ContainerCreating"}}}
    assert pod_status(_pod([creating], phase="Pending")) == "ContainerCreating"


def test_terminated_reasons() -> None:
    done = {"name": "c0", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}
    assert pod_status(_pod([done], phase="Succeeded")) == "Completed"
    failed = {"name": "c0", "state": {"terminated": {"reason": "Error", "exitCode": 2}}}
    assert pod_status(_pod([failed], phase="Failed")) == "Error"
    bare = {"name": "c0", "state": {"terminated": {"exitCode": 3}}}
    assert pod_status(_pod([bare], phase="Failed")) == "ExitCode:3"
    killed = {"name": "c0", "state": {"terminated": {"signal": 9}}}
    assert pod_status(_pod([killed], phase="Failed")) == "Signal:9"


def test_completed_with_a_running_container_is_running_or_not_ready() -> None:
    done = {"name": "c1", "state": {"terminated": {"reason": "Completed"}}}
    pod = _pod([RUNNING, done], containers=2)
    assert pod_status(pod) == "NotReady"
    pod.status.conditions = []
    ready = Pod.model_validate(
        {**pod.to_dict(), "status": {**pod.status.to_dict(),
                                     "conditions": [{"type": "Ready", "status": "True"}]}}
    )  # fmt: skip
    assert pod_status(ready) == "Running"


def test_deletion_timestamp_means_terminating() -> None:
    assert pod_status(_pod([RUNNING], deletionTimestamp="2023-11-14T22:13:20Z")) == "Terminating"


def test_ready_and_restarts_columns() -> None:
    crashed = {
        "name": "c1",
        "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "finishedAt": format_time(NOW - 42)}},
    }
    pod = _pod([RUNNING, crashed], containers=2)
    assert pod_ready(pod) == "1/2"
    assert pod_restarts(pod, NOW) == "2 (42s ago)"
    assert pod_restarts(_pod([RUNNING]), NOW) == "0"


def test_pod_row_with_namespace_and_wide_columns() -> None:
    pod = _pod([RUNNING], creationTimestamp=format_time(NOW - 5))
    pod.spec.node_name = "node-a"
    pod.status.pod_ip = "10.0.0.7"
    opts = TableOptions(wide=True, namespace_column=True)
    assert headers("Pod", opts) == [
        "NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE",
    ]  # fmt: skip
    assert row(pod, NOW, opts) == [
        "default", "p", "1/1", "Running", "0", "5s", "10.0.0.7", "node-a", "<none>",
    ]  # fmt: skip
    assert headers("Pod", TableOptions()) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]


def test_event_rows_lead_with_last_seen() -> None:
    from shoal.api import Event

    ev = Event.model_validate(
        {
            "metadata": {"name": "p.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p"},
            "reason": "FailedScheduling",
            "message": "0/1 nodes are available",
            "type": "Warning",
            "lastTimestamp": format_time(NOW - 30),
        }
    )
    assert headers("Event", TableOptions()) == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert row(ev, NOW, TableOptions()) == [
        "30s", "Warning", "FailedScheduling", "pod/p", "0/1 nodes are available",
    ]  # fmt: skip


def test_service_and_endpoints_columns() -> None:
    svc = Service.model_validate(
        {"metadata": {"name": "s"}, "spec": {"ports": [{"name": "a", "port": 80},
                                                       {"name": "b", "port": 443, "nodePort": 30443}]}}
    )  # fmt: skip
    assert service_ports(svc) == "80/TCP,443:30443/TCP"
    ep = Endpoints.model_validate(
        {
            "metadata": {"name": "s"},
            "subsets": [
                {
                    "addresses": [{"ip": f"10.0.0.{i}"} for i in range(1, 6)],
                    "ports": [{"port": 8080}],
                }
            ],
        }
    )
    assert format_endpoints(ep) == "10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080 + 2 more..."
    assert format_endpoints(Endpoints.model_validate({"metadata": {"name": "s"}})) == "<none>"


def test_node_status_and_roles() -> None:
    node = Node.model_validate(
        {
            "metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]},
        }
    )
    assert node_status(node) == "NotReady,SchedulingDisabled"
    assert node_roles(node) == "control-plane"
    assert node_status(Node.model_validate({"metadata": {"name": "m"}})) == "Unknown"


def test_kind_references() -> None:
    assert kind_ref(kind_info("Deployment")) == "deployment.apps"
    assert object_ref(kind_info("Pod"), "x") == "pod/x"


def test_plain_table_aligns_and_strips() -> None:
    lines = plain_table(["Type", "Reason"], [["Warning", "FailedScheduling"], ["Normal", "x"]], 2)
    assert lines == ["  Type     Reason", "  Warning  FailedScheduling", "  Normal   x"]


def test_image_pull_and_oom_reasons_show_like_kubectl() -> None:
    for reason in ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"):
        pulling = {"name": "c0", "state": {"waiting": {"reason": reason, "message": "x"}}}
        assert pod_status(_pod([pulling], phase="Pending")) == reason
    oom = {"name": "c0", "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}
    assert pod_status(_pod([oom], phase="Failed")) == "OOMKilled"
