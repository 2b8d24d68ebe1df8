"""Pure judgements about pods that several controllers share: is it active, ready, available;
which surplus pods to delete first; and the controller ownerReference.

No I/O: everything here takes objects and a time and returns data, so it is unit-tested
directly (``tests/unit/controllers/test_pods.py``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from shoal._util import parse_time
from shoal.api import OwnerReference, Pod, Resource, get_condition


def controller_ref(owner: Resource) -> OwnerReference:
    """The ownerReference a controller puts on what it manages (controller=true)."""
    return OwnerReference(
        api_version=owner.api_version,
        kind=owner.kind,
        name=owner.metadata.name,
        uid=owner.metadata.uid or "",
        controller=True,
        block_owner_deletion=True,
    )


def is_controlled_by(obj: Resource, owner: Resource) -> bool:
    ref = obj.metadata.controller_ref()
    return ref is not None and bool(owner.metadata.uid) and ref.uid == owner.metadata.uid


def is_terminal(pod: Pod) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def is_active(pod: Pod) -> bool:
    """Counts towards a controller's replicas: not finished and not being deleted
    (Kubernetes' ``FilterActivePods``)."""
    return not is_terminal(pod) and pod.metadata.deletion_timestamp is None


def is_ready(pod: Pod) -> bool:
    cond = get_condition(pod.status.conditions, "Ready")
    return cond is not None and cond.status == "True"


def ready_since(pod: Pod) -> float | None:
    """When the pod last became Ready (None when it is not Ready or the time is unknown)."""
    cond = get_condition(pod.status.conditions, "Ready")
    if cond is None or cond.status != "True" or not cond.last_transition_time:
        return None
    try:
        return parse_time(cond.last_transition_time)
    except ValueError:
        return None


def is_available(pod: Pod, min_ready_seconds: int, now: float) -> bool:
    """Ready for at least ``min_ready_seconds`` (Kubernetes' ``IsPodAvailable``)."""
    if not is_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    return since is not None and since + min_ready_seconds <= now


def seconds_until_available(pod: Pod, min_ready_seconds: int, now: float) -> float | None:
    """For a Ready pod still inside its minReadySeconds window: how long until it counts as
    available (so the controller can look again then). None otherwise."""
    if min_ready_seconds <= 0 or not is_ready(pod):
        return None
    since = ready_since(pod)
    if since is None:
        return None
    left = since + min_ready_seconds - now
    return left if left > 0 else None


def _created(pod: Pod) -> float:
    ts = pod.metadata.creation_timestamp
    if not ts:
        return math.inf  # unknown creation time sorts as the newest
    try:
        return parse_time(ts)
    except ValueError:
        return math.inf


_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_order(pods: Sequence[Pod], related: Iterable[Pod] | None = None) -> list[Pod]:
    """``pods`` sorted so the cheapest to lose comes first, as Kubernetes'
    ``ActivePodsWithRanks`` does when a ReplicaSet scales down:

    1. not yet scheduled before scheduled;
    2. Pending before Unknown before Running;
    3. not Ready before Ready;
    4. on a node crowded with related pods before on a node with fewer (spreads what stays);
    5. Ready for less time before Ready for longer;
    6. more container restarts before fewer;
    7. newer before older.

    ``related`` are the pods counted for rule 4 (default: ``pods`` themselves).
    """
    per_node = Counter(p.spec.node_name for p in (pods if related is None else related))

    def key(pod: Pod) -> tuple[int, int, int, int, float, int, float]:
        ready = is_ready(pod)
        since = ready_since(pod) if ready else None
        restarts = max((c.restart_count for c in pod.status.container_statuses), default=0)
        crowd = per_node[pod.spec.node_name] if pod.spec.node_name else 0
        return (
            1 if pod.spec.node_name else 0,
            _PHASE_ORDER.get(pod.status.phase, 3),
            1 if ready else 0,
            -crowd,
            -(since if since is not None else math.inf),
            -restarts,
            -_created(pod),
        )

    return sorted(pods, key=key)


def pods_to_delete(pods: Sequence[Pod], count: int) -> list[Pod]:
    """The ``count`` pods a controller should delete to scale down."""
    if count <= 0:
        return []
    return deletion_order(pods)[:count]
