"""The scheduler process: watches pods and nodes, runs the framework, binds the result.

This is the only part of ``shoal.scheduler`` that does I/O. It keeps three pieces of state,
as the Kubernetes scheduler does:

* an *active queue* (FIFO) of pods waiting for a scheduling attempt;
* an *unschedulable* set of pods that fit nowhere; they go back to the active queue when
  the cluster changes in a way that could make room (a node added or changed, an assigned
  pod deleted or finished) and, as a safety net, after ``resync_seconds``;
* an *assumed* set of pods bound by this process whose update the pod informer has not
  delivered yet. They are counted on their node in every snapshot so that two pods
  scheduled in quick succession do not both land on the last free slot of a node.

Binding goes through the API server's ``pods/{name}/binding``, which refuses to bind a pod
twice; that check, not anything here, is what keeps two schedulers from double-booking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from shoal._util import Clock, SystemClock, format_time
from shoal.api import Condition, Node, Pod, get_condition, set_condition
from shoal.client import Client, Informer
from shoal.errors import APIStatusError, ConflictError, NotFoundError, ServerUnreachableError
from shoal.scheduler.framework import Framework, ScheduleResult, Snapshot, default_framework

log = logging.getLogger("shoal.scheduler")

_TERMINAL = frozenset({"Succeeded", "Failed"})
_RETRY_INITIAL = 1.0
_RETRY_MAX = 10.0
_STATUS_WRITE_ATTEMPTS = 3


def needs_scheduling(pod: Pod) -> bool:
    """A pod the scheduler should place: Pending, not bound, not being deleted."""
    return (
        not pod.spec.node_name
        and pod.metadata.deletion_timestamp is None
        and pod.status.phase == "Pending"
    )


def _holds_resources(pod: Pod) -> bool:
    return bool(pod.spec.node_name) and pod.status.phase not in _TERMINAL


def _node_changed(old: Node, new: Node) -> bool:
    """Whether a node update could let an unschedulable pod fit.

    Agents rewrite their node every heartbeat; retrying every unschedulable pod on each of
    those would be wasted work, so only the fields the filters read count.
    """
    if old.spec != new.spec or old.metadata.labels != new.metadata.labels:
        return True
    if (old.status.allocatable, old.status.capacity) != (
        new.status.allocatable,
        new.status.capacity,
    ):
        return True
    was = get_condition(old.status.conditions, "Ready")
    now = get_condition(new.status.conditions, "Ready")
    return (was.status if was else None) != (now.status if now else None)


class Scheduler:
    """Places pending pods onto nodes until cancelled. See the module docstring for the state.

    ``name`` is the component written on the events it records. ``resync_seconds`` bounds
    how long an unschedulable pod waits when no cluster change wakes it.
    """

    def __init__(
        self,
        client: Client,
        *,
        framework: Framework | None = None,
        clock: Clock | None = None,
        name: str = "default-scheduler",
        resync_seconds: float = 30.0,
    ) -> None:
        self.client = client
        self.framework = framework or default_framework()
        self.clock: Clock = clock or SystemClock()
        self.name = name
        self.resync_seconds = resync_seconds
        self._pods: Informer[Pod] | None = None
        self._nodes: Informer[Node] | None = None
        self._active: dict[str, None] = {}  # insertion-ordered: a FIFO without duplicates
        self._unschedulable: dict[str, float] = {}  # key -> monotonic time it was parked
        self._retry_at: dict[str, float] = {}  # key -> monotonic time of the next attempt
        self._failures: dict[str, int] = {}  # key -> consecutive errors, for back-off
        self._assumed: dict[str, Pod] = {}
        self._reported: dict[str, str] = {}  # key -> last FailedScheduling message sent
        self._moves = 0  # bumped whenever unschedulable pods are woken; see _park
        self._wake = asyncio.Event()
        self._binding: dict[str, asyncio.Task[None]] = {}  # key -> in-flight binding cycle

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Watch, queue and schedule until cancelled."""
        self._pods = Informer(self.client.pods)
        self._nodes = Informer(self.client.nodes)
        self._pods.add_handler(self._on_pod)
        self._nodes.add_handler(self._on_node)
        try:
            await self._pods.start()
            await self._nodes.start()
            await self._pods.wait_synced()
            await self._nodes.wait_synced()
            log.info("%s: caches synced, %d pods queued", self.name, len(self._active))
            while True:
                key = await self._pop()
                if key in self._binding:
                    continue  # its binding cycle is in flight; the informer will tell
                pod = self._pods.get(key)
                if pod is None or not needs_scheduling(pod):
                    self._forget(key)
                    continue
                try:
                    await self.schedule_one(pod, wait_for_bind=False)
                except (APIStatusError, ServerUnreachableError) as exc:
                    log.warning("%s: scheduling %s failed: %s; will retry", self.name, key, exc)
                    self._retry_later(key)
                except Exception:
                    log.exception("%s: scheduling %s failed; will retry", self.name, key)
                    self._retry_later(key)
        finally:
            for task in list(self._binding.values()):
                task.cancel()
            await asyncio.gather(*self._binding.values(), return_exceptions=True)
            await self._pods.stop()
            await self._nodes.stop()

    async def _pop(self) -> str:
        """The next key to try, waiting for one (or for a retry or resync to fall due)."""
        while True:
            self._flush_due()
            if self._active:
                key = next(iter(self._active))
                del self._active[key]
                return key
            self._wake.clear()
            timeout = self._next_due_in()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _flush_due(self) -> None:
        now = self.clock.monotonic()
        for key, at in list(self._retry_at.items()):
            if at <= now:
                del self._retry_at[key]
                self._enqueue(key)
        for key, since in list(self._unschedulable.items()):
            if now - since >= self.resync_seconds:
                del self._unschedulable[key]
                self._enqueue(key)

    def _next_due_in(self) -> float | None:
        now = self.clock.monotonic()
        due = [at - now for at in self._retry_at.values()]
        due += [since + self.resync_seconds - now for since in self._unschedulable.values()]
        return max(0.0, min(due)) if due else None

    # --- queue bookkeeping --------------------------------------------------------------------

    def _enqueue(self, key: str) -> None:
        self._unschedulable.pop(key, None)
        self._retry_at.pop(key, None)
        self._active[key] = None
        self._wake.set()

    def _park(self, key: str, moves_at_start: int) -> None:
        """File a pod that fit nowhere. If the cluster changed while it was being tried, the
        wake-up was meant for it too, so it goes straight back to the active queue."""
        if self._moves != moves_at_start:
            self._enqueue(key)
        else:
            self._unschedulable[key] = self.clock.monotonic()

    def _retry_later(self, key: str) -> None:
        n = self._failures.get(key, 0) + 1
        self._failures[key] = n
        delay = min(_RETRY_MAX, _RETRY_INITIAL * 2 ** (n - 1))
        self._retry_at[key] = self.clock.monotonic() + delay
        self._wake.set()

    def _move_all_to_active(self, why: str) -> None:
        self._moves += 1
        if self._unschedulable:
            log.debug("%s: %s; retrying %d pods", self.name, why, len(self._unschedulable))
            for key in list(self._unschedulable):
                self._enqueue(key)

    def _forget(self, key: str) -> None:
        self._active.pop(key, None)
        self._unschedulable.pop(key, None)
        self._retry_at.pop(key, None)
        self._failures.pop(key, None)
        self._reported.pop(key, None)

    # --- informer handlers (run in the loop, after the cache changed) -------------------------

    def _on_pod(self, event: str, old: Pod | None, new: Pod | None) -> None:
        if event == "DELETED" or new is None:
            if old is not None:
                self._forget(old.key)
                self._assumed.pop(old.key, None)
                if _holds_resources(old):
                    self._move_all_to_active("an assigned pod was deleted")
            return
        key = new.key
        if new.spec.node_name:
            self._assumed.pop(key, None)
            self._forget(key)
            if old is not None and _holds_resources(old) and not _holds_resources(new):
                self._move_all_to_active("an assigned pod finished")
            return
        if not needs_scheduling(new):
            self._forget(key)
        elif key not in self._unschedulable:
            if key not in self._retry_at:
                self._enqueue(key)
        elif old is None or (old.spec, old.metadata.labels) != (new.spec, new.metadata.labels):
            self._enqueue(key)  # the pod itself changed; it may fit now

    def _on_node(self, event: str, old: Node | None, new: Node | None) -> None:
        if event == "ADDED":
            self._move_all_to_active("a node was added")
        elif event == "MODIFIED" and old and new and _node_changed(old, new):
            self._move_all_to_active(f"node {new.name} changed")

    # --- one cycle ----------------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """The cluster as the next cycle sees it: informer caches plus assumed pods.

        Outside ``run`` (tests calling ``schedule_one`` directly) there are no caches, so
        the nodes and pods are listed from the server instead.
        """
        if self._pods is None or self._nodes is None or not self._pods.synced:
            nodes = await self.client.nodes.list()
            pods = await self.client.pods.list()
        else:
            nodes = self._nodes.list()
            pods = self._pods.list()
            for key in list(self._assumed):
                seen = self._pods.get(key)
                if seen is None or seen.spec.node_name:
                    del self._assumed[key]  # deleted, or the informer caught up
        return Snapshot.build(nodes, [*pods, *self._assumed.values()])

    async def schedule_one(self, pod: Pod, *, wait_for_bind: bool = True) -> ScheduleResult:
        """Try to place ``pod`` once: bind it, or record why it cannot be placed.

        As in Kubernetes, the scheduling cycle (pure, over the snapshot) is separate from the
        binding cycle (an API write): with ``wait_for_bind=False`` the pod is *assumed* on its
        node at once, so the next cycle already counts it, and the bind runs in the
        background. That keeps the queue moving while the API server is busy.

        Raises ``APIStatusError``/``ServerUnreachableError`` when the server failed (the pod
        is then neither bound nor parked; ``run`` retries it with back-off). A pod deleted or
        bound by someone else meanwhile is dropped quietly.
        """
        moves_at_start = self._moves
        result = self.framework.schedule(pod, await self.snapshot())
        if result.node_name is None:
            await self._record_failure(pod, result, moves_at_start)
            return result
        node = result.node_name
        assumed = pod.model_copy(deep=True)
        assumed.spec.node_name = node
        self._assumed[pod.key] = assumed
        if wait_for_bind:
            await self._bind(pod, node)
        else:
            task = asyncio.create_task(self._bind_in_background(pod, node))
            self._binding[pod.key] = task
        return result

    async def _bind_in_background(self, pod: Pod, node: str) -> None:
        key = pod.key
        try:
            await self._bind(pod, node)
        except (APIStatusError, ServerUnreachableError) as exc:
            log.warning("%s: binding %s failed: %s; will retry", self.name, key, exc)
            self._retry_later(key)
        except Exception:
            log.exception("%s: binding %s failed; will retry", self.name, key)
            self._retry_later(key)
        finally:
            self._binding.pop(key, None)

    async def _bind(self, pod: Pod, node: str) -> None:
        key = pod.key
        try:
            await self.client.bind(pod.name, pod.namespace or "default", node, pod.metadata.uid)
        except (ConflictError, NotFoundError) as exc:
            log.info("%s: not binding %s: %s", self.name, key, exc)
            self._assumed.pop(key, None)
            self._forget(key)
            return
        except BaseException:
            self._assumed.pop(key, None)
            raise
        self._forget(key)
        log.info("%s: bound %s to %s", self.name, key, node)
        await self.client.record_event(
            pod,
            "Scheduled",
            f"Successfully assigned {pod.namespace or 'default'}/{pod.name} to {node}",
            component=self.name,
        )

    async def _record_failure(self, pod: Pod, result: ScheduleResult, moves_at_start: int) -> None:
        key = pod.key
        message = result.message()
        if result.error is not None:
            log.warning("%s: cannot schedule %s: %s", self.name, key, message)
            self._retry_later(key)
            reason = "SchedulerError"
        else:
            level = logging.DEBUG if self._reported.get(key) == message else logging.INFO
            log.log(level, "%s: %s is unschedulable: %s", self.name, key, message)
            self._failures.pop(key, None)
            self._park(key, moves_at_start)
            reason = "Unschedulable"
        if not await self._write_condition(pod, reason, message):
            self._forget(key)  # gone or bound meanwhile
            return
        if self._reported.get(key) != message:
            self._reported[key] = message
            await self.client.record_event(
                pod, "FailedScheduling", message, type="Warning", component=self.name
            )

    async def _write_condition(self, pod: Pod, reason: str, message: str) -> bool:
        """Set PodScheduled=False with ``message`` unless it already says so.

        Returns False when the pod no longer needs scheduling (deleted or bound meanwhile).
        """
        current = pod.model_copy(deep=True)  # never mutate the informer's copy
        for _ in range(_STATUS_WRITE_ATTEMPTS):
            cond = Condition(type="PodScheduled", status="False", reason=reason, message=message)
            if not set_condition(current.status.conditions, cond, format_time(self.clock.now())):
                return True
            try:
                await self.client.pods.update_status(current)
                return True
            except ConflictError:
                try:
                    current = await self.client.pods.get(pod.name, pod.namespace or "default")
                except NotFoundError:
                    return False
                if not needs_scheduling(current):
                    return False
            except NotFoundError:
                return False
        log.warning("%s: gave up writing the PodScheduled condition of %s", self.name, pod.key)
        return True
