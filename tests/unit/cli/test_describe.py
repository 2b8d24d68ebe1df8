"""describe's layout: aligned fields, container states, conditions and events."""

from __future__ import annotations

from shoal._util import format_time
from shoal.api import Event, Pod
from shoal.cli._describe import describe_pod, events_lines, fields

NOW = 1_700_000_000.0


def test_fields_align_values_in_one_column() -> None:
    lines = fields([(0, "Name", "p"), (0, "Labels", ["a=1", "b=2"]), (2, "Nested Key", "v"),
                    (0, "Empty", [])])  # fmt: skip
    assert lines == [
        "Name:          p",
        "Labels:        a=1",
        "               b=2",
        "  Nested Key:  v",
        "Empty:         <none>",
    ]


def _event(reason: str, message: str, count: int = 1) -> Event:
    return Event.model_validate(
        {
            "metadata": {"name": "huge.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "huge"},
            "reason": reason,
            "message": message,
            "type": "Warning",
            "count": count,
            "firstTimestamp": format_time(NOW - 120),
            "lastTimestamp": format_time(NOW - 10),
            "source": {"component": "default-scheduler"},
        }
    )


def test_events_table_with_repeat_counts() -> None:
    lines = events_lines([_event("FailedScheduling", "0/1 nodes are available", count=3)], NOW)
    assert lines[0] == "Events:"
    assert lines[1].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert "10s (x3 over 2m)" in lines[3]
    assert "default-scheduler" in lines[3] and "0/1 nodes are available" in lines[3]
    assert events_lines([], NOW) == ["Events:  <none>"]


def test_pending_pod_shows_scheduling_reasons_and_container_state() -> None:
    msg = "0/1 nodes are available: 1 Insufficient cpu."
    pod = Pod.model_validate(
        {
            "metadata": {"name": "huge", "namespace": "default", "labels": {"app": "x"}},
            "spec": {
                "containers": [{"name": "c", "command": ["sleep", "60"],
                                "ports": [{"containerPort": 8080, "name": "http"}],
                                "resources": {"requests": {"cpu": "500"}}}],
                "nodeSelector": {"disk": "ssd"},
            },
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False",
                                "reason": "Unschedulable", "message": msg}],
                "containerStatuses": [{"name": "c", "restartCount": 2,
                                       "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                       "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}},
                                       "ports": [{"containerPort": 8080, "hostPort": 41234}]}],
            },
        }
    )  # fmt: skip
    text = "\n".join(describe_pod(pod, [_event("FailedScheduling", msg)], NOW))
    assert "Node:" in text and "<none>" in text
    assert "Status:" in text and "Pending" in text
    assert "PodScheduled" in text and "Unschedulable" in text and msg in text
    assert "FailedScheduling" in text
    assert "CrashLoopBackOff" in text and "Exit Code:" in text
    assert "Restart Count:  2" in text
    assert "8080/TCP (http)" in text and "41234/TCP" in text
    assert "disk=ssd" in text
    assert "      sleep" in text and "      60" in text


def test_pod_volumes_mounts_and_oom_last_state() -> None:
    pod = Pod.model_validate(
        {
            "metadata": {"name": "v", "namespace": "default"},
            "spec": {
                "containers": [
                    {"name": "c", "image": "busybox:1",
                     "volumeMounts": [{"name": "app", "mountPath": "/app", "readOnly": True},
                                      {"name": "tmp", "mountPath": "/scratch"}]}
                ],
                "volumes": [{"name": "app", "hostPath": {"path": "/srv/app", "type": "Directory"}},
                            {"name": "tmp", "emptyDir": {}}],
            },
            "status": {"containerStatuses": [{
                "name": "c", "restartCount": 2, "image": "busybox:1",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137,
                                             "startedAt": "2024-01-01T00:00:00Z",
                                             "finishedAt": "2024-01-01T00:00:05Z"}}}]},
        }
    )  # fmt: skip
    text = "\n".join(describe_pod(pod, [], NOW))
    assert "Mounts:" in text and "/app from app (ro)" in text and "/scratch from tmp (rw)" in text
    assert "Type:          HostPath (bare host directory volume)" in text
    assert "Path:          /srv/app" in text
    assert "EmptyDir (a temporary directory that shares a pod's lifetime)" in text
    for expected in ("Reason:", "OOMKilled", "Exit Code:", "137", "Restart Count:", "busybox:1",
                     "Finished:", "2024-01-01T00:00:05Z", "CrashLoopBackOff"):  # fmt: skip
        assert expected in text, expected
