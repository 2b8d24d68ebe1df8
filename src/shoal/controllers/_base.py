"""The reconcile framework every controller runs on: a de-duplicating work queue of keys with
per-key back-off, workers as asyncio tasks, and shared informers (one per kind).

Controllers are level-triggered. Informer handlers only *enqueue keys*; a worker later calls
``reconcile(key)``, which reads the current state from the informer caches, compares it with
the desired state and writes the difference through the client. Because a key is only a name,
many events about one object collapse into one reconcile, and a reconcile that fails is simply
run again later: there is no event to lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, Generic, TypeVar, cast

from shoal._util import Backoff, Clock, SystemClock
from shoal.api import Deployment, Endpoints, Network, Node, Pod, ReplicaSet, Resource, Service
from shoal.client import Client, Informer, ResourceClient
from shoal.errors import (
    APIStatusError,
    ConflictError,
    NotFoundError,
    ServerUnreachableError,
    TemporaryError,
)

T = TypeVar("T", bound=Resource)

log = logging.getLogger("shoal.controllers")


class QueueShutDown(Exception):
    """Raised by ``WorkQueue.get`` once the queue is shut down: the worker should return."""


class WorkQueue:
    """A FIFO of keys with the guarantees client-go's workqueue gives controllers:

    * a key is in the queue at most once (events about one object collapse);
    * a key is never handed to two workers at once: adding a key that is being processed
      marks it dirty, and ``done`` queues it again so the newer state is reconciled after;
    * ``add_after`` delays an add (earliest deadline wins), ``add_rate_limited`` delays by a
      per-key exponential back-off that ``forget`` resets once the key succeeds.
    """

    def __init__(
        self,
        name: str,
        *,
        base_delay: float = 0.1,
        max_delay: float = 60.0,
        conflict_delay: float = 0.01,
        conflict_max_delay: float = 1.0,
    ) -> None:
        self.name = name
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[str, Backoff] = {}
        self._conflicts: dict[str, Backoff] = {}
        self._base_delay, self._max_delay = base_delay, max_delay
        self._conflict_delay, self._conflict_max = conflict_delay, conflict_max_delay
        self._nonempty = asyncio.Event()
        self._shutdown = False

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing being processed (delayed adds may still be pending)."""
        return not self._queue and not self._processing

    def add(self, key: str) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._nonempty.set()

    def add_after(self, key: str, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds; an earlier pending deadline is kept."""
        if self._shutdown:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= due:
                return
            pending[1].cancel()
        self._timers[key] = (due, loop.call_at(due, self._fire, key))

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: str) -> float:
        """Retry ``key`` after its next back-off delay (returned)."""
        backoff = self._failures.setdefault(
            key, Backoff(self._base_delay, self._max_delay, jitter=0.1)
        )
        delay = backoff.next()
        self.add_after(key, delay)
        return delay

    def add_conflicted(self, key: str) -> float:
        """Retry ``key`` soon: a lost compare-and-swap usually means our cache was a few
        milliseconds behind. The delay still grows, so a hot loop cannot form."""
        backoff = self._conflicts.setdefault(key, Backoff(self._conflict_delay, self._conflict_max))
        delay = backoff.next()
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """The key succeeded: its next failure starts the back-off from the beginning."""
        self._failures.pop(key, None)
        self._conflicts.pop(key, None)

    async def get(self) -> str:
        """The next key to process. Raises QueueShutDown once the queue is shut down."""
        while not self._queue:
            if self._shutdown:
                raise QueueShutDown(self.name)
            self._nonempty.clear()
            await self._nonempty.wait()
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty and not self._shutdown:
            self._queue.append(key)
            self._nonempty.set()

    def shutdown(self) -> None:
        """Stop handing out keys and cancel pending delayed adds."""
        self._shutdown = True
        for _due, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._queue.clear()
        self._nonempty.set()


class Controller(ABC):
    """A reconcile loop: ``workers`` tasks take keys from ``queue`` and call ``reconcile``.

    Error policy (kopf's temporary/permanent split, client-go's rate limiting):
    ConflictError -> retry soon (our cache was stale); NotFoundError -> done (the object went
    away, and its deletion is an event of its own); TemporaryError -> retry after its delay;
    anything else -> retry with per-key exponential back-off.
    """

    name: ClassVar[str] = "controller"

    def __init__(self, client: Client, *, workers: int = 2, clock: Clock | None = None) -> None:
        self.client = client
        self.clock: Clock = clock or SystemClock()
        self.workers = max(1, workers)
        self.queue = WorkQueue(self.name)

    status_batch: float = 0.2
    """Seconds to gather status-only changes (pods turning ready, counts moving) into one
    reconcile: 100 pods starting together then cost a handful of status writes, not 100."""

    def enqueue(self, key: str) -> None:
        self.queue.add(key)

    def enqueue_status(self, key: str) -> None:
        """Enqueue for a change that can only affect status; coalesced over status_batch."""
        self.queue.add_after(key, self.status_batch)

    @abstractmethod
    async def reconcile(self, key: str) -> None:
        """Make the world match the desired state for ``key``; idempotent."""

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """Extra long-running loops (periodic monitors, resyncs) run beside the workers."""
        return []

    async def run(self) -> None:
        """Run the workers (and background loops) until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                for i in range(self.workers):
                    tg.create_task(self._worker(), name=f"{self.name}-worker-{i}")
                for i, coro in enumerate(self.background()):
                    tg.create_task(coro, name=f"{self.name}-background-{i}")
        finally:
            self.queue.shutdown()

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDown:
                return
            try:
                await self.process(key)
            finally:
                self.queue.done(key)

    async def process(self, key: str) -> None:
        """One reconcile of ``key`` with the error policy applied (exposed for tests)."""
        try:
            await self.reconcile(key)
        except ConflictError as exc:
            delay = self.queue.add_conflicted(key)
            log.debug("%s: %s: conflict (%s); retrying in %.2fs", self.name, key, exc, delay)
        except NotFoundError as exc:
            self.queue.forget(key)
            log.debug("%s: %s: not found (%s); done", self.name, key, exc)
        except TemporaryError as exc:
            self.queue.add_after(key, exc.delay)
            log.info("%s: %s: %s; retrying in %.1fs", self.name, key, exc, exc.delay)
        except (ServerUnreachableError, APIStatusError) as exc:
            delay = self.queue.add_rate_limited(key)
            log.warning("%s: %s: %s; retrying in %.1fs", self.name, key, exc, delay)
        except Exception:
            delay = self.queue.add_rate_limited(key)
            log.exception("%s: %s: reconcile failed; retrying in %.1fs", self.name, key, delay)
        else:
            self.queue.forget(key)


async def slow_start_batch(
    count: int, fn: Callable[[], Awaitable[None]], initial: int = 1, max_batch: int = 16
) -> tuple[int, Exception | None]:
    """Call ``fn`` ``count`` times in concurrent batches of 1, 2, 4, 8, ... (Kubernetes'
    ``slowStartBatch``): a quota or validation problem then costs one failed request, not
    a hundred, while a healthy burst still finishes in a few round trips. Batches stop
    growing at ``max_batch`` so one controller cannot take the client's whole connection
    pool. Stops after the first batch with a failure; returns (successes, first error)."""
    done = 0
    batch = max(1, initial)
    while done < count:
        size = min(batch, count - done)
        results = await asyncio.gather(*(fn() for _ in range(size)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for err in errors:
            if not isinstance(err, Exception):
                raise err
        done += size - len(errors)
        if errors:
            return done, cast(Exception, errors[0])
        batch = min(batch * 2, max(1, max_batch))
    return done, None


async def periodic(
    interval: float,
    fn: Callable[[], Awaitable[None]],
    name: str,
    *,
    initial_delay: float = 0.0,
) -> None:
    """Call ``fn`` every ``interval`` seconds until cancelled; a failing call is logged and
    the loop goes on (a monitor must outlive one bad tick)."""
    if initial_delay > 0:
        await asyncio.sleep(initial_delay)
    while True:
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; will run again in %.1fs", name, interval)
        await asyncio.sleep(interval)


class NamespaceIndex(Generic[T]):
    """The objects of one informer grouped by namespace, kept current by an informer handler,
    so a reconcile looks at one namespace instead of scanning every object in the cluster."""

    def __init__(self, informer: Informer[T]) -> None:
        self._by_ns: dict[str, dict[str, T]] = {}
        informer.add_handler(self._on_event)

    def _on_event(self, _type: str, old: T | None, new: T | None) -> None:
        if old is not None:
            bucket = self._by_ns.get(old.namespace)
            if bucket is not None:
                bucket.pop(old.key, None)
        if new is not None:
            self._by_ns.setdefault(new.namespace, {})[new.key] = new

    def list(self, namespace: str) -> list[T]:
        return list(self._by_ns.get(namespace, {}).values())


class SharedInformers:
    """One informer per kind, shared by every controller of a manager.

    Controllers ask for the informers they need while they are built (which registers their
    handlers before the first list, so the initial objects arrive as ADDED events); the
    manager then starts them all once and waits for the caches to fill.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._informers: dict[str, Informer[Any]] = {}
        self._indexes: dict[str, NamespaceIndex[Any]] = {}
        self._started = False

    def for_client(self, rc: ResourceClient[T]) -> Informer[T]:
        kind = rc.info.kind
        informer = self._informers.get(kind)
        if informer is None:
            if self._started:
                raise RuntimeError(f"informer for {kind} requested after start()")
            informer = Informer(rc)
            self._informers[kind] = informer
            if rc.info.namespaced:
                self._indexes[kind] = NamespaceIndex(informer)
        return cast(Informer[T], informer)

    def get(self, kind: str) -> Informer[Any] | None:
        """The informer for ``kind`` if some controller asked for it."""
        return self._informers.get(kind)

    def in_namespace(self, informer: Informer[T], namespace: str) -> list[T]:
        index = self._indexes.get(informer.rc.info.kind)
        if index is None:
            return [o for o in informer.list() if o.namespace == namespace]
        return cast(list[T], index.list(namespace))

    @property
    def pods(self) -> Informer[Pod]:
        return self.for_client(self._client.pods)

    @property
    def replicasets(self) -> Informer[ReplicaSet]:
        return self.for_client(self._client.replicasets)

    @property
    def deployments(self) -> Informer[Deployment]:
        return self.for_client(self._client.deployments)

    @property
    def services(self) -> Informer[Service]:
        return self.for_client(self._client.services)

    @property
    def endpoints(self) -> Informer[Endpoints]:
        return self.for_client(self._client.endpoints)

    @property
    def nodes(self) -> Informer[Node]:
        return self.for_client(self._client.nodes)

    @property
    def networks(self) -> Informer[Network]:
        return self.for_client(self._client.networks)

    def all(self) -> list[Informer[Any]]:
        return list(self._informers.values())

    async def start(self) -> None:
        self._started = True
        for informer in self._informers.values():
            await informer.start()

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(
            asyncio.gather(*(i.wait_synced() for i in self._informers.values())), timeout
        )

    @property
    def synced(self) -> bool:
        return all(i.synced for i in self._informers.values())

    async def stop(self) -> None:
        for informer in self._informers.values():
            with contextlib.suppress(Exception):
                await informer.stop()
