"""Client-side discovery: healthy instances of a service from a watch-backed local cache.

    async with Discovery("127.0.0.1:8500") as d:
        inst = await d.pick("web")                 # round robin by default
        async with d.request("web", strategy=LeastRequests()) as inst:
            ...                                    # in-flight counted while inside
        async for instances in d.changes("web"):   # the list now, then on every change
            ...

The first lookup of a (service, tag) fetches ``/v1/health/service/NAME?passing`` and starts a
background blocking query (``?index=&wait=``) that keeps the cache current; later lookups
answer from memory, with no request. It speaks only the Consul HTTP API, so it works against
shoal's registry and against Consul. When the registry is unreachable the watch retries with
back-off and the last good list keeps being served; only a lookup that has never succeeded
raises. Watches nobody has looked at for ``idle_timeout`` seconds stop by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import httpx

from shoal._util.backoff import Backoff
from shoal._util.duration import parse_duration
from shoal.discovery._client_instances import (
    DiscoveryError,
    ServiceInstance,
    parse_health_entries,
)
from shoal.discovery._client_pick import LeastRequests, Random, RoundRobin, Strategy
from shoal.errors import BadRequestError

__all__ = [
    "Discovery",
    "DiscoveryError",
    "LeastRequests",
    "Random",
    "RoundRobin",
    "ServiceInstance",
    "Strategy",
    "parse_health_entries",
]

log = logging.getLogger("shoal.discovery.client")


class _Default(enum.Enum):
    """Marks "the Discovery's own tag" in per-call ``tag`` arguments (``None``: no tag)."""

    TAG = "default"


_DEFAULT = _Default.TAG
Tag = str | None | _Default

_SPIN_GUARD = 0.05
"""A blocking query that returns the same index this fast is a spurious wake-up; wait this
long before the next so a misbehaving server cannot make the watch spin (Consul's advice)."""


class _Watch:
    """The cache of one (service, tag) and the task that keeps it fresh."""

    def __init__(self, strategy: Strategy) -> None:
        self.instances: list[ServiceInstance] = []
        self.index = 0
        self.version = 0
        self.fetched = False
        self.first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Callers may be cancelled while waiting; mark the outcome retrieved either way.
        self.first.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.strategy = strategy
        self.last_used = time.monotonic()
        self.subscribers = 0
        self.stopped = False

    def stop(self) -> None:
        """Wake every :meth:`Discovery.changes` iterator so it ends, and every lookup still
        waiting for a first answer so it fails instead of hanging."""
        self.stopped = True
        self.changed.set()
        if not self.first.done():
            self.first.set_exception(DiscoveryError("this Discovery was closed"))

    def publish(self, instances: list[ServiceInstance]) -> None:
        if self.fetched and instances == self.instances:
            return
        self.instances = instances
        self.version += 1
        old, self.changed = self.changed, asyncio.Event()
        old.set()


class Discovery:
    """Resolves services through a Consul-compatible HTTP API, caching per (service, tag).

    ``address`` is ``host:port`` or a URL (default: ``$CONSUL_HTTP_ADDR``, else
    ``127.0.0.1:8500``). ``tag`` is the default tag filter of every lookup. ``passing_only``
    keeps instances whose checks all pass; ``False`` also keeps those in ``warning`` (never
    ``critical``), as Consul's DNS does. ``wait`` is the blocking-query wait (how long one
    request may be held; the server adds up to 1/16 jitter). ``timeout`` bounds connecting
    and every non-blocking request. ``retry_max`` caps the back-off between failed watch
    requests. ``strategy`` makes the default pick strategy of each (service, tag).
    ``token`` is sent as ``X-Consul-Token`` (Consul ACLs; shoal ignores it)."""

    def __init__(
        self,
        address: str | None = None,
        *,
        tag: str | None = None,
        passing_only: bool = True,
        wait: str | float = "30s",
        timeout: float = 5.0,
        retry_max: float = 10.0,
        idle_timeout: float | None = 600.0,
        strategy: Callable[[], Strategy] = RoundRobin,
        token: str | None = None,
    ) -> None:
        address = address or os.environ.get("CONSUL_HTTP_ADDR") or "127.0.0.1:8500"
        base = address if address.startswith(("http://", "https://")) else f"http://{address}"
        try:
            self._wait = float(wait) if not isinstance(wait, str) else parse_duration(wait, "wait")
        except BadRequestError as exc:
            raise ValueError(f"Discovery wait: {exc.message}") from None
        if self._wait <= 0:
            raise ValueError(f"Discovery wait must be positive, got {wait!r}")
        if timeout <= 0 or retry_max <= 0:
            raise ValueError("Discovery timeout and retry_max must be positive")
        self.tag = tag
        self.passing_only = passing_only
        self._timeout = timeout
        self._retry_max = retry_max
        self._idle_timeout = idle_timeout
        self._strategy = strategy
        headers = {"X-Consul-Token": token} if token else {}
        self._http = httpx.AsyncClient(base_url=base, timeout=timeout, headers=headers)
        self._watches: dict[tuple[str, str | None], _Watch] = {}
        self._in_flight: dict[str, int] = {}
        self._closed = False

    async def __aenter__(self) -> Discovery:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every watch and close the HTTP client. Safe to call twice."""
        self._closed = True
        watches = list(self._watches.values())
        self._watches.clear()
        for w in watches:
            w.stop()
            if w.task is not None:
                w.task.cancel()
        for w in watches:
            if w.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await w.task
        await self._http.aclose()

    # --- lookups ----------------------------------------------------------------------------

    def _key(self, service: str, tag: Tag) -> tuple[str, str | None]:
        if not service:
            raise DiscoveryError("a service name is required")
        return service, (self.tag if isinstance(tag, _Default) else tag)

    async def _watch(self, service: str, tag: Tag) -> _Watch:
        """The started watch of (service, tag), after its first successful fetch."""
        if self._closed:
            raise DiscoveryError("this Discovery is closed")
        key = self._key(service, tag)
        w = self._watches.get(key)
        if w is None:
            w = self._watches[key] = _Watch(self._strategy())
            w.task = asyncio.create_task(self._run(key, w), name=f"discovery:{service}")
        w.last_used = time.monotonic()
        if not w.fetched:
            await asyncio.shield(w.first)
        return w

    async def instances(self, service: str, tag: Tag = _DEFAULT) -> list[ServiceInstance]:
        """The healthy instances of ``service`` (with ``tag``; default: the Discovery's),
        sorted by node and id. Answers from the cache once the first fetch succeeded; raises
        :class:`DiscoveryError` if that first fetch fails."""
        return list((await self._watch(service, tag)).instances)

    async def changes(
        self, service: str, tag: Tag = _DEFAULT
    ) -> AsyncGenerator[list[ServiceInstance], None]:
        """The instances now, then again each time the cached list changes (for callers that
        keep connection pools or configuration in step with the registry)."""
        w = await self._watch(service, tag)
        w.subscribers += 1
        try:
            seen = w.version
            yield list(w.instances)
            while True:
                while w.version == seen and not w.stopped:
                    await w.changed.wait()
                if w.stopped:
                    return
                seen = w.version
                yield list(w.instances)
        finally:
            w.subscribers -= 1
            w.last_used = time.monotonic()

    async def pick(
        self, service: str, *, tag: Tag = _DEFAULT, strategy: Strategy | None = None
    ) -> ServiceInstance:
        """One healthy instance chosen by ``strategy`` (default: this (service, tag)'s own
        strategy, round robin unless the Discovery was made with another)."""
        w = await self._watch(service, tag)
        if not w.instances:
            _, t = self._key(service, tag)
            with_tag = f' with tag "{t}"' if t else ""
            raise DiscoveryError(f'service "{service}"{with_tag} has no healthy instance')
        return (strategy or w.strategy).pick(w.instances, self._in_flight)

    async def resolve(self, service: str, tag: Tag = _DEFAULT) -> str:
        """``host:port`` of one healthy instance, by the service's default strategy."""
        return (await self.pick(service, tag=tag)).hostport

    @contextlib.asynccontextmanager
    async def request(
        self, service: str, *, tag: Tag = _DEFAULT, strategy: Strategy | None = None
    ) -> AsyncIterator[ServiceInstance]:
        """Pick an instance and count a request in flight on it until the block ends (what
        :class:`LeastRequests` balances on)."""
        inst = await self.pick(service, tag=tag, strategy=strategy)
        key = inst.key
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield inst
        finally:
            left = self._in_flight[key] - 1
            if left:
                self._in_flight[key] = left
            else:
                del self._in_flight[key]

    def watching(self) -> list[tuple[str, str | None]]:
        """The (service, tag) pairs whose watch runs now (idle ones stop after
        ``idle_timeout``)."""
        return sorted(self._watches, key=lambda k: (k[0], k[1] or ""))

    def in_flight(self) -> dict[str, int]:
        """Requests open through :meth:`request`, by :attr:`ServiceInstance.key`."""
        return dict(self._in_flight)

    # --- the watch ------------------------------------------------------------------------

    async def _fetch(self, service: str, tag: str | None, index: int) -> tuple[Any, int]:
        params: dict[str, str] = {}
        if self.passing_only:
            params["passing"] = "1"
        if tag is not None:
            params["tag"] = tag
        timeout = self._timeout
        if index:
            params["index"] = str(index)
            params["wait"] = f"{self._wait:g}s"
            timeout += self._wait * 17 / 16
        path = "/v1/health/service/" + urllib.parse.quote(service, safe="")
        resp = await self._http.get(path, params=params, timeout=timeout)
        if resp.status_code != 200:
            text = resp.text.strip()[:200] or resp.reason_phrase
            raise DiscoveryError(f"{resp.request.url} answered {resp.status_code}: {text}")
        raw_index = resp.headers.get("X-Consul-Index", "")
        try:
            new_index = int(raw_index)
            body = resp.json()
        except ValueError as exc:
            raise DiscoveryError(
                f"{resp.request.url} answered no valid X-Consul-Index ({raw_index!r}) or JSON: "
                f"{exc}"
            ) from None
        return body, new_index

    async def _run(self, key: tuple[str, str | None], w: _Watch) -> None:
        service, tag = key
        backoff = Backoff(initial=min(0.1, self._retry_max), cap=self._retry_max, jitter=0.2)
        while True:
            if (
                self._idle_timeout is not None
                and w.fetched
                and not w.subscribers
                and time.monotonic() - w.last_used > self._idle_timeout
            ):
                log.debug("stopping the idle watch of %s", service)
                if self._watches.get(key) is w:
                    del self._watches[key]
                w.stop()
                return
            started = time.monotonic()
            try:
                body, index = await self._fetch(service, tag, w.index)
                instances = parse_health_entries(body, service, passing_only=self.passing_only)
            except (httpx.HTTPError, DiscoveryError) as exc:
                if not w.fetched:
                    # Never fetched: the caller gets the error; a later lookup starts afresh.
                    if self._watches.get(key) is w:
                        del self._watches[key]
                    if not w.first.done():
                        w.first.set_exception(DiscoveryError(
                            f'cannot resolve service "{service}": {_describe(exc)}'
                        ))  # fmt: skip
                    return
                delay = backoff.next()
                log.warning("watch of %s failed (%s); serving the last list, retrying in "
                            "%.1fs", service, _describe(exc), delay)  # fmt: skip
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            spurious = w.fetched and index == w.index
            # Consul's rules: an index going backwards (a reset registry) restarts the watch
            # from scratch; an index below 1 is treated as 1 so the next request blocks.
            w.index = 0 if index < w.index else max(index, 1)
            w.publish(instances)
            if not w.fetched:
                w.fetched = True
                if not w.first.done():
                    w.first.set_result(None)
            if spurious and time.monotonic() - started < _SPIN_GUARD:
                await asyncio.sleep(_SPIN_GUARD)


def _describe(exc: Exception) -> str:
    """One line for an error; httpx's are prefixed with their class (some have no text)."""
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return str(exc)
