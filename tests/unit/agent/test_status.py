"""Pure status derivation: back-off arithmetic, container states, pod phase, conditions."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.agent._status import (
    ContainerRecord,
    Termination,
    backoff_message,
    build_pod_status,
    container_status,
    format_duration,
    pod_phase,
    restart_delay,
    should_restart,
)
from shoal.api import Condition, Container, ContainerPort, PodStatus, get_condition

NOW = 1_700_000_000.0


def test_restart_delay_is_immediate_then_doubles_to_the_cap() -> None:
    delays = [restart_delay(n, 10, 300) for n in range(9)]
    assert delays == [0, 10, 20, 40, 80, 160, 300, 300, 300]
    assert restart_delay(10_000, 10, 300) == 300  # no overflow for long crash loops


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "200ms"),
        (10, "10s"),
        (20, "20s"),
        (80, "1m20s"),
        (160, "2m40s"),
        (300, "5m0s"),
        (1.5, "1.5s"),
    ],
)
def test_format_duration_matches_go(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_backoff_message_is_the_kubelets() -> None:
    assert (
        backoff_message(20, "web", "api_default(123)")
        == "back-off 20s restarting failed container=web pod=api_default(123)"
    )


@pytest.mark.parametrize(
    ("policy", "code", "killed", "expected"),
    [
        ("Always", 0, False, True),
        ("Always", 1, False, True),
        ("OnFailure", 0, False, False),
        ("OnFailure", 1, False, True),
        ("OnFailure", 0, True, True),
        ("Never", 1, False, False),
        ("Never", 0, True, False),
    ],
)
def test_should_restart(policy: str, code: int, killed: bool, expected: bool) -> None:
    assert should_restart(policy, code, killed) is expected  # type: ignore[arg-type]


def _spec(name: str = "c", **kw: Any) -> Container:
    return Container.model_validate({"name": name, "command": ["x"], **kw})


def test_container_status_states() -> None:
    spec = _spec(image="img:1")
    waiting = container_status(ContainerRecord(name="c"), spec)
    assert waiting.state.waiting is not None and waiting.state.waiting.reason == "ContainerCreating"
    assert not waiting.ready and waiting.started is False and waiting.image == "img:1"

    running = ContainerRecord(
        name="c", running_since=NOW, ready=True, container_id="u_c", attempt=0
    )
    cs = container_status(running, spec)
    assert cs.state.running is not None and cs.state.running.started_at == "2023-11-14T22:13:20Z"
    assert cs.ready and cs.started and cs.container_id == "process://u_c"

    term = Termination(1, "Error", NOW - 5, NOW, "u_c")
    done = container_status(ContainerRecord(name="c", terminated=term, ready=True), spec)
    assert done.state.terminated is not None and done.state.terminated.exit_code == 1
    assert done.state.terminated.container_id == "process://u_c"
    assert not done.ready, "a stopped container is never ready"


def test_crash_loop_status_shows_last_exit() -> None:
    rec = ContainerRecord(
        name="c",
        restart_count=3,
        last_termination=Termination(2, "Error", NOW - 1, NOW),
        waiting_reason="CrashLoopBackOff",
        waiting_message="back-off 40s ...",
    )
    cs = container_status(rec, _spec())
    assert cs.restart_count == 3
    assert cs.state.waiting is not None and cs.state.waiting.reason == "CrashLoopBackOff"
    assert cs.last_state.terminated is not None and cs.last_state.terminated.exit_code == 2


def test_reported_ports_map_container_ports_to_host_ports() -> None:
    spec = _spec(
        ports=[
            ContainerPort(container_port=80, name="http"),
            ContainerPort(container_port=53, protocol="UDP"),
        ]
    )
    cs = container_status(
        ContainerRecord(name="c", running_since=NOW, host_ports={80: 40001, 53: 40002}), spec
    )
    assert [(p.container_port, p.host_port, p.protocol, p.name) for p in cs.ports] == [
        (80, 40001, "TCP", "http"),
        (53, 40002, "UDP", None),
    ]
    assert container_status(ContainerRecord(name="c"), spec).ports == []


def _statuses(*recs: ContainerRecord) -> list:  # type: ignore[type-arg]
    return [container_status(r, _spec(r.name)) for r in recs]


def _running(name: str = "a") -> ContainerRecord:
    return ContainerRecord(name=name, running_since=NOW)


def _exited(code: int, name: str = "a") -> ContainerRecord:
    return ContainerRecord(name=name, terminated=Termination(code, "x"))


def _restarting(name: str = "a") -> ContainerRecord:
    return ContainerRecord(
        name=name, last_termination=Termination(1, "Error"), waiting_reason="CrashLoopBackOff"
    )


@pytest.mark.parametrize(
    ("policy", "recs", "phase"),
    [
        ("Always", [ContainerRecord(name="a")], "Pending"),
        ("Always", [_running("a"), ContainerRecord(name="b")], "Pending"),
        ("Always", [_running("a"), _running("b")], "Running"),
        ("Always", [_restarting()], "Running"),
        ("Always", [_exited(0)], "Running"),
        ("OnFailure", [_exited(0), _exited(0, "b")], "Succeeded"),
        ("OnFailure", [_exited(0), _running("b")], "Running"),
        ("OnFailure", [_restarting()], "Running"),
        ("Never", [_exited(0), _exited(1, "b")], "Failed"),
        ("Never", [_exited(1), _running("b")], "Running"),
        ("Never", [_exited(0)], "Succeeded"),
        ("Never", [ContainerRecord(name="a", waiting_reason="RunContainerError")], "Pending"),
    ],
)
def test_pod_phase(policy: str, recs: list[ContainerRecord], phase: str) -> None:
    assert pod_phase(policy, _statuses(*recs)) == phase  # type: ignore[arg-type]


def _build(
    records: dict[str, ContainerRecord],
    previous: PodStatus | None = None,
    now: float = NOW,
    **kw: object,
) -> PodStatus:
    specs = [_spec(n) for n in records]
    return build_pod_status(
        policy=kw.pop("policy", "Always"),  # type: ignore[arg-type]
        containers=specs,
        records=records,
        previous=previous or PodStatus(),
        scheduled=kw.pop("scheduled", None),  # type: ignore[arg-type]
        address="10.0.0.5",
        start_time="2023-11-14T22:00:00Z",
        now=now,
        **kw,  # type: ignore[arg-type]
    )


def test_pod_status_conditions_and_addresses() -> None:
    status = _build({"a": _running("a"), "b": ContainerRecord(name="b")})
    assert status.phase == "Pending"
    assert (status.pod_ip, status.host_ip) == ("10.0.0.5", "10.0.0.5")
    assert [c.type for c in status.conditions] == [
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
    ]
    ready = get_condition(status.conditions, "Ready")
    assert ready is not None and ready.status == "False"
    assert ready.reason == "ContainersNotReady"
    assert ready.message == "containers with unready status: [a b]"
    sched = get_condition(status.conditions, "PodScheduled")
    assert sched is not None and sched.status == "True"


def test_ready_when_every_container_runs_and_is_ready() -> None:
    recs = {"a": ContainerRecord(name="a", running_since=NOW, ready=True)}
    status = _build(recs)
    ready = get_condition(status.conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason, ready.message) == ("True", None, None)


def test_unchanged_pod_yields_identical_status() -> None:
    recs = {"a": ContainerRecord(name="a", running_since=NOW, ready=True)}
    first = _build(recs)
    again = _build(recs, previous=first, now=NOW + 60)
    assert again.to_dict() == first.to_dict(), "no change must mean no write"
    recs["a"].ready = False
    flipped = _build(recs, previous=again, now=NOW + 120)
    ready = get_condition(flipped.conditions, "Ready")
    assert ready is not None and ready.last_transition_time == "2023-11-14T22:15:20Z"


def test_scheduler_condition_is_kept() -> None:
    sched = Condition(
        type="PodScheduled", status="True", last_transition_time="2020-01-01T00:00:00Z"
    )
    status = _build({"a": _running()}, scheduled=sched)
    got = get_condition(status.conditions, "PodScheduled")
    assert got is not None and got.last_transition_time == "2020-01-01T00:00:00Z"


def test_terminal_phase_is_pinned_and_reported_completed() -> None:
    status = _build({"a": _exited(0)}, policy="Never", terminal_phase="Succeeded")
    assert status.phase == "Succeeded"
    ready = get_condition(status.conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", "PodCompleted")


def test_termination_round_trips_through_the_api_shape() -> None:
    term = Termination(137, "Error", NOW - 10, NOW, "uid_c", "killed")
    assert Termination.from_api(term.to_api()) == term
