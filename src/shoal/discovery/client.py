"""Client-side discovery: healthy instances of a service from a watch-backed local cache.

    async with Discovery("127.0.0.1:8500") as d:
        inst = await d.pick("web")                 # round robin by default
        async with d.request("web", strategy=LeastRequests()) as inst:
            ...                                    # in-flight counted while inside

The first lookup of a service fetches ``/v1/health/service/NAME?passing`` and starts a
background blocking query (``?index=&wait=``) that keeps the cache current; later lookups
answer from memory, with no request. Works against shoal's registry and against Consul.
When the registry is unreachable the watch retries with back-off and the last good list
keeps being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import httpx

from shoal._util.backoff import Backoff
from shoal.errors import ShoalError

log = logging.getLogger("shoal.discovery.client")


class DiscoveryError(ShoalError):
    """A service could not be resolved (registry unreachable on first use, or no healthy
    instance)."""


@dataclass(frozen=True)
class ServiceInstance:
    id: str
    service: str
    address: str
    port: int
    node: str = ""
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def hostport(self) -> str:
        return (
            f"[{self.address}]:{self.port}"
            if ":" in self.address
            else f"{self.address}:{self.port}"
        )


def _instance(entry: Mapping[str, Any]) -> ServiceInstance:
    svc, node = entry["Service"], entry.get("Node") or {}
    return ServiceInstance(
        id=str(svc["ID"]),
        service=str(svc["Service"]),
        address=str(svc.get("Address") or node.get("Address") or ""),
        port=int(svc.get("Port") or 0),
        node=str(node.get("Node") or ""),
        tags=tuple(svc.get("Tags") or ()),
        meta=MappingProxyType(dict(svc.get("Meta") or {})),
    )


class Strategy(Protocol):
    """Chooses one of ``instances``; ``in_flight`` counts open requests by instance id."""

    def pick(
        self, instances: Sequence[ServiceInstance], in_flight: Mapping[str, int]
    ) -> ServiceInstance: ...


class RoundRobin:
    """Each instance in turn (by id order, so a changing list stays fair)."""

    def __init__(self) -> None:
        self._next = 0

    def pick(
        self, instances: Sequence[ServiceInstance], in_flight: Mapping[str, int]
    ) -> ServiceInstance:
        chosen = instances[self._next % len(instances)]
        self._next += 1
        return chosen


class Random:
    """Uniformly at random (seedable for tests)."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def pick(
        self, instances: Sequence[ServiceInstance], in_flight: Mapping[str, int]
    ) -> ServiceInstance:
        return self._rng.choice(list(instances))


class LeastRequests:
    """Fewest in-flight requests, ties broken at random."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def pick(
        self, instances: Sequence[ServiceInstance], in_flight: Mapping[str, int]
    ) -> ServiceInstance:
        low = min(in_flight.get(i.id, 0) for i in instances)
        return self._rng.choice([i for i in instances if in_flight.get(i.id, 0) == low])


class _Watch:
    def __init__(self) -> None:
        self.instances: list[ServiceInstance] = []
        self.index = 0
        self.ready = asyncio.Event()
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self.strategy: Strategy = RoundRobin()


class Discovery:
    """Resolves services through a Consul-compatible API, with a cache per (service, tag)."""

    def __init__(
        self,
        address: str = "127.0.0.1:8500",
        *,
        wait: str = "30s",
        timeout: float = 5.0,
    ) -> None:
        base = address if address.startswith(("http://", "https://")) else f"http://{address}"
        self._wait = wait
        self._http = httpx.AsyncClient(base_url=base, timeout=timeout)
        self._watches: dict[tuple[str, str | None], _Watch] = {}
        self._in_flight: dict[str, int] = {}

    async def __aenter__(self) -> Discovery:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for w in self._watches.values():
            if w.task is not None:
                w.task.cancel()
        for w in self._watches.values():
            if w.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await w.task
        await self._http.aclose()

    async def instances(self, service: str, tag: str | None = None) -> list[ServiceInstance]:
        """The passing instances of ``service`` (with ``tag``), from the cache."""
        key = (service, tag)
        w = self._watches.get(key)
        if w is None:
            w = self._watches[key] = _Watch()
            w.task = asyncio.create_task(self._run(service, tag, w), name=f"discovery:{service}")
        if not w.ready.is_set():
            await w.ready.wait()
            if w.error is not None and not w.instances and w.index == 0:
                self._watches.pop(key, None)
                if w.task is not None:
                    w.task.cancel()
                raise DiscoveryError(f'cannot resolve service "{service}": {w.error}')
        return list(w.instances)

    async def pick(
        self, service: str, *, tag: str | None = None, strategy: Strategy | None = None
    ) -> ServiceInstance:
        """One healthy instance, chosen by ``strategy`` (default: this service's round robin)."""
        found = await self.instances(service, tag)
        if not found:
            raise DiscoveryError(f'service "{service}" has no healthy instance')
        chooser = strategy or self._watches[(service, tag)].strategy
        return chooser.pick(found, self._in_flight)

    async def resolve(self, service: str, tag: str | None = None) -> str:
        """``host:port`` of one healthy instance (round robin)."""
        return (await self.pick(service, tag=tag)).hostport

    @contextlib.asynccontextmanager
    async def request(
        self, service: str, *, tag: str | None = None, strategy: Strategy | None = None
    ) -> AsyncIterator[ServiceInstance]:
        """Pick an instance and count a request in flight on it until the block ends (what
        :class:`LeastRequests` balances on)."""
        inst = await self.pick(service, tag=tag, strategy=strategy)
        self._in_flight[inst.id] = self._in_flight.get(inst.id, 0) + 1
        try:
            yield inst
        finally:
            left = self._in_flight[inst.id] - 1
            if left:
                self._in_flight[inst.id] = left
            else:
                del self._in_flight[inst.id]

    async def _run(self, service: str, tag: str | None, w: _Watch) -> None:
        backoff = Backoff(initial=0.2, cap=10.0, jitter=0.1)
        while True:
            params: dict[str, str] = {"passing": "1"}
            if tag is not None:
                params["tag"] = tag
            if w.index:
                params["index"], params["wait"] = str(w.index), self._wait
            try:
                resp = await self._http.get(
                    f"/v1/health/service/{service}", params=params, timeout=None
                )
                resp.raise_for_status()
                index = int(resp.headers.get("X-Consul-Index", "0"))
                w.instances = sorted((_instance(e) for e in resp.json()), key=lambda i: i.id)
                # An index going backwards (a registry reset) restarts the watch from scratch.
                w.index = index if index >= w.index else 0
                w.error = None
                backoff.reset()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                w.error = exc
                w.ready.set()
                delay = backoff.next()
                log.debug("watch of %s failed (%s); retrying in %.1fs", service, exc, delay)
                await asyncio.sleep(delay)
                continue
            w.ready.set()
