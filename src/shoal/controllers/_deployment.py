"""The Deployment controller: one ReplicaSet per pod template, rolled from old to new.

Follows Kubernetes' ``pkg/controller/deployment``: claim ReplicaSets, find (or create) the one
for the current template and give it the highest revision, then either apply a scaling event
proportionally, or take one RollingUpdate / Recreate step; prune old ReplicaSets beyond
``revisionHistoryLimit`` once a rollout completes, and report status. The arithmetic lives in
``rollout.py`` and the status rules in ``_deployment_util.py``; this module only reads caches
and writes through the client.

Availability is counted from the pod cache (capped at each ReplicaSet's spec.replicas), not
from ReplicaSet status: the pod cache is never behind the ReplicaSet controller's status
writes, so a step cannot act on an availability that is already gone.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from shoal._util import Clock, format_time
from shoal.api import (
    Condition,
    Deployment,
    ObjectMeta,
    Pod,
    ReplicaSet,
    ReplicaSetSpec,
    get_condition,
)
from shoal.client import Client
from shoal.controllers import rollout
from shoal.controllers._base import Controller, SharedInformers
from shoal.controllers._deployment_util import (
    DESIRED_REPLICAS,
    FOUND_NEW_RS,
    MAX_REPLICAS,
    NEW_RS_CREATED,
    POD_TEMPLATE_HASH,
    REVISION,
    PodCounts,
    annotation_int,
    calculate_status,
    condition,
    creation_time,
    deployment_complete,
    equal_ignore_hash,
    find_new_replicaset,
    paused_condition,
    revision_of,
    set_deployment_condition,
    template_hash,
    update_progress,
)
from shoal.controllers._ownership import claim
from shoal.controllers._pods import (
    controller_ref,
    is_active,
    is_available,
    is_controlled_by,
    is_ready,
    is_terminal,
    ready_since,
)
from shoal.errors import AlreadyExistsError, NotFoundError

log = logging.getLogger("shoal.controllers.deployment")

COMPONENT = "deployment-controller"


@dataclass
class _Sync:
    """The state one reconcile works on; replaced objects are the ones our writes returned."""

    d: Deployment
    rss: dict[str, ReplicaSet]
    counts: dict[str, PodCounts]
    conditions: list[Condition]
    now: float
    limits: rollout.Limits


def _limits(d: Deployment) -> rollout.Limits:
    ru = d.spec.strategy.rolling_update
    rolling = d.spec.strategy.type == "RollingUpdate"
    if ru is None:
        return rollout.rolling_limits(d.spec.replicas, rolling=rolling)
    return rollout.rolling_limits(
        d.spec.replicas, ru.max_surge, ru.max_unavailable, rolling=rolling
    )


def _pod_signature(pod: Pod) -> tuple[object, ...]:
    ref = pod.metadata.controller_ref()
    return (
        ref.uid if ref else None,
        is_active(pod),
        is_terminal(pod),
        is_ready(pod),
        ready_since(pod),
    )


class DeploymentController(Controller):
    name = "deployment-controller"

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
        self.d_informer = informers.deployments
        self.rs_informer = informers.replicasets
        self.pod_informer = informers.pods
        self.d_informer.add_handler(self._on_deployment)
        self.rs_informer.add_handler(self._on_rs)
        self.pod_informer.add_handler(self._on_pod)

    # --- event handlers ----------------------------------------------------------------------

    def _on_deployment(self, _kind: str, old: Deployment | None, new: Deployment | None) -> None:
        d = new or old
        assert d is not None
        self.enqueue(d.key)

    def _deployment_key_of(self, rs: ReplicaSet) -> str | None:
        ref = rs.metadata.controller_ref()
        if ref is None or ref.kind != "Deployment":
            return None
        return f"{rs.namespace}/{ref.name}"

    def _on_rs(self, kind: str, old: ReplicaSet | None, new: ReplicaSet | None) -> None:
        rs = new or old
        assert rs is not None
        key = self._deployment_key_of(rs)
        if old is not None and new is not None:
            old_key = self._deployment_key_of(old)
            if old_key is not None and old_key != key:
                self.enqueue(old_key)
        if key is not None:
            if (
                kind == "MODIFIED"
                and old is not None
                and new is not None
                and _rs_status_only(old, new)
            ):
                self.enqueue_status(key)
            else:
                self.enqueue(key)
        elif kind != "DELETED":
            for d in self.informers.in_namespace(self.d_informer, rs.namespace):
                if d.spec.selector.to_selector().matches(rs.metadata.labels):
                    self.enqueue(d.key)

    def _on_pod(self, kind: str, old: Pod | None, new: Pod | None) -> None:
        if (
            kind == "MODIFIED"
            and old is not None
            and new is not None
            and _pod_signature(old) == _pod_signature(new)
        ):
            return
        pod = new or old
        assert pod is not None
        ref = pod.metadata.controller_ref()
        if ref is None or ref.kind != "ReplicaSet":
            return
        rs = self.rs_informer.get(f"{pod.namespace}/{ref.name}")
        if rs is not None and (key := self._deployment_key_of(rs)) is not None:
            if kind == "MODIFIED" and pod.metadata.deletion_timestamp is None:
                self.enqueue_status(key)
            else:
                self.enqueue(key)

    # --- reconcile ----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        d = self.d_informer.get(key)
        if d is None:
            return
        candidates = self.informers.in_namespace(self.rs_informer, d.namespace)
        owned = await claim(self.client.replicasets, d, d.spec.selector.to_selector(), candidates)
        s = _Sync(
            d=d,
            rss={rs.metadata.name: rs for rs in owned},
            counts=self._pod_counts(d, owned),
            conditions=[c.model_copy() for c in d.status.conditions],
            now=self.clock.now(),
            limits=_limits(d),
        )
        if d.metadata.deletion_timestamp is not None:
            new, olds = self._split(s)
            await self._write_status(s, new, olds, progress=False)
            return
        paused_condition(d, s.conditions, s.now)
        if d.spec.paused:
            await self._sync_scale(s)
            return
        new, olds = self._split(s)
        if rollout.is_scaling_event(
            d.spec.replicas, self._info(s, new) if new else None, [self._info(s, r) for r in olds]
        ):
            await self._sync_scale(s)
        elif d.spec.strategy.type == "Recreate":
            await self._rollout_recreate(s)
        else:
            await self._rollout_rolling(s)

    def _pod_counts(self, d: Deployment, rss: list[ReplicaSet]) -> dict[str, PodCounts]:
        uids = {rs.metadata.uid for rs in rss}
        acc: dict[str, list[int]] = {uid: [0, 0, 0, 0] for uid in uids if uid}
        now = self.clock.now()
        for pod in self.informers.in_namespace(self.pod_informer, d.namespace):
            ref = pod.metadata.controller_ref()
            if ref is None or ref.uid not in acc or is_terminal(pod):
                continue
            c = acc[ref.uid]
            c[3] += 1
            if pod.metadata.deletion_timestamp is not None:
                continue
            c[0] += 1
            if is_ready(pod):
                c[1] += 1
            if is_available(pod, d.spec.min_ready_seconds, now):
                c[2] += 1
        return {uid: PodCounts(*c) for uid, c in acc.items()}

    def _split(self, s: _Sync) -> tuple[ReplicaSet | None, list[ReplicaSet]]:
        new = find_new_replicaset(s.d, list(s.rss.values()))
        olds = [rs for rs in s.rss.values() if new is None or rs.metadata.uid != new.metadata.uid]
        return new, olds

    def _info(self, s: _Sync, rs: ReplicaSet) -> rollout.RSInfo:
        c = s.counts.get(rs.metadata.uid or "", PodCounts())
        return rollout.RSInfo(
            name=rs.metadata.name,
            replicas=rs.spec.replicas,
            available=min(c.available, rs.spec.replicas),
            created=creation_time(rs),
            revision=revision_of(rs),
            desired_replicas=annotation_int(rs, DESIRED_REPLICAS),
            max_replicas=annotation_int(rs, MAX_REPLICAS),
            actual=max(c.existing, rs.status.replicas),
            settled=(rs.status.observed_generation or 0) >= (rs.metadata.generation or 0),
            deleting=rs.metadata.deletion_timestamp is not None,
        )

    # --- the new ReplicaSet and revisions -----------------------------------------------------

    async def _sync_revision(
        self, s: _Sync, create: bool
    ) -> tuple[ReplicaSet | None, list[ReplicaSet]]:
        """``getAllReplicaSetsAndSyncRevision``: the new ReplicaSet gets revision
        max(old revisions)+1 (so a template that comes back — a rollback — becomes the
        newest revision again), and the Deployment's revision annotation follows it."""
        new, olds = self._split(s)
        revision = max((revision_of(rs) for rs in olds), default=0) + 1
        d = s.d
        if new is not None:
            stale_revision = revision_of(new) < revision
            if stale_revision or new.spec.min_ready_seconds != d.spec.min_ready_seconds:
                rs = new.model_copy(deep=True)
                if stale_revision:
                    rs.metadata.annotations[REVISION] = str(revision)
                rs.spec.min_ready_seconds = d.spec.min_ready_seconds
                new = await self.client.replicasets.update(rs)
                s.rss[new.metadata.name] = new
            if get_condition(s.conditions, "Progressing") is None:
                set_deployment_condition(
                    s.conditions,
                    condition(
                        "Progressing",
                        "True",
                        FOUND_NEW_RS,
                        f'Found new replica set "{new.metadata.name}"',
                        format_time(s.now),
                    ),
                )
        elif create:
            new = await self._create_new_rs(s, olds, revision)
            if new is None:
                return None, olds
        if new is not None:
            await self._set_deployment_revision(s, revision_of(new))
        return new, olds

    async def _create_new_rs(
        self, s: _Sync, olds: list[ReplicaSet], revision: int
    ) -> ReplicaSet | None:
        d = s.d
        h = template_hash(d.spec.template, d.status.collision_count)
        template = d.spec.template.model_copy(deep=True)
        template.metadata.labels[POD_TEMPLATE_HASH] = h
        selector = d.spec.selector.model_copy(deep=True)
        selector.match_labels[POD_TEMPLATE_HASH] = h
        desired = d.spec.replicas
        if d.spec.strategy.type == "Recreate":
            replicas = desired
        else:
            probe = rollout.RSInfo(name="", replicas=0)
            replicas = rollout.new_rs_target(
                desired, s.limits, probe, [self._info(s, r) for r in olds]
            )
        rs = ReplicaSet(
            metadata=ObjectMeta(
                name=f"{d.name}-{h}",
                namespace=d.namespace,
                labels=dict(template.metadata.labels),
                annotations={
                    REVISION: str(revision),
                    DESIRED_REPLICAS: str(desired),
                    MAX_REPLICAS: str(desired + s.limits.surge),
                },
                owner_references=[controller_ref(d)],
            ),
            spec=ReplicaSetSpec(
                replicas=replicas,
                selector=selector,
                template=template,
                min_ready_seconds=d.spec.min_ready_seconds,
            ),
        )
        try:
            created = await self.client.replicasets.create(rs)
        except AlreadyExistsError:
            existing = await self.client.replicasets.get(rs.metadata.name, d.namespace)
            if is_controlled_by(existing, d) and equal_ignore_hash(
                existing.spec.template, d.spec.template
            ):
                s.rss[existing.metadata.name] = existing  # our cache was behind
                return existing
            # A different template hashed to the same name: bump collisionCount so the next
            # hash differs; the status write re-queues the Deployment.
            bumped = d.model_copy(deep=True)
            bumped.status.collision_count = (d.status.collision_count or 0) + 1
            await self.client.deployments.update_status(bumped)
            return None
        s.rss[created.metadata.name] = created
        set_deployment_condition(
            s.conditions,
            condition(
                "Progressing",
                "True",
                NEW_RS_CREATED,
                f'Created new replica set "{created.metadata.name}"',
                format_time(s.now),
            ),
        )
        await self.client.record_event(
            d,
            "ScalingReplicaSet",
            f"Scaled up replica set {created.metadata.name} from 0 to {replicas}",
            component=COMPONENT,
        )
        return created

    async def _set_deployment_revision(self, s: _Sync, revision: int) -> None:
        if s.d.metadata.annotations.get(REVISION) == str(revision):
            return
        s.d = await self.client.deployments.patch(
            s.d.name, {"metadata": {"annotations": {REVISION: str(revision)}}}, s.d.namespace
        )

    # --- scaling --------------------------------------------------------------------------------

    async def _scale(self, s: _Sync, name: str, replicas: int) -> None:
        """Set a ReplicaSet's replicas and the desired/max-replicas annotations that mark
        which Deployment size it was scaled for (``scaleReplicaSet``)."""
        rs = s.rss[name]
        desired = str(s.d.spec.replicas)
        maximum = str(s.d.spec.replicas + s.limits.surge)
        notes = rs.metadata.annotations
        if (
            rs.spec.replicas == replicas
            and notes.get(DESIRED_REPLICAS) == desired
            and notes.get(MAX_REPLICAS) == maximum
        ):
            return
        copy = rs.model_copy(deep=True)
        copy.spec.replicas = replicas
        copy.metadata.annotations[DESIRED_REPLICAS] = desired
        copy.metadata.annotations[MAX_REPLICAS] = maximum
        s.rss[name] = await self.client.replicasets.update(copy)
        if rs.spec.replicas != replicas:
            direction = "up" if replicas > rs.spec.replicas else "down"
            await self.client.record_event(
                s.d,
                "ScalingReplicaSet",
                f"Scaled {direction} replica set {name} from {rs.spec.replicas} to {replicas}",
                component=COMPONENT,
            )

    async def _apply(self, s: _Sync, targets: dict[str, int]) -> None:
        for name, replicas in targets.items():
            if name in s.rss:
                await self._scale(s, name, replicas)

    async def _sync_scale(self, s: _Sync) -> None:
        """``sync``: a paused Deployment, or a change of spec.replicas: resize the existing
        ReplicaSets (proportionally during a rollout) without starting a new rollout."""
        new, olds = await self._sync_revision(s, create=False)
        targets = rollout.scale_targets(
            s.d.spec.replicas,
            s.limits,
            self._info(s, new) if new is not None else None,
            [self._info(s, r) for r in olds],
            status_replicas=s.d.status.replicas,
            rolling=s.d.spec.strategy.type == "RollingUpdate",
        )
        await self._apply(s, targets)
        if s.d.spec.paused:
            await self._cleanup(s, olds)
        await self._write_status(s, new, olds, progress=False)

    async def _rollout_rolling(self, s: _Sync) -> None:
        new, olds = await self._sync_revision(s, create=True)
        if new is None:
            return
        desired = s.d.spec.replicas
        targets = rollout.rolling_step(
            desired, s.limits, self._info(s, new), [self._info(s, r) for r in olds]
        )
        await self._apply(s, targets)
        if not targets and rollout.rolling_complete(
            desired, self._info(s, new), [self._info(s, r) for r in olds]
        ):
            await self._cleanup(s, olds)
        await self._write_status(s, new, olds, progress=True)

    async def _rollout_recreate(self, s: _Sync) -> None:
        new, olds = await self._sync_revision(s, create=False)
        old_pods = any(s.counts.get(rs.metadata.uid or "", PodCounts()).existing for rs in olds)
        phase, targets = rollout.recreate_step(
            s.d.spec.replicas,
            self._info(s, new) if new is not None else None,
            [self._info(s, r) for r in olds],
            old_pods,
        )
        if phase == "scale-up-new" and new is None:
            new, olds = await self._sync_revision(s, create=True)
        await self._apply(s, targets)
        if phase == "done":
            await self._cleanup(s, olds)
        await self._write_status(s, new, olds, progress=True)

    async def _cleanup(self, s: _Sync, olds: list[ReplicaSet]) -> None:
        """Delete old ReplicaSets beyond revisionHistoryLimit (only empty, settled ones)."""
        infos = [self._info(s, s.rss.get(rs.metadata.name, rs)) for rs in olds]
        for name in rollout.history_to_delete(infos, s.d.spec.revision_history_limit):
            rs = s.rss[name]
            log.info("deployment %s: deleting old replica set %s", s.d.key, name)
            with contextlib.suppress(NotFoundError):
                await self.client.replicasets.delete(name, rs.namespace, uid=rs.metadata.uid)
            s.rss.pop(name, None)

    # --- status -------------------------------------------------------------------------------

    async def _write_status(
        self, s: _Sync, new: ReplicaSet | None, olds: list[ReplicaSet], *, progress: bool
    ) -> None:
        new_rs = s.rss.get(new.metadata.name) if new is not None else None
        all_rs = [s.rss[rs.metadata.name] for rs in olds if rs.metadata.name in s.rss]
        if new_rs is not None:
            all_rs.append(new_rs)
        status = calculate_status(
            s.d, new_rs, all_rs, s.counts, s.limits.unavailable, s.conditions, s.now
        )
        recheck = update_progress(s.d, status, new_rs, s.now) if progress else None
        if status.to_dict() != s.d.status.to_dict():
            s.d = await self.client.deployments.update_status(
                s.d.model_copy(update={"status": status})
            )
        if recheck is not None and not deployment_complete(s.d, status):
            # Look again when the progress deadline would pass.
            self.queue.add_after(s.d.key, recheck + 1.0)


def _rs_status_only(old: ReplicaSet, new: ReplicaSet) -> bool:
    """Only the ReplicaSet's status moved (its spec, labels and annotations are unchanged)."""
    return (
        old.spec == new.spec
        and old.metadata.labels == new.metadata.labels
        and old.metadata.annotations == new.metadata.annotations
        and old.metadata.deletion_timestamp == new.metadata.deletion_timestamp
    )
