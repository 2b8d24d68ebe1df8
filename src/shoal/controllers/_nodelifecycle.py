"""The node lifecycle controller: notices nodes whose agent went silent and moves their pods.

Follows Kubernetes' ``pkg/controller/nodelifecycle``:

* A node whose Ready condition has not had a new ``lastHeartbeatTime`` for
  ``node_monitor_grace`` seconds gets all its conditions set to Unknown
  (``NodeStatusUnknown``, "Kubelet stopped posting node status."), and the Ready condition of
  its pods is set to False so Endpoints and rollouts stop counting them at once.
* Pods on a node that has been not-Ready (Unknown, or False as reported by its agent) for a
  further ``pod_eviction_timeout`` seconds are deleted with grace period 0: nobody is left to
  stop them gracefully, and their controllers create replacements the scheduler puts elsewhere.
* Pods bound to a node that no longer exists are deleted the same way (Kubernetes' PodGC).

Staleness is measured as Kubernetes does, on this controller's own clock: from the moment it
*saw* the heartbeat change, not from the timestamp the agent wrote, so skew between machines
does not matter. Only at first sight (e.g. after a restart) is the written timestamp trusted.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from shoal._util import Clock, format_time, parse_time
from shoal.api import Condition, Node, Pod, get_condition, set_condition
from shoal.client import Client
from shoal.controllers._base import Controller, SharedInformers, periodic
from shoal.controllers._pods import is_terminal
from shoal.errors import ConflictError, NotFoundError

log = logging.getLogger("shoal.controllers.nodelifecycle")

COMPONENT = "node-controller"
UNKNOWN_REASON = "NodeStatusUnknown"
UNKNOWN_MESSAGE = "Kubelet stopped posting node status."
NEVER_REASON = "NodeStatusNeverUpdated"
NEVER_MESSAGE = "Kubelet never posted node status."


@dataclass
class _Health:
    heartbeat: str | None
    """The Ready condition's lastHeartbeatTime we saw last."""
    probe: float
    """Monotonic time at which that heartbeat was new."""
    not_ready_since: float | None = None
    """Monotonic time since which the node is not Ready (None while Ready)."""


def _age(stamp: str | None, now: float) -> float:
    if not stamp:
        return 0.0
    try:
        return max(0.0, now - parse_time(stamp))
    except ValueError:
        return 0.0


def mark_unknown(node: Node, now: str) -> Node:
    """A copy of ``node`` with every condition Unknown (heartbeat times kept)."""
    copy = node.model_copy(deep=True)
    conditions = copy.status.conditions
    if get_condition(conditions, "Ready") is None:
        conditions.append(
            Condition(
                type="Ready",
                status="Unknown",
                reason=NEVER_REASON,
                message=NEVER_MESSAGE,
                last_heartbeat_time=node.metadata.creation_timestamp,
                last_transition_time=now,
            )
        )
    for cond in conditions:
        if cond.status != "Unknown":
            cond.status = "Unknown"
            cond.reason = UNKNOWN_REASON
            cond.message = UNKNOWN_MESSAGE
            cond.last_transition_time = now
    return copy


def mark_pod_not_ready(pod: Pod, node_name: str, now: str) -> Pod | None:
    """A copy of ``pod`` with Ready=False (and its containers not ready), or None if it
    already says so."""
    ready = get_condition(pod.status.conditions, "Ready")
    if ready is not None and ready.status == "False":
        return None
    copy = pod.model_copy(deep=True)
    set_condition(
        copy.status.conditions,
        Condition(
            type="Ready",
            status="False",
            reason="NodeNotReady",
            message=f'node "{node_name}" is not ready',
        ),
        now,
    )
    for cs in copy.status.container_statuses:
        cs.ready = False
    return copy


class NodeLifecycleController(Controller):
    """Keys are node names; a periodic monitor queues every node, so the decisions are
    level-triggered on time as well as on events."""

    name = "node-lifecycle-controller"

    def __init__(
        self,
        client: Client,
        informers: SharedInformers,
        *,
        clock: Clock | None = None,
        node_monitor_grace: float = 10.0,
        pod_eviction_timeout: float = 20.0,
        node_monitor_period: float | None = None,
        workers: int = 1,
    ) -> None:
        super().__init__(client, workers=workers, clock=clock)
        self.informers = informers
        self.grace = node_monitor_grace
        self.eviction_timeout = pod_eviction_timeout
        self.period = (
            node_monitor_period
            if node_monitor_period is not None
            else min(5.0, max(0.05, node_monitor_grace / 4))
        )
        self.nodes = informers.nodes
        self.pods = informers.pods
        self._health: dict[str, _Health] = {}
        self._pods_by_node: dict[str, dict[str, Pod]] = {}
        self._orphans: dict[str, float] = {}
        self.nodes.add_handler(self._on_node)
        self.pods.add_handler(self._on_pod)

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return [periodic(self.period, self.monitor, "node monitor")]

    # --- observation ----------------------------------------------------------------------------

    def _on_node(self, kind: str, old: Node | None, new: Node | None) -> None:
        if new is None:
            if old is not None:
                self._health.pop(old.name, None)
            return
        self._observe(new)

    def _on_pod(self, _kind: str, old: Pod | None, new: Pod | None) -> None:
        if old is not None and old.spec.node_name:
            self._pods_by_node.get(old.spec.node_name, {}).pop(old.key, None)
        if new is not None and new.spec.node_name:
            self._pods_by_node.setdefault(new.spec.node_name, {})[new.key] = new

    def pods_on(self, node_name: str) -> list[Pod]:
        return list(self._pods_by_node.get(node_name, {}).values())

    def _observe(self, node: Node) -> _Health:
        ready = get_condition(node.status.conditions, "Ready")
        heartbeat = ready.last_heartbeat_time if ready is not None else None
        mono = self.clock.monotonic()
        health = self._health.get(node.name)
        if health is None:
            first = heartbeat or node.metadata.creation_timestamp
            health = _Health(heartbeat, mono - _age(first, self.clock.now()))
            self._health[node.name] = health
        elif heartbeat != health.heartbeat:
            health.heartbeat = heartbeat
            health.probe = mono
        return health

    async def monitor(self) -> None:
        """One pass: queue every node, and clean up pods bound to nodes that are gone."""
        for name in list(self.nodes.cache):
            self.enqueue(name)
        await self._delete_orphaned_pods()

    # --- reconcile ------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        node = self.nodes.get(key)
        if node is None:
            return
        health = self._observe(node)
        mono = self.clock.monotonic()
        ready = get_condition(node.status.conditions, "Ready")
        if mono - health.probe > self.grace and (ready is None or ready.status != "Unknown"):
            node = await self._mark_unknown(node)
            ready = get_condition(node.status.conditions, "Ready")
        if ready is not None and ready.status == "True":
            health.not_ready_since = None
            return
        if health.not_ready_since is None:
            since = ready.last_transition_time if ready is not None else None
            health.not_ready_since = mono - _age(since, self.clock.now())
        pods = [p for p in self.pods_on(node.name) if not is_terminal(p)]
        if ready is not None and ready.status == "Unknown":
            await self._mark_pods_not_ready(node, pods)
        if pods and mono - health.not_ready_since >= self.eviction_timeout:
            await self._evict(node, pods)

    async def _mark_unknown(self, node: Node) -> Node:
        log.warning(
            "node %s: no heartbeat for %.1fs; marking its status Unknown", node.name, self.grace
        )
        updated = await self.client.nodes.update_status(
            mark_unknown(node, format_time(self.clock.now()))
        )
        await self.client.record_event(
            updated,
            "NodeNotReady",
            f"Node {node.name} status is now: NodeNotReady",
            component=COMPONENT,
        )
        return updated

    async def _mark_pods_not_ready(self, node: Node, pods: list[Pod]) -> None:
        now = format_time(self.clock.now())
        for pod in pods:
            changed = mark_pod_not_ready(pod, node.name, now)
            if changed is None:
                continue
            try:
                await self.client.pods.update_status(changed)
            except (ConflictError, NotFoundError):
                continue  # the next monitor pass looks again

    async def _evict(self, node: Node, pods: list[Pod]) -> None:
        log.warning(
            "node %s: not ready for %.1fs; deleting its %d pod(s)",
            node.name,
            self.eviction_timeout,
            len(pods),
        )
        await self.client.record_event(
            node,
            "DeletingAllPods",
            f"Deleting all Pods from Node {node.name}.",
            component=COMPONENT,
        )
        for pod in pods:
            await self._force_delete(pod)

    async def _force_delete(self, pod: Pod) -> None:
        with contextlib.suppress(NotFoundError, ConflictError):
            await self.client.pods.delete(
                pod.metadata.name, pod.namespace, grace_period_seconds=0, uid=pod.metadata.uid
            )

    async def _delete_orphaned_pods(self) -> None:
        """Pods bound to a node that does not exist (confirmed with the server) for longer
        than the eviction timeout are deleted."""
        mono = self.clock.monotonic()
        seen: set[str] = set()
        for node_name, pods in list(self._pods_by_node.items()):
            if not pods or self.nodes.get(node_name) is not None:
                continue
            for pod in list(pods.values()):
                seen.add(pod.key)
                first = self._orphans.setdefault(pod.key, mono)
                if mono - first < self.eviction_timeout:
                    continue
                try:
                    await self.client.nodes.get(node_name)
                    continue
                except NotFoundError:
                    pass
                log.warning("pod %s is bound to missing node %s; deleting it", pod.key, node_name)
                await self._force_delete(pod)
        for key in list(self._orphans):
            if key not in seen:
                del self._orphans[key]
