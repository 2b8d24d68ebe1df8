"""What the process and runc drivers share: log files, host ports, exit watching and recording.

Both keep a ``ContainerRecord`` per container, write each attempt's output to
``<log_dir>/<pod uid>/<name>/<attempt>.log`` (capped by copytruncate), hand out host ports
that stay stable across restarts, and learn of an exit through a pidfd on the event loop.
``DriverBase`` holds that once; each driver supplies how to save a record and how to check
for (and collect) an exit.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, TypeVar

from shoal._util import Clock
from shoal.errors import DriverError
from shoal.runtime import _procutil as pu
from shoal.runtime._protocol import ContainerStatus, PortRequest
from shoal.runtime._record import ContainerRecord

__all__ = ["DriverBase", "ExitHook"]

ExitHook = Callable[[ContainerStatus], None]
"""Called on the event loop with the final status when a container's process exits."""

R = TypeVar("R", bound=ContainerRecord)


class DriverBase(Generic[R]):
    """The common half of a driver; the subclass's ``__init__`` sets the attributes below."""

    log_dir: Path
    log_max_bytes: int
    on_exit: ExitHook | None
    _clock: Clock
    _containers: dict[str, R]
    _names: dict[str, tuple[str, str]]
    """container_id -> (pod_uid, name); kept after remove() so logs stay findable."""

    # --- for the subclass to provide ---------------------------------------------------------

    def _save(self, c: R) -> None:
        """Write ``c``'s state file (logging, not raising, when that fails)."""
        raise NotImplementedError

    def _check_exit(self, c: R) -> object:
        """Called when ``c``'s pidfd is readable (or its pid is gone): record an exit."""
        raise NotImplementedError

    # --- Driver protocol ---------------------------------------------------------------------

    async def inspect(self, container_id: str) -> ContainerStatus:
        return self._get(container_id).status()

    async def list(self) -> builtins.list[ContainerStatus]:
        return [c.status() for c in self._containers.values()]

    def log_path(self, container_id: str, attempt: int) -> Path:
        names = self._names.get(container_id)
        if names is None:
            # An id this instance never saw: pod UIDs and DNS names contain no ``_``.
            pod_uid, sep, name = container_id.partition("_")
            if not sep:
                raise DriverError(f"no such container: {container_id}")
            pu.check_safe("pod uid", pod_uid)
            pu.check_safe("container name", name)
            names = (pod_uid, name)
        return self.log_dir / names[0] / names[1] / f"{attempt}.log"

    # --- extras for the agent ----------------------------------------------------------------

    async def enforce_log_limits(self) -> None:
        """Cap each running container's log with copytruncate (to ``<attempt>.log.1``)."""
        for c in builtins.list(self._containers.values()):
            if c.state != "running":
                continue
            try:
                size = c.log_path.stat().st_size
            except OSError:
                continue
            if size > self.log_max_bytes:
                await asyncio.to_thread(pu.copytruncate, c.log_path)

    def remove_logs(self, pod_uid: str) -> None:
        """Delete every log of a pod (all containers, all attempts): the pod is gone."""
        pu.check_safe("pod uid", pod_uid)
        shutil.rmtree(self.log_dir / pod_uid, ignore_errors=True)

    def close(self) -> None:
        """Stop watching exits but leave the containers running: the next driver instance
        re-adopts them with recover()."""
        for c in self._containers.values():
            self._detach(c)

    # --- shared internals --------------------------------------------------------------------

    def _get(self, container_id: str) -> R:
        c = self._containers.get(container_id)
        if c is None:
            raise DriverError(f"no such container: {container_id}")
        return c

    def _assign_ports(
        self,
        container_id: str,
        ports: Iterable[PortRequest],
        previous: R | None,
        holds_ports: Callable[[R], bool],
    ) -> dict[int, int]:
        """Host ports for a new attempt of ``container_id`` (see ``pu.assign_host_ports``):
        ports of other containers for which ``holds_ports`` is true are never handed out,
        those remembered for the others are avoided."""
        held: set[int] = set()
        remembered: set[int] = set()
        for other in self._containers.values():
            if other.container_id == container_id:
                continue
            remembered.update(other.host_ports.values())
            if holds_ports(other):
                held.update(other.host_ports.values())
        before = previous.host_ports if previous is not None else {}
        return pu.assign_host_ports(ports, before, held, remembered)

    def _watch_pidfd(self, c: R, *, verify: bool = True) -> OSError | None:
        """Have ``_check_exit(c)`` called when ``c``'s process exits, via a pidfd registered
        with the event loop. ``verify``: check the pidfd's process is still the recorded one
        (by start time). Returns the error when the kernel gives no pidfd (nothing done)."""
        assert c.pid is not None
        try:
            fd = os.pidfd_open(c.pid)
        except ProcessLookupError:
            self._check_exit(c)
            return None
        except OSError as exc:
            return exc
        # The pidfd now pins one process; re-check it is the one we mean.
        if verify and not pu.is_same_process(c.pid, c.start_ticks):
            os.close(fd)  # the pid was reused: ours is long gone
            self._check_exit(c)
            return None
        c.pidfd = fd
        asyncio.get_running_loop().add_reader(fd, self._check_exit, c)
        return None

    def _detach(self, c: R) -> None:
        """Stop watching ``c`` (remove and close its pidfd)."""
        if c.pidfd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(c.pidfd)
            with contextlib.suppress(OSError):
                os.close(c.pidfd)
            c.pidfd = None

    def _mark_exited(
        self, c: R, code: int | None, *, notify: bool = True, reason: str | None = None
    ) -> None:
        """Record that ``c`` exited with ``code`` (None: unknown), save it, wake waiters and
        call the exit hook. ``reason`` defaults to Completed/Error/Unknown by the code."""
        self._detach(c)
        c.state = "exited"
        c.exit_code = code
        if reason is None:
            reason = "Unknown" if code is None else ("Completed" if code == 0 else "Error")
        c.reason = reason
        c.finished_at = self._clock.now()
        self._save(c)
        c.exited.set()
        log = logging.getLogger(type(self).__module__)
        log.info("%s exited code=%s reason=%s", c.container_id, code, c.reason)
        if notify and self.on_exit is not None:
            try:
                self.on_exit(c.status())
            except Exception:
                log.exception("on_exit hook failed for %s", c.container_id)
