"""Writes pod statuses to the API server: only when changed, coalesced, retried.

Like the kubelet's status manager and Nomad's batched alloc updates: workers hand in the
status they want reported and move on; this writer compares it with the newest copy of the
pod it has seen (from the informer or its own last write), writes through the status
subresource with optimistic concurrency, re-reads on conflict, and keeps the latest wish
queued while the server is away, so no worker ever blocks on the network.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from shoal._util import Backoff
from shoal.api import Pod
from shoal.client import Client
from shoal.errors import (
    APIStatusError,
    ConflictError,
    NotFoundError,
    ServerUnreachableError,
    TemporaryError,
)

log = logging.getLogger("shoal.agent.status")

_CONFLICT_RETRIES = 5


@dataclass
class _Wish:
    namespace: str
    name: str
    status: dict[str, Any]


def _rv(pod: Pod) -> int:
    try:
        return int(pod.metadata.resource_version or 0)
    except ValueError:
        return 0


class StatusReporter:
    """Coalescing, conflict-aware pod status writer. Run ``run()`` as a task."""

    def __init__(self, client: Client, *, coalesce: float = 0.05) -> None:
        self.client = client
        self.coalesce = coalesce
        self.writes = 0
        """Number of status writes sent (tests and metrics read it)."""
        self._pending: dict[str, _Wish] = {}
        self._latest: dict[str, Pod] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def observe(self, pod: Pod) -> None:
        """Remember the newest copy of a pod seen anywhere (the informer calls this)."""
        uid = pod.metadata.uid or ""
        current = self._latest.get(uid)
        if current is None or _rv(pod) >= _rv(current):
            self._latest[uid] = pod

    def submit(self, pod: Pod, status: dict[str, Any]) -> None:
        """Ask for ``status`` to be reported for ``pod``; replaces any earlier wish."""
        uid = pod.metadata.uid or ""
        self._pending[uid] = _Wish(pod.metadata.namespace or "default", pod.metadata.name, status)
        if uid not in self._latest:
            self._latest[uid] = pod
        self._idle.clear()
        self._wake.set()

    def forget(self, uid: str) -> None:
        """The pod is gone: drop its queued status and cached copy."""
        self._pending.pop(uid, None)
        self._latest.pop(uid, None)

    async def wait_idle(self) -> None:
        """Until nothing is queued (for tests and orderly shutdown)."""
        await self._idle.wait()

    async def run(self) -> None:
        backoff = Backoff(0.2, 5.0, jitter=0.2)
        while True:
            await self._wake.wait()
            # Let a burst of changes land first: five changes in 50 ms become one write.
            await asyncio.sleep(self.coalesce)
            self._wake.clear()
            if await self.flush():
                backoff.reset()
            else:
                await asyncio.sleep(backoff.next())
                self._wake.set()
            if not self._pending:
                self._idle.set()

    async def flush(self) -> bool:
        """Write every queued status once. False if the server was unreachable (the failed
        wishes stay queued unless a newer one replaced them meanwhile)."""
        ok = True
        for uid, wish in list(self._pending.items()):
            if self._pending.get(uid) is wish:
                del self._pending[uid]
            try:
                await self._write(uid, wish)
            except (ServerUnreachableError, APIStatusError, TemporaryError) as exc:
                if isinstance(exc, APIStatusError) and exc.code < 500 and exc.code != 429:
                    log.warning("status of pod %s/%s rejected: %s", wish.namespace, wish.name, exc)
                    continue
                log.debug("status of pod %s/%s not written yet: %s", wish.namespace, wish.name, exc)
                self._pending.setdefault(uid, wish)
                ok = False
            except Exception:
                log.exception("writing status of pod %s/%s failed", wish.namespace, wish.name)
        return ok

    async def _write(self, uid: str, wish: _Wish) -> None:
        for _ in range(_CONFLICT_RETRIES):
            basis = self._latest.get(uid)
            if basis is None:
                try:
                    basis = await self.client.pods.get(wish.name, wish.namespace)
                except NotFoundError:
                    return
                if basis.metadata.uid != uid:
                    return  # a new pod took the name; this status is not its
                self.observe(basis)
            if basis.status.to_dict() == wish.status:
                return
            body = basis.to_dict()
            body["status"] = wish.status
            try:
                updated = await self.client.pods.update_status(body)
            except ConflictError:
                try:
                    fresh = await self.client.pods.get(wish.name, wish.namespace)
                except NotFoundError:
                    return
                if fresh.metadata.uid != uid:
                    return
                self._latest[uid] = fresh
                continue
            except NotFoundError:
                return
            self.writes += 1
            if uid in self._latest or uid in self._pending:
                self.observe(updated)
            return
        raise TemporaryError(f"status of pod {wish.namespace}/{wish.name} kept conflicting")
