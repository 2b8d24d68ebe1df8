"""Pod-template hashing, revisions and Deployment status conditions."""

from __future__ import annotations

from shoal._util import format_time
from shoal.api import (
    Container,
    Deployment,
    DeploymentSpec,
    DeploymentStatus,
    EnvVar,
    LabelSelector,
    ObjectMeta,
    PodSpec,
    PodTemplateSpec,
    ReplicaSet,
    ReplicaSetSpec,
    get_condition,
)
from shoal.controllers import _deployment_util as du

from . import T0


def template(image: str = "web:1", labels: dict[str, str] | None = None) -> PodTemplateSpec:
    return PodTemplateSpec(
        metadata=ObjectMeta(labels=labels if labels is not None else {"app": "web"}),
        spec=PodSpec(containers=[Container(name="web", image=image)]),
    )


def deployment(replicas: int = 3, generation: int = 1) -> Deployment:
    return Deployment(
        metadata=ObjectMeta(name="web", namespace="default", uid="d1", generation=generation),
        spec=DeploymentSpec(
            replicas=replicas,
            selector=LabelSelector(match_labels={"app": "web"}),
            template=template(),
        ),
    )


def replicaset(name: str, tmpl: PodTemplateSpec, created: float, revision: int = 0) -> ReplicaSet:
    return ReplicaSet(
        metadata=ObjectMeta(
            name=name,
            namespace="default",
            uid=f"uid-{name}",
            creation_timestamp=format_time(created),
            annotations={du.REVISION: str(revision)} if revision else {},
        ),
        spec=ReplicaSetSpec(
            replicas=0, selector=LabelSelector(match_labels={"app": "web"}), template=tmpl
        ),
    )


# --- hash -------------------------------------------------------------------------------------


def test_hash_is_stable_and_safe() -> None:
    h = du.template_hash(template())
    assert h == du.template_hash(template())
    assert all(c in "bcdfghjklmnpqrstvwxz2456789" for c in h)
    assert 1 <= len(h) <= 10


def test_hash_pinned_value() -> None:
    # Pinned so an accidental change of the hashing (which would give every Deployment's
    # current ReplicaSet a new name on upgrade) fails loudly.
    assert du.template_hash(template()) == "5c4df4b7d9"
    assert du.template_hash(template(), 1) == "745d588588"


def test_hash_ignores_empty_fields() -> None:
    # A field that a later model version adds with an empty default does not change it.
    explicit = PodTemplateSpec.model_validate(
        {
            "metadata": {"labels": {"app": "web"}, "annotations": {}},
            "spec": {"containers": [{"name": "web", "image": "web:1", "env": [], "args": []}]},
        }
    )
    assert du.template_hash(explicit) == du.template_hash(template())


def test_hash_changes_with_template() -> None:
    a = du.template_hash(template("web:1"))
    b = du.template_hash(template("web:2"))
    assert a != b
    env = template()
    env.spec.containers[0].env.append(EnvVar(name="X", value="1"))
    assert du.template_hash(env) != a


def test_hash_ignores_its_own_label_and_key_order() -> None:
    plain = template(labels={"app": "web", "tier": "fe"})
    h = du.template_hash(plain)
    labelled = template(labels={"tier": "fe", du.POD_TEMPLATE_HASH: h, "app": "web"})
    assert du.template_hash(labelled) == h
    assert du.equal_ignore_hash(plain, labelled)


def test_hash_with_collision_count_differs() -> None:
    t = template()
    assert du.template_hash(t, 1) != du.template_hash(t)
    assert du.template_hash(t, 1) != du.template_hash(t, 2)
    assert du.template_hash(t, 0) == du.template_hash(t)


def test_find_new_replicaset_is_oldest_with_same_template() -> None:
    d = deployment()
    other = replicaset("web-other", template("web:0"), T0)
    match_new = replicaset("web-b", template(), T0 + 20)
    match_old = replicaset("web-a", template(), T0 + 10)
    assert du.find_new_replicaset(d, [other, match_new, match_old]) is match_old
    assert du.find_new_replicaset(d, [other]) is None


def test_revision_of() -> None:
    assert du.revision_of(replicaset("a", template(), T0, revision=4)) == 4
    assert du.revision_of(replicaset("b", template(), T0)) == 0
    bad = replicaset("c", template(), T0)
    bad.metadata.annotations[du.REVISION] = "x"
    assert du.revision_of(bad) == 0


# --- status -----------------------------------------------------------------------------------


def _status(d: Deployment, counts: du.PodCounts, max_unavailable: int) -> DeploymentStatus:
    rs = replicaset("web-1", template(), T0)
    rs.spec.replicas = d.spec.replicas
    return du.calculate_status(
        d, rs, [rs], {"uid-web-1": counts}, max_unavailable, d.status.conditions, T0
    )


def test_status_counts_and_available_condition() -> None:
    d = deployment(replicas=3, generation=4)
    status = _status(d, du.PodCounts(active=3, ready=3, available=2, existing=3), 1)
    assert (status.replicas, status.updated_replicas, status.ready_replicas) == (3, 3, 3)
    assert (status.available_replicas, status.unavailable_replicas) == (2, 1)
    assert status.observed_generation == 4
    cond = get_condition(status.conditions, "Available")
    assert cond is not None and cond.status == "True"
    assert cond.reason == "MinimumReplicasAvailable"


def test_available_condition_false_below_minimum() -> None:
    d = deployment(replicas=3)
    status = _status(d, du.PodCounts(active=3, ready=1, available=1, existing=3), 1)
    cond = get_condition(status.conditions, "Available")
    assert cond is not None and (cond.status, cond.reason) == (
        "False",
        "MinimumReplicasUnavailable",
    )


def test_progressing_complete_message() -> None:
    d = deployment(replicas=2)
    rs = replicaset("web-5d4f8", template(), T0)
    rs.spec.replicas = 2
    status = du.calculate_status(
        d, rs, [rs], {"uid-web-5d4f8": du.PodCounts(2, 2, 2, 2)}, 0, [], T0
    )
    assert du.update_progress(d, status, rs, T0) is None
    cond = get_condition(status.conditions, "Progressing")
    assert cond is not None
    assert (cond.status, cond.reason) == ("True", "NewReplicaSetAvailable")
    assert cond.message == 'ReplicaSet "web-5d4f8" has successfully progressed.'


def test_progressing_updates_and_returns_deadline() -> None:
    d = deployment(replicas=2)
    rs = replicaset("web-x", template(), T0)
    rs.spec.replicas = 2
    status = du.calculate_status(d, rs, [rs], {"uid-web-x": du.PodCounts(1, 1, 1, 1)}, 0, [], T0)
    recheck = du.update_progress(d, status, rs, T0)
    cond = get_condition(status.conditions, "Progressing")
    assert cond is not None and cond.reason == "ReplicaSetUpdated"
    assert cond.message == 'ReplicaSet "web-x" is progressing.'
    assert recheck == d.spec.progress_deadline_seconds


def test_progress_deadline_exceeded() -> None:
    d = deployment(replicas=2)
    d.status.conditions.append(
        du.condition("Progressing", "True", du.RS_UPDATED, "x", format_time(T0))
    )
    rs = replicaset("web-x", template(), T0)
    rs.spec.replicas = 2
    status = du.calculate_status(d, rs, [rs], {}, 0, d.status.conditions, T0 + 601)
    du.update_progress(d, status, rs, T0 + 601)
    cond = get_condition(status.conditions, "Progressing")
    assert cond is not None and (cond.status, cond.reason) == ("False", "ProgressDeadlineExceeded")


def test_set_condition_keeps_transition_time_for_same_status() -> None:
    conds = [du.condition("Progressing", "True", du.NEW_RS_CREATED, "a", "t1")]
    du.set_deployment_condition(
        conds, du.condition("Progressing", "True", du.RS_UPDATED, "b", "t2")
    )
    assert len(conds) == 1
    assert (conds[0].reason, conds[0].last_transition_time) == (du.RS_UPDATED, "t1")
    # Same status and reason: nothing changes, not even the message.
    du.set_deployment_condition(
        conds, du.condition("Progressing", "True", du.RS_UPDATED, "c", "t3")
    )
    assert conds[0].message == "b"


def test_paused_and_resumed_conditions() -> None:
    d = deployment()
    d.spec.paused = True
    conds = d.status.conditions
    du.paused_condition(d, conds, T0)
    cond = get_condition(conds, "Progressing")
    assert cond is not None and (cond.status, cond.reason) == ("Unknown", "DeploymentPaused")
    d.spec.paused = False
    du.paused_condition(d, conds, T0)
    cond = get_condition(conds, "Progressing")
    assert cond is not None and cond.reason == "DeploymentResumed"
