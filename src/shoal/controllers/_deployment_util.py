"""Pure helpers of the Deployment controller: the pod-template hash, revision annotations,
and the Deployment's status with its Available and Progressing conditions, as Kubernetes'
``deployment/util`` and ``sync.go``/``progress.go`` compute them. No I/O."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shoal._util import format_time, parse_time
from shoal.api import (
    Condition,
    Deployment,
    DeploymentStatus,
    PodTemplateSpec,
    ReplicaSet,
    Resource,
    get_condition,
)

POD_TEMPLATE_HASH = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"

# Condition reasons (Kubernetes' deployment/util names).
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"

_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _prune(value: Any) -> Any:
    """Drop empty values (None, "", [], {}) recursively: a field added to the model later
    with an empty default must not change the hash of every existing template."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _canonical(template: PodTemplateSpec) -> str:
    data = template.to_dict()
    labels = (data.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(POD_TEMPLATE_HASH, None)
    return json.dumps(_prune(data), sort_keys=True, separators=(",", ":"))


def _fnv32a(data: bytes, h: int = 0x811C9DC5) -> int:
    for byte in data:
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: PodTemplateSpec, collision_count: int | None = None) -> str:
    """A short, stable name for a pod template (Kubernetes' ``ComputeHash``): FNV-1a over the
    canonical JSON of the template without its own pod-template-hash label, plus the
    Deployment's collisionCount when set, spelled in an alphabet without vowels (so it never
    forms words) — the same template always gives the same ReplicaSet name."""
    h = _fnv32a(_canonical(template).encode())
    if collision_count:
        h = _fnv32a((collision_count & 0xFFFFFFFF).to_bytes(4, "little") + b"\0" * 4, h)
    return "".join(_SAFE_ALPHABET[b % len(_SAFE_ALPHABET)] for b in str(h).encode())


def equal_ignore_hash(a: PodTemplateSpec, b: PodTemplateSpec) -> bool:
    """Same template apart from the pod-template-hash label (``EqualIgnoreHash``)."""
    return _canonical(a) == _canonical(b)


def annotation_int(obj: Resource, key: str) -> int | None:
    value = obj.metadata.annotations.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def revision_of(obj: Resource) -> int:
    """The ``deployment.kubernetes.io/revision`` annotation (0 when absent or malformed)."""
    return annotation_int(obj, REVISION) or 0


def creation_time(obj: Resource) -> float:
    ts = obj.metadata.creation_timestamp
    if not ts:
        return 0.0
    try:
        return parse_time(ts)
    except ValueError:
        return 0.0


def find_new_replicaset(d: Deployment, rss: Sequence[ReplicaSet]) -> ReplicaSet | None:
    """The oldest ReplicaSet whose template is the Deployment's (``FindNewReplicaSet``);
    re-used when a template comes back, which is what a rollback is."""
    for rs in sorted(rss, key=lambda r: (creation_time(r), r.metadata.name)):
        if equal_ignore_hash(rs.spec.template, d.spec.template):
            return rs
    return None


@dataclass(frozen=True)
class PodCounts:
    """One ReplicaSet's pods as seen in the pod cache."""

    active: int = 0
    """Neither finished nor terminating."""
    ready: int = 0
    available: int = 0
    existing: int = 0
    """Not finished, terminating ones included (what Recreate waits for)."""


def condition(
    type_: str, status: Literal["True", "False", "Unknown"], reason: str, message: str, now: str
) -> Condition:
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_update_time=now,
        last_transition_time=now,
    )


def set_deployment_condition(conditions: list[Condition], new: Condition) -> None:
    """Kubernetes' ``SetDeploymentCondition``: same status and reason is no change; same
    status keeps the old lastTransitionTime; the condition moves to the end of the list."""
    current = get_condition(conditions, new.type)
    if current is not None and (current.status, current.reason) == (new.status, new.reason):
        return
    if current is not None and current.status == new.status:
        new.last_transition_time = current.last_transition_time
    conditions[:] = [c for c in conditions if c.type != new.type]
    conditions.append(new)


def calculate_status(
    d: Deployment,
    new_rs: ReplicaSet | None,
    all_rs: Sequence[ReplicaSet],
    counts: dict[str, PodCounts],
    max_unavailable: int,
    conditions: Sequence[Condition],
    now: float,
) -> DeploymentStatus:
    """The replica counts of ``calculateStatus`` (from the pods of each ReplicaSet) and the
    Available condition; other conditions are carried over from ``conditions``."""

    def of(rs: ReplicaSet) -> PodCounts:
        return counts.get(rs.metadata.uid or "", PodCounts())

    available = sum(of(rs).available for rs in all_rs)
    total = sum(rs.spec.replicas for rs in all_rs)
    status = DeploymentStatus(
        observed_generation=d.metadata.generation,
        replicas=sum(of(rs).active for rs in all_rs),
        updated_replicas=of(new_rs).active if new_rs is not None else 0,
        ready_replicas=sum(of(rs).ready for rs in all_rs),
        available_replicas=available,
        unavailable_replicas=max(0, total - available),
        conditions=[c.model_copy() for c in conditions],
        collision_count=d.status.collision_count,
    )
    stamp = format_time(now)
    if available >= d.spec.replicas - max_unavailable:
        cond = condition(
            "Available", "True", MIN_AVAILABLE, "Deployment has minimum availability.", stamp
        )
    else:
        cond = condition(
            "Available",
            "False",
            MIN_UNAVAILABLE,
            "Deployment does not have minimum availability.",
            stamp,
        )
    set_deployment_condition(status.conditions, cond)
    return status


def deployment_complete(d: Deployment, status: DeploymentStatus) -> bool:
    """All replicas updated and available, none of the old left (``DeploymentComplete``)."""
    want = d.spec.replicas
    return (
        status.updated_replicas == want
        and status.replicas == want
        and status.available_replicas == want
        and (status.observed_generation or 0) >= (d.metadata.generation or 0)
    )


def deployment_progressing(d: Deployment, status: DeploymentStatus) -> bool:
    """Something moved since the last status: more updated, ready or available replicas, or
    fewer old ones (``DeploymentProgressing``)."""
    old = d.status
    return (
        status.updated_replicas > old.updated_replicas
        or (status.replicas - status.updated_replicas) < (old.replicas - old.updated_replicas)
        or status.ready_replicas > old.ready_replicas
        or status.available_replicas > old.available_replicas
    )


def deployment_timed_out(d: Deployment, status: DeploymentStatus, now: float) -> bool:
    cond = get_condition(status.conditions, "Progressing")
    if cond is None or cond.reason == NEW_RS_AVAILABLE:
        return False
    if cond.reason == TIMED_OUT:
        return True
    if not cond.last_update_time:
        return False
    return parse_time(cond.last_update_time) + d.spec.progress_deadline_seconds < now


def update_progress(
    d: Deployment, status: DeploymentStatus, new_rs: ReplicaSet | None, now: float
) -> float | None:
    """Set the Progressing condition in ``status`` (``syncRolloutStatus``). Returns the
    seconds after which the deadline must be checked again, if the rollout is not done."""
    current = get_condition(d.status.conditions, "Progressing")
    complete_before = (
        status.replicas == status.updated_replicas
        and current is not None
        and current.reason == NEW_RS_AVAILABLE
    )
    if complete_before or d.spec.paused:
        return None
    subject = f'ReplicaSet "{new_rs.metadata.name}"' if new_rs else f'Deployment "{d.name}"'
    stamp = format_time(now)
    if deployment_complete(d, status):
        set_deployment_condition(
            status.conditions,
            condition(
                "Progressing",
                "True",
                NEW_RS_AVAILABLE,
                f"{subject} has successfully progressed.",
                stamp,
            ),
        )
        return None
    if deployment_progressing(d, status):
        cond = condition("Progressing", "True", RS_UPDATED, f"{subject} is progressing.", stamp)
        existing = get_condition(status.conditions, "Progressing")
        if existing is not None and existing.status == "True":
            cond.last_transition_time = existing.last_transition_time
        status.conditions[:] = [c for c in status.conditions if c.type != "Progressing"]
        status.conditions.append(cond)
    elif deployment_timed_out(d, status, now):
        set_deployment_condition(
            status.conditions,
            condition(
                "Progressing", "False", TIMED_OUT, f"{subject} has timed out progressing.", stamp
            ),
        )
        return None
    cond_now = get_condition(status.conditions, "Progressing")
    if cond_now is None or cond_now.status != "True" or not cond_now.last_update_time:
        return None
    return max(0.0, parse_time(cond_now.last_update_time) + d.spec.progress_deadline_seconds - now)


def paused_condition(d: Deployment, conditions: list[Condition], now: float) -> None:
    """Progressing=Unknown DeploymentPaused / DeploymentResumed when spec.paused flips
    (``checkPausedConditions``); a timed-out rollout keeps its condition."""
    cond = get_condition(conditions, "Progressing")
    if cond is not None and cond.reason == TIMED_OUT:
        return
    paused_shown = cond is not None and cond.reason == PAUSED
    stamp = format_time(now)
    if d.spec.paused and not paused_shown:
        set_deployment_condition(
            conditions, condition("Progressing", "Unknown", PAUSED, "Deployment is paused", stamp)
        )
    elif not d.spec.paused and paused_shown:
        set_deployment_condition(
            conditions,
            condition("Progressing", "Unknown", RESUMED, "Deployment is resumed", stamp),
        )
