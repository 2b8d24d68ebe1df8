"""Image pulls for a pod's containers, the way the kubelet does them.

Only for drivers that run images (runc); the process driver runs host commands and never
pulls. Before a container starts, its image must be present per its ``imagePullPolicy``:

* ``IfNotPresent``/``Never``: a stored image is used as is (Normal Pulled ``Container image
  "X" already present on machine``). ``Never`` with no stored image is ErrImageNeverPull.
* ``Always``, or an absent ``IfNotPresent`` image: Normal Pulling ``Pulling image "X"``, then
  Normal Pulled ``Successfully pulled image "X" in 1.2s ...`` or Warning Failed ``Failed to
  pull image "X": <the registry's message>`` with the waiting reason ErrImagePull.
* After a failure the next pull waits out a back-off (``image_pull_backoff_initial``
  doubling to ``image_pull_backoff_cap``, like CrashLoopBackOff). ErrImagePull is shown for
  the first half of that wait (at most ``image_pull_backoff_initial``), then the reason
  turns to ImagePullBackOff with a Normal BackOff ``Back-off pulling image "X"`` event,
  until the retry.

Each pull runs as its own task, so the pod worker keeps reacting (to a deletion, to its other
containers) while an image downloads, and pods never wait for each other's pulls. The
ImageService shares one download among everyone pulling the same reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from shoal._util import Clock
from shoal.agent._status import format_duration
from shoal.errors import ShoalError
from shoal.runtime.images import ImageNotFoundError, ImageRecord, InvalidReferenceError

log = logging.getLogger("shoal.agent.images")

PullPolicy = Literal["Always", "IfNotPresent", "Never"]


class ImagePuller(Protocol):
    """What the agent needs of an image service (``shoal.runtime.images.ImageService``)."""

    def get(self, reference: str) -> ImageRecord:
        """The stored image; raises ImageNotFoundError when absent."""
        ...

    async def ensure(self, reference: str, policy: PullPolicy) -> tuple[ImageRecord, bool]: ...


EventFn = Callable[[str, str, str], None]
"""(reason, message, type) -> records an Event about the pod."""


@dataclass(frozen=True)
class Waiting:
    """The container cannot start yet; show this waiting reason (None: keep the current)."""

    reason: str | None = None
    message: str | None = None


class _NeverPull(Exception):
    pass


class ImageGate:
    """The pull state of one container's image, advanced by the pod worker on each sync.

    ``check()`` returns the ImageRecord once the image is there for this start, or a
    Waiting; ``taken()`` after a successful start, so the next start (a restart) checks the
    policy again, as the kubelet does for every container start.
    """

    def __init__(
        self,
        image: str,
        policy: PullPolicy,
        puller: ImagePuller,
        *,
        emit: EventFn,
        wake: Callable[[], None],
        clock: Clock,
        backoff_initial: float,
        backoff_cap: float,
    ) -> None:
        self.image = image
        self.policy = policy
        self._puller = puller
        self._emit = emit
        self._wake = wake
        self._clock = clock
        self._initial = backoff_initial
        self._cap = backoff_cap
        self._task: asyncio.Task[ImageRecord] | None = None
        self._record: ImageRecord | None = None
        self.failures = 0
        """Consecutive failed pulls (drive the back-off; reset by a success)."""
        self._retry_at = 0.0
        self._backoff_at = 0.0
        self._in_backoff = False
        self._last_error: Waiting | None = None

    @property
    def pulling(self) -> bool:
        return self._task is not None

    def check(self) -> ImageRecord | Waiting:
        if self._record is not None:
            return self._record
        if self._task is not None:
            if not self._task.done():
                return Waiting()
            task, self._task = self._task, None
            return self._landed(task)
        now = self._clock.monotonic()
        if self.failures and now < self._retry_at:
            if now >= self._backoff_at and not self._in_backoff:
                self._in_backoff = True
                self._emit("BackOff", f'Back-off pulling image "{self.image}"', "Normal")
                self._emit("Failed", "Error: ImagePullBackOff", "Warning")
            if self._in_backoff:
                last = self._last_error
                detail = f": {last.reason}: {last.message}" if last and last.message else ""
                return Waiting("ImagePullBackOff", f'Back-off pulling image "{self.image}"{detail}')
            return self._last_error or Waiting()
        self._task = asyncio.create_task(self._fetch(), name=f"pull-{self.image}")
        self._task.add_done_callback(lambda _t: self._wake())
        return Waiting()

    def taken(self) -> None:
        """The container started with the image; the next start checks again."""
        self._record = None

    def next_deadline(self) -> float | None:
        """Monotonic time of the next change this gate needs a sync for, if any."""
        if self._task is not None or self._record is not None or not self.failures:
            return None
        return self._backoff_at if not self._in_backoff else self._retry_at

    def cancel(self) -> None:
        """Stop waiting for a pull (the pod is going away). The shared download itself goes
        on for other waiters; the ImageService shields it."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _fetch(self) -> ImageRecord:
        if self.policy != "Always":
            with contextlib.suppress(ImageNotFoundError):
                record = await asyncio.to_thread(self._puller.get, self.image)
                self._emit(
                    "Pulled", f'Container image "{self.image}" already present on machine', "Normal"
                )
                return record
            if self.policy == "Never":
                raise _NeverPull()
        self._emit("Pulling", f'Pulling image "{self.image}"', "Normal")
        started = self._clock.monotonic()
        record, _ = await self._puller.ensure(self.image, self.policy)
        took = format_duration(self._clock.monotonic() - started)
        self._emit(
            "Pulled",
            f'Successfully pulled image "{self.image}" in {took} ({took} including waiting). '
            f"Image size: {record.size} bytes.",
            "Normal",
        )
        return record

    def _landed(self, task: asyncio.Task[ImageRecord]) -> ImageRecord | Waiting:
        exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if exc is None:
            self.failures = 0
            self._in_backoff = False
            self._last_error = None
            self._record = task.result()
            return self._record
        if isinstance(exc, _NeverPull):
            message = f'Container image "{self.image}" is not present with pull policy of Never'
            self._emit("ErrImageNeverPull", message, "Warning")
            waiting = Waiting("ErrImageNeverPull", message)
            reason = "ErrImageNeverPull"
        elif isinstance(exc, InvalidReferenceError):
            message = f'Failed to apply default image tag "{self.image}": {exc}'
            self._emit("InspectFailed", message, "Warning")
            waiting = Waiting("InvalidImageName", message)
            reason = "InvalidImageName"
        else:
            detail = str(exc) if isinstance(exc, ShoalError | OSError) else repr(exc)
            if not isinstance(exc, ShoalError | OSError | asyncio.CancelledError):
                log.error("pull of %s failed unexpectedly", self.image, exc_info=exc)
            self._emit("Failed", f'Failed to pull image "{self.image}": {detail}', "Warning")
            waiting = Waiting("ErrImagePull", detail)
            reason = "ErrImagePull"
        self._emit("Failed", f"Error: {reason}", "Warning")
        self.failures += 1
        delay = min(self._cap, self._initial * 2 ** min(self.failures - 1, 62))
        now = self._clock.monotonic()
        self._retry_at = now + delay
        self._backoff_at = now + min(delay / 2, self._initial)
        self._in_backoff = False
        self._last_error = waiting
        return waiting
