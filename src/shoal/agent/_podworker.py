"""One asyncio task per pod: start its containers through the driver, notice exits, restart
them per restartPolicy with back-off, run probes, stop them on deletion, and hand the
derived status to the reporter.

Level-triggered like the kubelet's pod workers: every wake-up (a new copy of the pod, a
container exit, a probe result, a back-off timer) runs one ``_sync`` that compares what
should run with what runs. The status arithmetic lives in ``_status`` (pure); this module is
the shell that does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from shoal._util import Backoff, format_time
from shoal.agent._context import WorkerContext, termination_of
from shoal.agent._images import ImageGate, Waiting
from shoal.agent._network import PodNetGate
from shoal.agent._probes import ProbeOutcome, Prober, ProbeTarget, probe_loop, run_check
from shoal.agent._spec import (
    container_config,
    non_root_violation,
    probe_env,
    with_pod_network,
)
from shoal.agent._status import (
    UNKNOWN_EXIT_CODE,
    ContainerRecord,
    Termination,
    backoff_message,
    build_pod_status,
    is_terminal,
    pod_display_name,
    restart_delay,
    should_restart,
)
from shoal.agent._volumes import VolumeSetup
from shoal.api import (
    Container,
    Pod,
    PodPhase,
    PodStatus,
    Probe,
    default_pull_policy,
    get_condition,
)
from shoal.errors import (
    APIStatusError,
    ConflictError,
    DriverError,
    NetworkError,
    NotFoundError,
    ServerUnreachableError,
)
from shoal.runtime import ContainerConfig
from shoal.runtime import ContainerStatus as RuntimeStatus

log = logging.getLogger("shoal.agent.pod")


class PodWorker:
    """Drives one pod (one uid) on this node. ``run()`` returns once the pod is torn down."""

    def __init__(self, ctx: WorkerContext, pod: Pod, recovered: list[RuntimeStatus]) -> None:
        self.ctx = ctx
        self.pod = pod
        self.uid = pod.metadata.uid or ""
        self.finished = False
        self._gone = False
        self._wake = asyncio.Event()
        self._probes: dict[str, list[asyncio.Task[None]]] = {}
        self._liveness_failed: set[str] = set()
        self._liveness_killed: set[str] = set()
        self._terminal: PodPhase | None = (
            pod.status.phase if is_terminal(pod.status.phase) else None
        )
        self._previous = pod.status.model_copy(deep=True)
        self._submitted: dict[str, object] | None = None
        self._start_time = pod.status.start_time or format_time(ctx.clock.now())
        self._initial_exits: dict[str, Termination] = {}
        self._adopted: set[str] = set()
        self.records: dict[str, ContainerRecord] = {}
        self._extra: list[RuntimeStatus] = []
        self._runtime = ctx.driver.name
        self._gates: dict[str, ImageGate] = {}
        self._volumes: VolumeSetup | None = None
        self._volume_backoff = Backoff(0.5, 120.0)
        self._volume_retry_at = 0.0
        self._net = PodNetGate(ctx.network, self.uid) if ctx.network is not None else None
        self._seed(recovered)

    # --- inputs ------------------------------------------------------------------------------

    @property
    def display(self) -> str:
        return pod_display_name(self.pod.metadata.name, self.pod.namespace or "default", self.uid)

    def update(self, pod: Pod) -> None:
        """A newer copy of the pod from the informer."""
        self.pod = pod
        self.wake()

    def vanish(self) -> None:
        """The pod object is gone (force-deleted, or deleted while we were away)."""
        self._gone = True
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    # --- seeding from a previous agent -------------------------------------------------------

    def _seed(self, recovered: list[RuntimeStatus]) -> None:
        """Rebuild the records from the pod's reported status and the runtime's recovered
        containers, so an agent restart neither restarts nor recounts anything."""
        reported = {cs.name: cs for cs in self.pod.status.container_statuses}
        by_name = {st.name: st for st in recovered}
        for spec in self.pod.spec.containers:
            rec = ContainerRecord(name=spec.name, image=spec.image or "", runtime=self._runtime)
            prev = reported.get(spec.name)
            if prev is not None:
                rec.restart_count = prev.restart_count
                if prev.container_id:
                    rec.container_id = prev.container_id.split("://", 1)[-1]
                rec.host_ports = {
                    p.container_port: p.host_port for p in prev.ports if p.host_port is not None
                }
                if prev.last_state.terminated is not None:
                    rec.last_termination = Termination.from_api(prev.last_state.terminated)
                if self._terminal and prev.state.terminated is not None:
                    rec.terminated = Termination.from_api(prev.state.terminated)
            st = by_name.pop(spec.name, None)
            if st is not None:
                # Attempt N is restart N; the larger count survives a status write that was
                # lost when the previous agent stopped.
                rec.restart_count = max(rec.restart_count, st.attempt)
                rec.attempt = st.attempt
                rec.container_id = st.container_id
                rec.host_ports = dict(st.host_ports)
                if st.state == "running":
                    rec.running_since = st.started_at or self.ctx.clock.now()
                    rec.ready = bool(prev and prev.ready)
                    self._adopted.add(spec.name)
                elif st.state == "exited" and not self._terminal:
                    self._initial_exits[spec.name] = termination_of(st, self._runtime)
            elif prev is not None and not self._terminal:
                if prev.state.terminated is not None:
                    self._initial_exits[spec.name] = Termination.from_api(prev.state.terminated)
                elif prev.state.running is not None:
                    self._initial_exits[spec.name] = Termination(
                        UNKNOWN_EXIT_CODE,
                        "ContainerStatusUnknown",
                        message="The container could not be located when the agent restarted",
                    )
                elif prev.last_state.terminated is not None:
                    rec.restart_pending = True
            self.records[spec.name] = rec
        self._extra = list(by_name.values())

    # --- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while not self.finished:
                self._wake.clear()
                try:
                    await self._sync()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("sync of pod %s failed; retrying", self.display)
                    await asyncio.sleep(1.0)
                if not self.finished:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._next_deadline())
        finally:
            self._cancel_probes()
            self._cancel_pulls()

    def _next_deadline(self) -> float:
        now = self.ctx.clock.monotonic()
        wait = self.ctx.resync_interval
        if self._terminal is None and not self.pod.metadata.deletion_timestamp:
            for rec in self.records.values():
                if not rec.running and not rec.done:
                    wait = min(wait, rec.next_start - now)
            for gate in self._gates.values():
                deadline = gate.next_deadline()
                if deadline is not None:
                    wait = min(wait, deadline - now)
            if self._volumes is not None and not self._volumes.ok:
                wait = min(wait, self._volume_retry_at - now)
            if self._net is not None and self._net.waiting is not None:
                wait = min(wait, 0.25)  # the Network's node subnet may land any moment
        return max(wait, 0.01)

    async def _sync(self) -> None:
        if self._gone:
            await self._stop_all(self.ctx.config.force_kill_grace, announce=False)
            await self._cleanup()
            return
        if self.pod.metadata.deletion_timestamp:
            await self._terminate()
            return
        if self._extra:
            extra, self._extra = self._extra, []
            await asyncio.gather(*(self._discard(st) for st in extra))
        await self._refresh()
        for name in list(self._liveness_failed):
            self._liveness_failed.discard(name)
            rec = self.records[name]
            if rec.running:
                self.ctx.emit(
                    self.pod,
                    "Killing",
                    f"Container {name} failed liveness probe, will be restarted",
                    "Normal",
                )
                self._liveness_killed.add(name)
                await self._stop_one(rec, self._grace(), final=False)
        if self._terminal is None and self._volumes_ready() and await self._network_ready():
            for spec in self.pod.spec.containers:
                await self._reconcile(self.records[spec.name], spec)
        elif any(rec.running for rec in self.records.values()):
            await self._stop_all(self._grace())
        self._publish()

    async def _refresh(self) -> None:
        """Notice exits (the driver's exit hook only wakes us; inspect is the truth)."""
        for name, term in self._initial_exits.items():
            self._on_exited(self.records[name], term)
        self._initial_exits.clear()
        for spec in self.pod.spec.containers:
            rec = self.records[spec.name]
            if not rec.running or rec.container_id is None:
                continue
            if spec.name in self._adopted and await self._network_ready():  # probes: pod IP
                self._adopted.discard(spec.name)
                self._start_probes(rec, spec, adopted=True)
            try:
                st = await self.ctx.driver.inspect(rec.container_id)
            except DriverError:
                self._on_exited(
                    rec,
                    Termination(
                        UNKNOWN_EXIT_CODE,
                        "ContainerStatusUnknown",
                        started_at=rec.running_since,
                        container_id=rec.container_id,
                        message="The runtime lost track of the container",
                        runtime=self._runtime,
                    ),
                )
                continue
            if st.state != "running" and st.attempt == rec.attempt:
                self._on_exited(rec, termination_of(st, self._runtime))

    def _on_exited(self, rec: ContainerRecord, term: Termination) -> None:
        """Record an exit and decide: restart (after back-off) or done for good."""
        self._cancel_probes(rec.name)
        rec.running_since = None
        rec.ready = False
        killed = rec.name in self._liveness_killed
        self._liveness_killed.discard(rec.name)
        cfg = self.ctx.config
        ran = (term.finished_at or 0.0) - (term.started_at or 0.0)
        if term.started_at is not None and ran >= cfg.backoff_reset_after:
            rec.backoff_steps = 0
        policy = self.pod.spec.restart_policy
        if self._terminal is None and should_restart(policy, term.exit_code, killed):
            rec.last_termination = term
            rec.terminated = None
            rec.restart_pending = True
            delay = restart_delay(rec.backoff_steps, cfg.backoff_initial, cfg.backoff_cap)
            rec.backoff_steps += 1
            rec.next_start = self.ctx.clock.monotonic() + delay
            if delay > 0:
                rec.waiting_reason = "CrashLoopBackOff"
                rec.waiting_message = backoff_message(delay, rec.name, self.display)
                self.ctx.emit(
                    self.pod,
                    "BackOff",
                    f"Back-off restarting failed container {rec.name} in pod {self.display}",
                    "Warning",
                )
            else:
                rec.waiting_reason, rec.waiting_message = "ContainerCreating", None
        else:
            rec.terminated = term

    def _volumes_ready(self) -> bool:
        """Set up the pod's volumes before any container starts; on failure report
        FailedMount and retry with back-off, the containers waiting in ContainerCreating."""
        if self.ctx.volumes is None or (self._volumes is not None and self._volumes.ok):
            return True
        if self.ctx.clock.monotonic() < self._volume_retry_at:
            return False
        self._volumes = self.ctx.volumes.setup(self.pod)
        for message in self._volumes.errors.values():
            self.ctx.emit(self.pod, "FailedMount", message, "Warning")
        if not self._volumes.ok:
            self._volume_retry_at = self.ctx.clock.monotonic() + self._volume_backoff.next()
        return self._volumes.ok

    async def _network_ready(self) -> bool:
        if self._net is None or self.pod.spec.host_network:
            return True
        return await self._net.ready(self.pod, self.ctx.emit)

    def _image_gate(self, spec: Container) -> ImageGate | None:
        if self.ctx.images is None or not spec.image:
            return None
        gate = self._gates.get(spec.name)
        if gate is None or gate.image != spec.image:
            if gate is not None:
                gate.cancel()
            cfg = self.ctx.config
            gate = self._gates[spec.name] = ImageGate(
                spec.image,
                spec.image_pull_policy or default_pull_policy(spec.image),
                self.ctx.images,
                emit=lambda reason, message, type_: self.ctx.emit(self.pod, reason, message, type_),
                wake=self.wake,
                clock=self.ctx.clock,
                backoff_initial=cfg.image_pull_backoff_initial,
                backoff_cap=cfg.image_pull_backoff_cap,
            )
        return gate

    def _start_failed(self, rec: ContainerRecord, reason: str, message: str) -> None:
        cfg = self.ctx.config
        delay = restart_delay(max(1, rec.backoff_steps), cfg.backoff_initial, cfg.backoff_cap)
        rec.backoff_steps += 1
        rec.next_start = self.ctx.clock.monotonic() + delay
        rec.waiting_reason, rec.waiting_message = reason, message
        self.ctx.emit(self.pod, "Failed", f"Error: {message}", "Warning")

    async def _reconcile(self, rec: ContainerRecord, spec: Container) -> None:
        if rec.running or rec.done or self.ctx.clock.monotonic() < rec.next_start:
            return
        # Who the container runs as without runAsUser: the image's USER; for the process
        # driver, the agent's own user; for an image driver given no image, root.
        image_user = str(os.geteuid()) if self.ctx.images is None else ""
        gate = self._image_gate(spec)
        if gate is not None:
            got = gate.check()
            if isinstance(got, Waiting):
                if got.reason is not None:
                    rec.waiting_reason, rec.waiting_message = got.reason, got.message
                return
            image_user = got.config.user
        paths = self._volumes.paths if self._volumes is not None else {}
        problem = non_root_violation(self.pod, spec, image_user)
        if problem is None and self.ctx.volumes is not None:
            problem = self.ctx.volumes.subpaths(spec, paths)
        if problem is not None:
            self._start_failed(rec, "CreateContainerConfigError", problem)
            return
        count = rec.restart_count + (1 if rec.restart_pending else 0)
        attempt = count if rec.attempt is None else max(count, rec.attempt + 1)
        try:
            st = await self.ctx.driver.start(self._config(spec, attempt, paths))
        except DriverError as exc:
            self._start_failed(rec, "RunContainerError", str(exc))
            return
        if gate is not None:
            gate.taken()
        rec.restart_count = count
        rec.restart_pending = False
        rec.attempt = st.attempt
        rec.container_id = st.container_id
        rec.running_since = st.started_at or self.ctx.clock.now()
        rec.host_ports = dict(st.host_ports)
        rec.waiting_reason, rec.waiting_message = "", None
        rec.ready = False
        self._start_probes(rec, spec, adopted=False)
        self.ctx.emit(self.pod, "Started", f"Started container {spec.name}", "Normal")

    def _config(self, spec: Container, attempt: int, paths: dict[str, Path]) -> ContainerConfig:
        config = container_config(self.pod, spec, attempt, paths)
        net = self.ctx.network
        if net is None or self.pod.spec.host_network:
            return config
        return with_pod_network(config, net.netns_path(self.uid), self.ctx.config)

    # --- probes ------------------------------------------------------------------------------

    def _start_probes(self, rec: ContainerRecord, spec: Container, *, adopted: bool) -> None:
        self._cancel_probes(rec.name)
        clock = self.ctx.clock
        since = rec.running_since or clock.now()
        started = clock.monotonic() - max(0.0, clock.now() - since)
        target = ProbeTarget(
            container=spec,
            host_ports=dict(rec.host_ports),
            env=probe_env(self.pod, spec, rec.host_ports),
            working_dir=spec.working_dir or "",
            pod=self._net.probe_address() if self._net is not None else None,
        )
        tasks: list[asyncio.Task[None]] = []
        if spec.readiness_probe is None:
            rec.ready = True
        else:
            initial = rec.ready if adopted else False
            rec.ready = initial
            tasks.append(
                self._probe_task(rec, spec.readiness_probe, "Readiness", initial, started, target)
            )
        if spec.liveness_probe is not None:
            tasks.append(
                self._probe_task(rec, spec.liveness_probe, "Liveness", True, started, target)
            )
        self._probes[rec.name] = tasks

    def _probe_task(
        self,
        rec: ContainerRecord,
        probe: Probe,
        kind: str,
        initial: bool,
        started: float,
        target: ProbeTarget,
    ) -> asyncio.Task[None]:
        prober = Prober(probe, started=started, initial=initial, clock=self.ctx.clock)
        attempt = rec.attempt

        def on_result(result: bool, changed: bool, outcome: ProbeOutcome) -> None:
            if rec.attempt != attempt or not rec.running:
                return
            if not outcome.ok and prober.failures == max(1, probe.failure_threshold):
                self.ctx.emit(
                    self.pod, "Unhealthy", f"{kind} probe failed: {outcome.message}", "Warning"
                )
            if not changed:
                return
            if kind == "Readiness":
                rec.ready = result
                self.wake()
            elif not result:
                self._liveness_failed.add(rec.name)
                self.wake()

        async def check() -> ProbeOutcome:
            return await run_check(probe, target, self.ctx.http)

        return asyncio.create_task(
            probe_loop(prober, check, on_result), name=f"probe-{kind}-{self.uid}-{rec.name}"
        )

    def _cancel_probes(self, name: str | None = None) -> None:
        names = [name] if name is not None else list(self._probes)
        for n in names:
            for task in self._probes.pop(n, []):
                task.cancel()

    # --- stopping and deletion ---------------------------------------------------------------

    def _grace(self) -> float:
        meta = self.pod.metadata
        if meta.deletion_grace_period_seconds is not None:
            return float(meta.deletion_grace_period_seconds)
        return float(self.pod.spec.termination_grace_period_seconds)

    async def _stop_one(self, rec: ContainerRecord, grace: float, *, final: bool) -> None:
        """Stop one running container; ``final`` means it stays stopped (no restart)."""
        self._cancel_probes(rec.name)
        assert rec.container_id is not None
        try:
            st = await self.ctx.driver.stop(rec.container_id, grace)
        except DriverError as exc:
            log.warning("stopping %s of pod %s failed: %s", rec.name, self.display, exc)
            return
        if st.state == "running":
            return
        term = termination_of(st, self._runtime)
        if final:
            rec.running_since = None
            rec.ready = False
            rec.terminated = term
        else:
            self._on_exited(rec, term)

    async def _stop_all(self, grace: float, *, announce: bool = True) -> None:
        running = [r for r in self.records.values() if r.running and r.container_id]
        for rec in running:
            if announce:
                self.ctx.emit(self.pod, "Killing", f"Stopping container {rec.name}", "Normal")
        await asyncio.gather(*(self._stop_one(r, grace, final=True) for r in running))

    async def _terminate(self) -> None:
        """Graceful deletion: stop with the pod's grace, then finish the deletion on the
        server (grace 0, uid precondition) as the kubelet does, then forget the pod."""
        self._cancel_pulls()
        await self._stop_all(self._grace())
        if any(r.running for r in self.records.values()):
            return  # a stop failed; the next sync tries again
        backoff = Backoff(0.2, 5.0, jitter=0.2)
        meta = self.pod.metadata
        while not self._gone:
            try:
                await self.ctx.client.pods.delete(
                    meta.name, meta.namespace, grace_period_seconds=0, uid=self.uid
                )
                break
            except (NotFoundError, ConflictError):
                break  # gone already, or the name now belongs to a new pod
            except (ServerUnreachableError, APIStatusError) as exc:
                log.debug("deleting pod %s: %s; retrying", self.display, exc)
                await asyncio.sleep(backoff.next())
        await self._cleanup()

    async def _discard(self, st: RuntimeStatus) -> None:
        """A runtime container that belongs to no container of the spec: stop and forget."""
        with contextlib.suppress(DriverError):
            if st.state == "running":
                await self.ctx.driver.stop(st.container_id, self.ctx.config.force_kill_grace)
            await self.ctx.driver.remove(st.container_id)

    def _cancel_pulls(self) -> None:
        for gate in self._gates.values():
            gate.cancel()

    async def _cleanup(self) -> None:
        """The pod is gone for good: drop runtime state, volumes and logs, stop reporting
        it."""
        self._cancel_probes()
        self._cancel_pulls()
        for rec in self.records.values():
            if rec.container_id is not None and not rec.running:
                with contextlib.suppress(DriverError):
                    await self.ctx.driver.remove(rec.container_id)
        if not any(r.running for r in self.records.values()):
            if self.ctx.network is not None:
                try:
                    await self.ctx.network.detach(self.uid)
                except NetworkError as exc:
                    log.warning("removing the network of pod %s: %s", self.display, exc)
            with contextlib.suppress(DriverError, OSError):
                self.ctx.remove_logs(self.uid)
            if self.ctx.volumes is not None:
                with contextlib.suppress(OSError, ValueError):
                    self.ctx.volumes.teardown(self.uid)
        self.ctx.reporter.forget(self.uid)
        self.finished = True

    # --- status ------------------------------------------------------------------------------

    def _publish(self) -> None:
        status = self.current_status()
        if is_terminal(status.phase):
            self._terminal = status.phase
        data = status.to_dict()
        self._previous = status
        if data != self._submitted:
            self._submitted = data
            self.ctx.reporter.submit(self.pod, data)

    def current_status(self) -> PodStatus:
        return build_pod_status(
            policy=self.pod.spec.restart_policy,
            containers=self.pod.spec.containers,
            records=self.records,
            previous=self._previous,
            scheduled=get_condition(self.pod.status.conditions, "PodScheduled"),
            address=self.ctx.config.address,
            start_time=self._start_time,
            now=self.ctx.clock.now(),
            terminal_phase=self._terminal,
            pod_ips=self._net.pod_ips if self._net is not None else None,
        )

    # --- logs --------------------------------------------------------------------------------

    def log_attempt(self, container: str, previous: bool) -> tuple[str, int] | str:
        """(container_id, attempt) of the log to serve, or why there is none."""
        rec = self.records.get(container)
        if rec is None:
            return f"container {container} is not valid for pod {self.pod.metadata.name}"
        if rec.attempt is None:
            return (
                f'container "{container}" in pod "{self.pod.metadata.name}" is waiting to '
                f"start: {rec.waiting_reason or 'ContainerCreating'}"
            )
        cid = rec.container_id or f"{self.uid}_{container}"
        if previous:
            if rec.attempt < 1:
                return (
                    f'previous terminated container "{container}" in pod '
                    f'"{self.pod.metadata.name}" not found'
                )
            return cid, rec.attempt - 1
        return cid, rec.attempt

    def attempt_running(self, container: str, attempt: int) -> bool:
        rec = self.records.get(container)
        return rec is not None and rec.running and rec.attempt == attempt and not self.finished
