"""Pod judgements shared by the controllers: activity, availability, deletion order."""

from __future__ import annotations

from collections.abc import Sequence

from shoal.api import Pod
from shoal.controllers import _pods as pods
from shoal.controllers._pods import deletion_order, pods_to_delete

from . import T0, make_pod


def names(ps: Sequence[Pod]) -> list[str]:
    return [p.metadata.name for p in ps]


def test_active_excludes_finished_and_terminating() -> None:
    assert pods.is_active(make_pod("a"))
    assert not pods.is_active(make_pod("b", phase="Succeeded"))
    assert not pods.is_active(make_pod("c", phase="Failed"))
    assert not pods.is_active(make_pod("d", deleting=True))


def test_available_needs_min_ready_seconds() -> None:
    p = make_pod("a", ready_at=T0)
    assert pods.is_available(p, 0, T0)
    assert not pods.is_available(p, 10, T0 + 5)
    assert pods.is_available(p, 10, T0 + 10)
    assert not pods.is_available(make_pod("b", ready=False), 0, T0)
    assert not pods.is_available(make_pod("c", ready=None), 0, T0)


def test_seconds_until_available() -> None:
    p = make_pod("a", ready_at=T0)
    assert pods.seconds_until_available(p, 10, T0 + 4) == 6
    assert pods.seconds_until_available(p, 10, T0 + 11) is None
    assert pods.seconds_until_available(p, 0, T0) is None


def test_unscheduled_deleted_first() -> None:
    scheduled = make_pod("scheduled", node="n1")
    pending = make_pod("pending", node=None, phase="Pending", ready=False)
    assert names(deletion_order([scheduled, pending])) == ["pending", "scheduled"]


def test_pending_before_running_and_not_ready_before_ready() -> None:
    running_ready = make_pod("rr", node="n1")
    running_unready = make_pod("ru", node="n2", ready=False)
    pending = make_pod("p", node="n3", phase="Pending", ready=False)
    assert names(deletion_order([running_ready, running_unready, pending])) == ["p", "ru", "rr"]


def test_crowded_node_loses_first() -> None:
    a1 = make_pod("a1", node="a", created=T0)
    a2 = make_pod("a2", node="a", created=T0)
    b1 = make_pod("b1", node="b", created=T0 + 100)  # newer, but alone on its node
    order = names(deletion_order([b1, a1, a2]))
    assert order[-1] == "b1"


def test_recently_ready_before_long_ready() -> None:
    old = make_pod("old", node="n1", ready_at=T0)
    fresh = make_pod("fresh", node="n2", ready_at=T0 + 60)
    assert names(deletion_order([old, fresh])) == ["fresh", "old"]


def test_more_restarts_first_then_newest() -> None:
    calm = make_pod("calm", node="n1", restarts=0, created=T0 + 10)
    flappy = make_pod("flappy", node="n2", restarts=5, created=T0)
    assert names(deletion_order([calm, flappy])) == ["flappy", "calm"]
    older = make_pod("older", node="n1", created=T0)
    newer = make_pod("newer", node="n2", created=T0 + 10)
    assert names(deletion_order([older, newer])) == ["newer", "older"]


def test_pods_to_delete_count() -> None:
    ps = [make_pod(f"p{i}", node=f"n{i}", created=T0 + i) for i in range(5)]
    assert names(pods_to_delete(ps, 2)) == ["p4", "p3"]
    assert pods_to_delete(ps, 0) == []


def test_controller_ref() -> None:
    from shoal.api import LabelSelector, PodTemplateSpec, ReplicaSet, ReplicaSetSpec
    from shoal.api import ObjectMeta as Meta

    rs = ReplicaSet(
        metadata=Meta(name="web", namespace="default", uid="u1"),
        spec=ReplicaSetSpec(
            selector=LabelSelector(match_labels={"a": "b"}),
            template=PodTemplateSpec(spec=make_pod("x").spec),
        ),
    )
    ref = pods.controller_ref(rs)
    assert (ref.kind, ref.name, ref.uid, ref.controller, ref.api_version) == (
        "ReplicaSet",
        "web",
        "u1",
        True,
        "apps/v1",
    )
    pod = make_pod("p")
    pod.metadata.owner_references.append(ref)
    assert pods.is_controlled_by(pod, rs)
