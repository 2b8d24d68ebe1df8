"""The node agent: register the Node and heartbeat it, watch the pods bound to it, run each
through a pod worker and the runtime driver, serve container logs, and adopt whatever a
previous agent left running.

Startup order matters for "restart the agent, lose nothing": the driver recovers its
containers first, then the Node is registered, then the pod informer lists this node's
pods; each pod's worker adopts its recovered containers as they are, and only after that
full list are leftover containers (pods deleted while no agent ran) stopped and removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol, runtime_checkable

import httpx

from shoal._util import Clock, SystemClock
from shoal.agent._config import AgentConfig
from shoal.agent._context import WorkerContext
from shoal.agent._http import AgentHTTPServer, LogRef, build_app, find_worker
from shoal.agent._images import ImagePuller
from shoal.agent._network import NodeNetwork
from shoal.agent._node import NodeKeeper
from shoal.agent._podworker import PodWorker
from shoal.agent._reporter import StatusReporter
from shoal.agent._runtime import build_runtime, network_mode
from shoal.agent._stats import PodRef, StatsKeeper, Target
from shoal.agent._volumes import PodVolumes
from shoal.api import Pod
from shoal.client import Client, Informer
from shoal.errors import BadRequestError, DriverError
from shoal.runtime import ContainerStatus as RuntimeStatus
from shoal.runtime import Driver, ExitHook
from shoal.runtime.images import ImageService

log = logging.getLogger("shoal.agent")


@runtime_checkable
class _ExitNotifying(Protocol):
    """Optional driver ability: call a hook when a container exits (else the agent polls)."""

    on_exit: ExitHook | None


@runtime_checkable
class _LogManaging(Protocol):
    """Optional driver ability: cap log sizes and delete a pod's logs."""

    async def enforce_log_limits(self) -> None: ...

    def remove_logs(self, pod_uid: str) -> None: ...


@runtime_checkable
class _Closable(Protocol):
    def close(self) -> None: ...


class Agent:
    """One node's agent. ``await agent.run()`` (once per instance) until cancelled.

    On cancellation it stops what it started (tasks, HTTP endpoint, watches) and leaves the
    containers running for the next agent to adopt, unless ``stop_pods_on_exit`` is set.
    ``driver`` defaults to the one ``config.runtime`` names (``build_runtime``: a
    ProcessDriver, or a RuncDriver with an ImageService) under ``config.data_dir``; a driver
    passed in is used as is (its exit hook, if it has one, is chained while the agent runs),
    with ``images`` as where its images are pulled (None: nothing is pulled).
    Raises ConfigError for a runtime that is unknown or cannot run on this machine.
    """

    def __init__(
        self,
        client: Client,
        config: AgentConfig,
        driver: Driver | None = None,
        *,
        images: ImagePuller | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._owns_driver = driver is None
        self._image_service: ImageService | None = None
        if driver is None:
            runtime = build_runtime(config)
            driver, images = runtime.driver, runtime.images
            self._image_service = runtime.image_service
        self.driver: Driver = driver
        self.network_mode = network_mode(config, driver.name)
        """ "bridge" (pods get their own network namespaces) or "host"."""
        self.network: NodeNetwork | None = None
        self.images = images
        """Where this agent's images come from (None for the process runtime)."""
        self.volumes = PodVolumes(config.data_dir / "pods")
        self.stats = StatsKeeper(self.clock)
        self._previous_hook: ExitHook | None = None
        self._hooked = isinstance(driver, _ExitNotifying)
        if isinstance(driver, _ExitNotifying):
            previous = self._previous_hook = driver.on_exit

            def hook(status: RuntimeStatus) -> None:
                self._on_exit(status)
                if previous is not None:
                    previous(status)

            driver.on_exit = hook
        self.reporter = StatusReporter(client, coalesce=config.status_coalesce)
        self.workers: dict[str, PodWorker] = {}
        """Pod uid -> its worker, while the pod is handled by this agent."""
        self.http_port: int | None = None
        """The agent endpoint's port, once listening."""
        self.node: NodeKeeper | None = None
        self.informer: Informer[Pod] | None = None
        self.ready = asyncio.Event()
        """Set once the Node is registered and the first list of pods was taken over."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._finished: set[str] = set()
        self._recovered: dict[str, list[RuntimeStatus]] = {}
        self._event_tasks: set[asyncio.Task[None]] = set()
        self._ctx: WorkerContext | None = None
        self._stopping = False
        self._http_server: AgentHTTPServer | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.config
        background: list[asyncio.Task[None]] = []
        probe_http = httpx.AsyncClient(verify=False, follow_redirects=False)
        server = self._http_server = AgentHTTPServer(build_app(self), cfg.address, cfg.http_port)
        try:
            for st in await self.driver.recover():
                self._recovered.setdefault(st.pod_uid, []).append(st)
            self.http_port = await server.start()
            self.node = NodeKeeper(
                self.client,
                cfg,
                self.driver.fingerprint(),
                self.http_port,
                self.clock,
                network=self.network_mode,
            )
            await self.node.register()
            self.informer = Informer(
                self.client.pods, field_selector=f"spec.nodeName={cfg.node_name}"
            )
            if self.network_mode == "bridge":
                self.network = NodeNetwork(self.client, cfg, self.informer, self.node.publish_links)
                await self.network.start()
            background.append(asyncio.create_task(self.node.run(), name="agent-heartbeat"))
            background.append(asyncio.create_task(self.reporter.run(), name="agent-status"))
            self._ctx = WorkerContext(
                config=cfg,
                driver=self.driver,
                client=self.client,
                reporter=self.reporter,
                clock=self.clock,
                http=probe_http,
                emit=self._emit,
                remove_logs=self._remove_logs,
                resync_interval=5.0 if self._hooked else 1.0,
                images=self.images,
                volumes=self.volumes,
                network=self.network,
            )
            self.informer.add_handler(self._on_pod_event)
            await self.informer.start()
            await self.informer.wait_synced()
            leftovers = [st for sts in self._recovered.values() for st in sts]
            self._recovered.clear()
            await self._collect(leftovers)
            self._sweep_volumes()
            if self.network is not None:
                await self.network.collect(set(self.workers))
            background.append(asyncio.create_task(self._housekeeping(), name="agent-housekeeping"))
            background.append(asyncio.create_task(self._sample_stats(), name="agent-stats"))
            self.ready.set()
            log.info("agent for node %s ready on port %d", cfg.node_name, self.http_port)
            await asyncio.gather(*background)
        finally:
            await self._shutdown(background, server, probe_http)

    async def _shutdown(
        self,
        background: list[asyncio.Task[None]],
        server: AgentHTTPServer,
        probe_http: httpx.AsyncClient,
    ) -> None:
        self.ready.clear()
        self._stopping = True  # ends log follows, so the HTTP server can stop gracefully
        if self.informer is not None:
            await self.informer.stop()
        graces = {
            uid: float(w.pod.spec.termination_grace_period_seconds)
            for uid, w in self.workers.items()
        }
        tasks = [*background, *self._tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.config.stop_pods_on_exit:
            await self._stop_everything(graces)
            with contextlib.suppress(OSError):
                self.volumes.release_mounts()
        if self.network is not None:
            # shoal up takes the whole data plane with it; an agent restart keeps it all.
            await self.network.close(remove=self.config.stop_pods_on_exit)
        await server.stop()
        await probe_http.aclose()
        for task in list(self._event_tasks):
            task.cancel()
        await asyncio.gather(*self._event_tasks, return_exceptions=True)
        if isinstance(self.driver, _ExitNotifying):
            self.driver.on_exit = self._previous_hook
        if self._owns_driver and isinstance(self.driver, _Closable):
            # Stop watching exits; the processes themselves stay for the next agent.
            self.driver.close()
        if self._image_service is not None:
            await self._image_service.aclose()
        log.info("agent for node %s stopped", self.config.node_name)

    async def _stop_everything(self, graces: dict[str, float]) -> None:
        """``stop_pods_on_exit``: SIGTERM every container, SIGKILL after its pod's grace."""

        async def stop(st: RuntimeStatus) -> None:
            grace = graces.get(st.pod_uid, self.config.force_kill_grace)
            try:
                await self.driver.stop(st.container_id, grace)
            except DriverError as exc:
                log.warning("could not stop %s: %s", st.container_id, exc)

        running = [st for st in await self.driver.list() if st.state == "running"]
        await asyncio.gather(*(stop(st) for st in running))
        # Then remove them all: a runc container holds a bundle, an overlay mount and cgroups
        # that must not outlive `shoal up`. Logs go with the pods.
        for st in await self.driver.list():
            if st.state == "running":
                continue
            try:
                await self.driver.remove(st.container_id)
            except DriverError as exc:
                log.warning("could not remove %s: %s", st.container_id, exc)

    # --- pods --------------------------------------------------------------------------------

    def _on_pod_event(self, kind: str, old: Pod | None, new: Pod | None) -> None:
        if kind == "DELETED":
            if old is not None:
                uid = old.metadata.uid or ""
                self._finished.discard(uid)
                worker = self.workers.get(uid)
                if worker is not None:
                    worker.vanish()
                else:
                    self.reporter.forget(uid)
            return
        if new is None:
            return
        if old is not None and old.metadata.uid != new.metadata.uid:
            stale = self.workers.get(old.metadata.uid or "")
            if stale is not None:
                stale.vanish()
        uid = new.metadata.uid or ""
        if uid in self._finished:
            return
        self.reporter.observe(new)
        worker = self.workers.get(uid)
        if worker is None:
            self._start_worker(new)
        else:
            worker.update(new)

    def _start_worker(self, pod: Pod) -> None:
        assert self._ctx is not None
        uid = pod.metadata.uid or ""
        worker = PodWorker(self._ctx, pod, self._recovered.pop(uid, []))
        self.workers[uid] = worker
        task = asyncio.create_task(
            worker.run(), name=f"pod-{pod.metadata.namespace}-{pod.metadata.name}"
        )
        self._tasks[uid] = task
        task.add_done_callback(lambda t: self._worker_done(uid, t))

    def _worker_done(self, uid: str, task: asyncio.Task[None]) -> None:
        worker = self.workers.pop(uid, None)
        self._tasks.pop(uid, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("pod worker %s crashed", uid, exc_info=task.exception())
        if worker is not None and worker.finished and self.informer is not None:
            cached = self.informer.get(worker.pod.key)
            if cached is not None and cached.metadata.uid == uid:
                self._finished.add(uid)  # deleted by us, object not gone yet: don't rerun

    def _on_exit(self, status: RuntimeStatus) -> None:
        worker = self.workers.get(status.pod_uid)
        if worker is not None:
            worker.wake()

    def _emit(self, pod: Pod, reason: str, message: str, type_: str) -> None:
        task = asyncio.create_task(
            self.client.record_event(
                pod, reason, message, type_, component="agent", host=self.config.node_name
            )
        )
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    def _remove_logs(self, pod_uid: str) -> None:
        if isinstance(self.driver, _LogManaging):
            self.driver.remove_logs(pod_uid)

    # --- housekeeping ------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Cap log sizes and sweep orphans (containers of pods this node no longer has)."""
        while True:
            await asyncio.sleep(self.config.housekeeping_interval)
            try:
                if isinstance(self.driver, _LogManaging):
                    await self.driver.enforce_log_limits()
                orphans = [st for st in await self.driver.list() if st.pod_uid not in self.workers]
                await self._collect(orphans)
                self._sweep_volumes()
                if self.network is not None:
                    await self.network.collect(set(self.workers))
            except Exception:
                log.exception("housekeeping failed")

    def _sweep_volumes(self) -> None:
        """Remove the volume directories of pods this node no longer runs (deleted while no
        agent ran, or a cleanup that failed half-way)."""
        try:
            for uid in self.volumes.sweep(self.workers):
                log.info("removed the volumes of departed pod %s", uid)
        except OSError as exc:
            log.warning("sweeping pod volumes failed: %s", exc)

    # --- resource usage ----------------------------------------------------------------------

    async def _sample_stats(self) -> None:
        """Sample CPU and memory of the node and of every running container, once per
        housekeeping interval (the last two samples make a rate)."""
        while True:
            targets = [
                Target(uid, rec.name, rec.container_id)
                for uid, w in list(self.workers.items())
                for rec in w.records.values()
                if rec.running and rec.container_id is not None
            ]
            try:
                await self.stats.sample(self.driver, targets)
            except Exception:
                log.exception("sampling resource usage failed")
            await asyncio.sleep(self.config.housekeeping_interval)

    def stats_summary(self) -> dict[str, Any]:
        """Resource usage in the kubelet Summary API shape (``/stats/summary``), from the
        last samples: ``{"node": {"nodeName", "cpu", "memory"}, "pods": [{"podRef",
        "containers": [{"name", "cpu", "memory"}], "cpu", "memory"}]}`` where ``cpu`` is
        ``{"time", "usageNanoCores", "usageCoreNanoSeconds"}`` (no usageNanoCores before a
        second sample) and ``memory`` is ``{"time", "workingSetBytes", "usageBytes"}``.
        Pods without a sampled running container are left out. See ``_stats``."""
        pods = [
            (
                PodRef(w.pod.metadata.name, w.pod.metadata.namespace or "default", w.uid),
                [c.name for c in w.pod.spec.containers],
            )
            for w in list(self.workers.values())
            if not w.finished
        ]
        return self.stats.summary(self.config.node_name, pods)

    async def _collect(self, orphans: list[RuntimeStatus]) -> None:
        """Stop and forget containers whose pod is gone, and their logs."""

        async def one(st: RuntimeStatus) -> None:
            try:
                if st.state == "running":
                    log.info("stopping orphaned container %s", st.container_id)
                    await self.driver.stop(st.container_id, self.config.force_kill_grace)
                await self.driver.remove(st.container_id)
            except DriverError as exc:
                log.warning("could not remove orphaned container %s: %s", st.container_id, exc)

        await asyncio.gather(*(one(st) for st in orphans))
        for uid in {st.pod_uid for st in orphans}:
            if uid not in self.workers:
                with contextlib.suppress(DriverError, OSError):
                    self._remove_logs(uid)

    # --- logs (the HTTP endpoint's LogLocator) -----------------------------------------------

    def find_log(
        self, namespace: str, pod: str, container: str, uid: str | None, previous: bool
    ) -> LogRef:
        worker = find_worker(self.workers, namespace, pod, uid)
        found = worker.log_attempt(container, previous)
        if isinstance(found, str):
            raise BadRequestError(found)
        container_id, attempt = found
        path = self.driver.log_path(container_id, attempt)
        if previous and not path.exists():
            raise BadRequestError(
                f'previous terminated container "{container}" in pod "{pod}" not found'
            )
        return LogRef(
            path,
            live=lambda: not self._stopping and worker.attempt_running(container, attempt),
        )
