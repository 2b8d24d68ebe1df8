"""Deployment rollout arithmetic, as Kubernetes' deployment controller does it — and nothing
else: no I/O, no asyncio, no API objects. The controller summarises each ReplicaSet as an
``RSInfo`` and asks these functions what each ReplicaSet's ``spec.replicas`` should become.

The rules (from ``pkg/controller/deployment/rolling.go``, ``sync.go`` and
``deployment/util``):

* ``maxSurge`` / ``maxUnavailable`` are ints or percentages of ``spec.replicas``; surge rounds
  **up**, unavailable rounds **down**; if both come out 0, unavailable becomes 1 (otherwise no
  progress would be possible).
* A rolling step either scales the new ReplicaSet **up** (to at most ``replicas + maxSurge``
  pods in total) or, when it cannot, scales old ReplicaSets **down**: first the old replicas
  that are not available anyway (oldest ReplicaSet first), then as many as the available pods
  above ``replicas - maxUnavailable`` allow. Only *available* pods count, so an update whose
  new pods never become ready stalls instead of taking the service down.
* A change of ``spec.replicas`` in the middle of a rollout is spread over the active
  ReplicaSets in proportion to their size (``scale``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

IntOrPercent = int | str

_PERCENT = re.compile(r"^\s*(\d+)\s*%\s*$")


@dataclass(frozen=True)
class RSInfo:
    """What the arithmetic needs to know about one ReplicaSet."""

    name: str
    replicas: int
    """spec.replicas."""
    available: int = 0
    """Available pods (Ready for minReadySeconds). Callers cap it at ``replicas``: pods above
    spec.replicas are about to be deleted, and counting them would let a rollout take down
    more than maxUnavailable."""
    created: float = 0.0
    """Creation time; only the order matters (older ReplicaSets are scaled down first)."""
    revision: int = 0
    desired_replicas: int | None = None
    """The ``deployment.kubernetes.io/desired-replicas`` annotation: the Deployment's replicas
    when this ReplicaSet was last scaled (a differing value signals a scaling event)."""
    max_replicas: int | None = None
    """The ``deployment.kubernetes.io/max-replicas`` annotation: replicas + maxSurge at that
    time, the base for proportional scaling."""
    actual: int = 0
    """Pods that still exist (status.replicas); history cleanup waits for 0."""
    settled: bool = True
    """Its status has observed its latest spec (status.observedGeneration >= generation)."""
    deleting: bool = False
    """It has a deletionTimestamp."""


@dataclass(frozen=True)
class Limits:
    """A Deployment's resolved maxSurge and maxUnavailable, in pods."""

    surge: int
    unavailable: int


def scaled_value(value: IntOrPercent, total: int, round_up: bool) -> int:
    """An int as is, or a percentage of ``total`` rounded up or down
    (``GetScaledValueFromIntOrPercent``). Raises ValueError for other strings."""
    if isinstance(value, bool):
        raise ValueError(f"invalid int or percentage: {value!r}")
    if isinstance(value, int):
        return value
    m = _PERCENT.match(value)
    if m is None:
        if value.strip().isdigit():
            return int(value)
        raise ValueError(f"invalid int or percentage: {value!r}")
    pct = int(m.group(1))
    if round_up:
        return -(-pct * total // 100)
    return pct * total // 100


def resolve_fenceposts(
    max_surge: IntOrPercent, max_unavailable: IntOrPercent, desired: int
) -> tuple[int, int]:
    """(surge, unavailable) in pods; both 0 becomes (0, 1) (``ResolveFenceposts``)."""
    surge = scaled_value(max_surge, desired, round_up=True)
    unavailable = scaled_value(max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def rolling_limits(
    desired: int,
    max_surge: IntOrPercent = "25%",
    max_unavailable: IntOrPercent = "25%",
    *,
    rolling: bool = True,
) -> Limits:
    """``MaxSurge``/``MaxUnavailable`` of a Deployment: 0/0 for Recreate, unavailable 0 when
    replicas is 0 and never more than replicas."""
    if not rolling:
        return Limits(0, 0)
    surge, unavailable = resolve_fenceposts(max_surge, max_unavailable, desired)
    if desired == 0:
        unavailable = 0
    return Limits(surge, min(unavailable, desired))


def _by_age(rss: Sequence[RSInfo]) -> list[RSInfo]:
    return sorted(rss, key=lambda r: (r.created, r.name))


def new_rs_target(desired: int, limits: Limits, new: RSInfo, olds: Sequence[RSInfo]) -> int:
    """The new ReplicaSet's replicas after one scale-up step (``reconcileNewReplicaSet`` +
    ``NewRSNewReplicas``): straight to ``desired`` when above it, else up by as much as the
    surge budget ``desired + surge - (all replicas)`` allows."""
    if new.replicas >= desired:
        return desired
    current = new.replicas + sum(r.replicas for r in olds)
    max_total = desired + limits.surge
    if current >= max_total:
        return new.replicas
    return new.replicas + min(max_total - current, desired - new.replicas)


def old_rs_targets(
    desired: int, limits: Limits, new: RSInfo | None, olds: Sequence[RSInfo]
) -> dict[str, int]:
    """Scale-downs of old ReplicaSets for one step (``reconcileOldReplicaSets``): only the
    ReplicaSets whose replicas change, name -> new replicas."""
    old_total = sum(r.replicas for r in olds)
    if old_total == 0:
        return {}
    new_replicas = new.replicas if new is not None else 0
    new_available = min(new.available, new.replicas) if new is not None else 0
    min_available = desired - limits.unavailable
    new_unavailable = new_replicas - new_available
    max_scaled_down = old_total + new_replicas - min_available - new_unavailable
    if max_scaled_down <= 0:
        return {}
    ordered = _by_age(olds)
    sizes = {r.name: r.replicas for r in olds}

    # 1. Old replicas that are not available anyway go first: they cost no availability,
    #    and left alone they would block the rollout.
    cleaned = 0
    for r in ordered:
        if cleaned >= max_scaled_down:
            break
        available = min(r.available, r.replicas)
        if r.replicas == 0 or r.replicas == available:
            continue
        n = min(max_scaled_down - cleaned, r.replicas - available)
        sizes[r.name] -= n
        cleaned += n

    # 2. Then as many available ones as keep ``min_available`` pods available.
    available_total = new_available + sum(min(r.available, sizes[r.name]) for r in olds)
    if available_total > min_available:
        budget = available_total - min_available
        for r in ordered:
            if budget <= 0:
                break
            if sizes[r.name] == 0:
                continue
            n = min(sizes[r.name], budget)
            sizes[r.name] -= n
            budget -= n
    return {r.name: sizes[r.name] for r in olds if sizes[r.name] != r.replicas}


def rolling_step(
    desired: int, limits: Limits, new: RSInfo, olds: Sequence[RSInfo]
) -> dict[str, int]:
    """One rolling-update sync: scale the new ReplicaSet up if possible, otherwise the old
    ones down (``rolloutRolling``). Empty when nothing can move until pods become available."""
    target = new_rs_target(desired, limits, new, olds)
    if target != new.replicas:
        return {new.name: target}
    return old_rs_targets(desired, limits, new, olds)


def rolling_complete(desired: int, new: RSInfo, olds: Sequence[RSInfo]) -> bool:
    """Every replica is on the new ReplicaSet and available, old ones are at 0."""
    return (
        new.replicas == desired
        and min(new.available, new.replicas) == desired
        and all(r.replicas == 0 for r in olds)
    )


RecreatePhase = str
"""One of "scale-down-old", "wait-for-old-pods", "scale-up-new", "done"."""


def recreate_step(
    desired: int, new: RSInfo | None, olds: Sequence[RSInfo], old_pods_running: bool
) -> tuple[RecreatePhase, dict[str, int]]:
    """One Recreate sync (``rolloutRecreate``): all old ReplicaSets to 0, then wait until no
    old pod exists (terminating ones included), then the new ReplicaSet to ``desired``.
    ``new`` None means it does not exist yet (it is created only in "scale-up-new")."""
    down = {r.name: 0 for r in olds if r.replicas > 0}
    if down:
        return "scale-down-old", down
    if old_pods_running:
        return "wait-for-old-pods", {}
    if new is None or new.replicas != desired:
        return "scale-up-new", {new.name: desired} if new is not None else {}
    return "done", {}


# --- scaling events (spec.replicas changed) ------------------------------------------------


def is_scaling_event(desired: int, new: RSInfo | None, olds: Sequence[RSInfo]) -> bool:
    """An active ReplicaSet was last sized for a different ``spec.replicas``
    (``isScalingEvent``)."""
    return any(
        r.replicas > 0 and r.desired_replicas is not None and r.desired_replicas != desired
        for r in (*olds, *([new] if new is not None else []))
    )


def find_active_or_latest(new: RSInfo | None, olds: Sequence[RSInfo]) -> RSInfo | None:
    """The only ReplicaSet with replicas, or the newest when none has any; None when several
    are active (``FindActiveOrLatest``)."""
    newest_first = sorted(olds, key=lambda r: (r.created, r.name), reverse=True)
    active = [r for r in (*newest_first, *([new] if new is not None else [])) if r.replicas > 0]
    if not active:
        if new is not None:
            return new
        return newest_first[0] if newest_first else None
    return active[0] if len(active) == 1 else None


def _fraction(rs: RSInfo, desired: int, surge: int, status_replicas: int) -> int:
    if desired == 0:
        return -rs.replicas
    annotated = rs.max_replicas if rs.max_replicas is not None else status_replicas
    if annotated <= 0:
        return 0
    size = rs.replicas * (desired + surge) / annotated
    return math.floor(size + 0.5) - rs.replicas


def scale_targets(
    desired: int,
    limits: Limits,
    new: RSInfo | None,
    olds: Sequence[RSInfo],
    *,
    status_replicas: int = 0,
    rolling: bool = True,
) -> dict[str, int]:
    """Replicas for every ReplicaSet to touch after ``spec.replicas`` changed (``scale``):

    * one active (or, with none active, the newest) ReplicaSet takes all of ``desired``;
    * a saturated new ReplicaSet means the old ones go to 0;
    * otherwise, for rolling updates, the difference between ``desired + surge`` and the
      current total is spread over the active ReplicaSets in proportion to their share of the
      size they were scaled for (their max-replicas annotation, else ``status_replicas``),
      larger ones first; what rounding leaves over goes to the largest.

    The result names each ReplicaSet whose replicas (or annotations) should be written.
    """
    target = find_active_or_latest(new, olds)
    if target is not None:
        return {target.name: desired}
    if (
        new is not None
        and new.desired_replicas == desired
        and new.replicas == desired
        and new.available >= desired
    ):
        return {r.name: 0 for r in olds if r.replicas > 0}
    if not rolling:
        return {}
    active = [r for r in (*olds, *([new] if new is not None else [])) if r.replicas > 0]
    total = sum(r.replicas for r in active)
    allowed = desired + limits.surge if desired > 0 else 0
    to_add = allowed - total
    if to_add > 0:  # larger first; among equals the newer grows first
        order = sorted(active, key=lambda r: (-r.replicas, -r.created, r.name))
    else:  # larger first; among equals the older shrinks first
        order = sorted(active, key=lambda r: (-r.replicas, r.created, r.name))
    sizes = {r.name: r.replicas for r in order}
    added = 0
    if to_add != 0:
        for r in order:
            if added == to_add:
                break
            fraction = _fraction(r, desired, limits.surge, status_replicas)
            left = to_add - added
            share = min(fraction, left) if to_add > 0 else max(fraction, left)
            sizes[r.name] += share
            added += share
        if order:
            first = order[0].name
            sizes[first] = max(0, sizes[first] + to_add - added)
    return sizes


# --- history -------------------------------------------------------------------------------


def history_to_delete(olds: Sequence[RSInfo], limit: int) -> list[str]:
    """Old ReplicaSets beyond ``revisionHistoryLimit`` to delete, oldest revision first — only
    those scaled to 0 with no pods left and a settled status (``cleanupDeployment``)."""
    alive = [r for r in olds if not r.deleting]
    excess = len(alive) - max(0, limit)
    if excess <= 0:
        return []
    ordered = sorted(alive, key=lambda r: (r.revision, r.created, r.name))
    return [r.name for r in ordered[:excess] if r.replicas == 0 and r.actual == 0 and r.settled]
