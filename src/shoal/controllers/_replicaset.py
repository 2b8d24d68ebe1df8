"""The ReplicaSet controller: keeps ``spec.replicas`` active pods for every ReplicaSet.

Follows Kubernetes' ``pkg/controller/replicaset``: claim pods (adopt matching orphans, release
owned pods that stopped matching), then — unless earlier creates/deletes have not been seen yet
(expectations) — create the missing pods in slow-start batches or delete the surplus, cheapest
first, and finally write ``status`` if it changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from shoal._util import Clock, format_time
from shoal.api import (
    Condition,
    ObjectMeta,
    Pod,
    ReplicaSet,
    ReplicaSetStatus,
    Selector,
    get_condition,
    set_condition,
)
from shoal.client import Client
from shoal.controllers._base import Controller, SharedInformers, slow_start_batch
from shoal.controllers._expectations import Expectations
from shoal.controllers._ownership import claim
from shoal.controllers._pods import (
    controller_ref,
    is_active,
    is_available,
    is_ready,
    pods_to_delete,
    seconds_until_available,
)
from shoal.errors import NotFoundError

log = logging.getLogger("shoal.controllers.replicaset")

COMPONENT = "replicaset-controller"
BURST_REPLICAS = 500
"""At most this many pods are created or deleted by one reconcile (Kubernetes' burstReplicas)."""


def pod_from_template(rs: ReplicaSet) -> Pod:
    """A new pod for ``rs``: its template, named ``<rs>-xxxxx``, controlled by ``rs``."""
    tmpl = rs.spec.template
    return Pod(
        metadata=ObjectMeta(
            generate_name=f"{rs.metadata.name}-",
            namespace=rs.namespace or "default",
            labels=dict(tmpl.metadata.labels),
            annotations=dict(tmpl.metadata.annotations),
            owner_references=[controller_ref(rs)],
        ),
        spec=tmpl.spec.model_copy(deep=True),
    )


def calculate_status(
    rs: ReplicaSet,
    pods: Sequence[Pod],
    now: float,
    manage_error: Exception | None = None,
    diff: int = 0,
) -> ReplicaSetStatus:
    """The status ``rs`` should report for its active pods ``pods``.

    ``ReplicaFailure`` is set while creating (``diff`` < 0) or deleting (``diff`` > 0) pods
    fails, and removed once a reconcile manages the replicas without error.
    """
    labels = rs.spec.template.metadata.labels
    conditions = [c.model_copy() for c in rs.status.conditions]
    if manage_error is not None and diff != 0:
        set_condition(
            conditions,
            Condition(
                type="ReplicaFailure",
                status="True",
                reason="FailedCreate" if diff < 0 else "FailedDelete",
                message=str(manage_error),
            ),
            format_time(now),
        )
    elif manage_error is None and get_condition(conditions, "ReplicaFailure") is not None:
        conditions = [c for c in conditions if c.type != "ReplicaFailure"]
    return ReplicaSetStatus(
        replicas=len(pods),
        fully_labeled_replicas=sum(
            1 for p in pods if all(p.metadata.labels.get(k) == v for k, v in labels.items())
        ),
        ready_replicas=sum(1 for p in pods if is_ready(p)),
        available_replicas=sum(1 for p in pods if is_available(p, rs.spec.min_ready_seconds, now)),
        observed_generation=rs.metadata.generation,
        conditions=conditions,
    )


def _rs_key(pod: Pod) -> str | None:
    ref = pod.metadata.controller_ref()
    if ref is None or ref.kind != "ReplicaSet":
        return None
    return f"{pod.namespace}/{ref.name}"


class ReplicaSetController(Controller):
    name = "replicaset-controller"

    def __init__(
        self,
        client: Client,
        informers: SharedInformers,
        *,
        workers: int = 2,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(client, workers=workers, clock=clock)
        self.informers = informers
        self.rs_informer = informers.replicasets
        self.pod_informer = informers.pods
        self.expectations = Expectations(self.clock)
        self.rs_informer.add_handler(self._on_rs)
        self.pod_informer.add_handler(self._on_pod)

    # --- event handlers: map each event to the ReplicaSet keys it may affect ----------------

    def _on_rs(self, kind: str, old: ReplicaSet | None, new: ReplicaSet | None) -> None:
        rs = new or old
        assert rs is not None
        if kind == "DELETED":
            self.expectations.forget(rs.key)
        self.enqueue(rs.key)

    def _enqueue_matching(self, pod: Pod) -> None:
        """An orphan may be adopted by any ReplicaSet of its namespace whose selector
        matches it."""
        for rs in self.informers.in_namespace(self.rs_informer, pod.namespace):
            if rs.spec.selector.to_selector().matches(pod.metadata.labels):
                self.enqueue(rs.key)

    def _on_pod(self, kind: str, old: Pod | None, new: Pod | None) -> None:
        if kind == "ADDED" and new is not None:
            key = _rs_key(new)
            if key is None:
                self._enqueue_matching(new)
                return
            if new.metadata.deletion_timestamp is not None:
                self.expectations.deletion_observed(key, new.key)
            else:
                self.expectations.creation_observed(key)
            self.enqueue(key)
        elif kind == "MODIFIED" and new is not None and old is not None:
            new_key, old_key = _rs_key(new), _rs_key(old)
            if new.metadata.deletion_timestamp is not None and new_key is not None:
                self.expectations.deletion_observed(new_key, new.key)
            if old_key is not None and old_key != new_key:
                self.enqueue(old_key)
            if new_key is not None:
                if (
                    new_key == old_key
                    and new.metadata.deletion_timestamp is None
                    and old.metadata.labels == new.metadata.labels
                    and new.status.phase not in ("Succeeded", "Failed")
                ):
                    self.enqueue_status(new_key)  # readiness/phase churn: only status moves
                else:
                    self.enqueue(new_key)
            elif old.metadata.labels != new.metadata.labels or old_key != new_key:
                self._enqueue_matching(new)
        elif kind == "DELETED" and old is not None:
            key = _rs_key(old)
            if key is not None:
                self.expectations.deletion_observed(key, old.key)
                self.enqueue(key)

    # --- reconcile ----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        rs = self.rs_informer.get(key)
        if rs is None:
            self.expectations.forget(key)
            return
        selector: Selector = rs.spec.selector.to_selector()
        candidates = [
            p for p in self.informers.in_namespace(self.pod_informer, rs.namespace) if is_active(p)
        ]
        pods = await claim(self.client.pods, rs, selector, candidates)

        manage_error: Exception | None = None
        diff = len(pods) - rs.spec.replicas
        if self.expectations.satisfied(key) and rs.metadata.deletion_timestamp is None:
            try:
                await self._manage_replicas(rs, pods, diff)
            except Exception as exc:
                manage_error = exc

        now = self.clock.now()
        status = calculate_status(rs, pods, now, manage_error, diff)
        if status.to_dict() != rs.status.to_dict():
            try:
                await self.client.replicasets.update_status(
                    rs.model_copy(update={"status": status})
                )
            except NotFoundError:
                return
        if manage_error is not None:
            raise manage_error
        waits = [
            w
            for p in pods
            if (w := seconds_until_available(p, rs.spec.min_ready_seconds, now)) is not None
        ]
        if waits:
            # A Ready pod becomes available only after minReadySeconds: look again then.
            self.queue.add_after(key, min(waits) + 0.1)

    async def _manage_replicas(self, rs: ReplicaSet, pods: list[Pod], diff: int) -> None:
        key = rs.key
        if diff < 0:
            count = min(-diff, BURST_REPLICAS)
            self.expectations.expect_creations(key, count)
            created, error = await slow_start_batch(count, lambda: self._create_pod(rs))
            if created < count:
                # The pods that failed or were never tried will not show up as ADDED.
                self.expectations.creation_observed(key, count - created)
            if error is not None:
                raise error
        elif diff > 0:
            victims = pods_to_delete(pods, min(diff, BURST_REPLICAS))
            self.expectations.expect_deletions(key, [p.key for p in victims])
            results = await asyncio.gather(
                *(self._delete_pod(rs, p) for p in victims), return_exceptions=True
            )
            errors: list[Exception] = []
            for pod, result in zip(victims, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, Exception):
                        raise result
                    self.expectations.deletion_observed(key, pod.key)
                    errors.append(result)
            if errors:
                raise errors[0]

    async def _create_pod(self, rs: ReplicaSet) -> None:
        try:
            pod = await self.client.pods.create(pod_from_template(rs))
        except Exception as exc:
            await self.client.record_event(
                rs, "FailedCreate", f"Error creating: {exc}", "Warning", COMPONENT
            )
            raise
        await self.client.record_event(
            rs, "SuccessfulCreate", f"Created pod: {pod.metadata.name}", component=COMPONENT
        )

    async def _delete_pod(self, rs: ReplicaSet, pod: Pod) -> None:
        try:
            await self.client.pods.delete(pod.metadata.name, pod.namespace, uid=pod.metadata.uid)
        except NotFoundError:
            self.expectations.deletion_observed(rs.key, pod.key)
            return
        await self.client.record_event(
            rs, "SuccessfulDelete", f"Deleted pod: {pod.metadata.name}", component=COMPONENT
        )
