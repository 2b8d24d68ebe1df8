"""shoal.discovery.client against a real registry: a watch-backed cache that follows
registrations, health changes and deregistrations without the caller polling, pick strategies
over real instances, a registry restart, and clear errors."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import consul.aio
import pytest
from consul import Check

from shoal.discovery import RegistryConfig
from shoal.discovery.client import Discovery, DiscoveryError, LeastRequests, ServiceInstance
from shoal.testing import free_port, running_api_server

pytestmark = pytest.mark.asyncio

FOLLOW = 1.5
"""How long the cache may take to follow a change (the target is well under a second)."""


@pytest.fixture
async def env() -> AsyncIterator[tuple[consul.aio.Consul, int]]:
    async with running_api_server(
        registry=RegistryConfig(node_name="cl-node", consul_port=0, dns_port=-1)
    ) as srv:
        assert srv.registry is not None
        port = srv.registry.consul_port
        c = consul.aio.Consul(host="127.0.0.1", port=port)
        try:
            yield c, port
        finally:
            await c.close()


async def _next(it: AsyncGenerator[list[ServiceInstance], None]) -> set[str]:
    """The next list the cache publishes, by id; fails if it takes longer than FOLLOW."""
    return {i.id for i in await asyncio.wait_for(anext(it), FOLLOW)}


async def _register(c: consul.aio.Consul, sid: str, port: int, **kw: object) -> None:
    await c.agent.service.register("web", service_id=sid, port=port, check=Check.ttl("60s"), **kw)
    await c.agent.check.ttl_pass(f"service:{sid}")


async def test_cache_follows_registry_changes(env: tuple[consul.aio.Consul, int]) -> None:
    c, port = env
    await _register(c, "web-1", 9001, address="127.0.0.2")
    await _register(c, "web-2", 9002, address="127.0.0.3", tags=["blue"])
    async with Discovery(f"127.0.0.1:{port}", wait="5s") as d:
        first = await d.instances("web")
        assert [(i.id, i.address, i.port, i.node) for i in first] == [
            ("web-1", "127.0.0.2", 9001, "cl-node"), ("web-2", "127.0.0.3", 9002, "cl-node")
        ]  # fmt: skip
        changes = d.changes("web")
        assert await _next(changes) == {"web-1", "web-2"}  # the list as it is now
        started = time.monotonic()
        await _register(c, "web-3", 9003)  # no address: the node's
        assert await _next(changes) == {"web-1", "web-2", "web-3"}
        await c.agent.check.ttl_fail("service:web-1")
        assert await _next(changes) == {"web-2", "web-3"}
        await c.agent.service.deregister("web-2")
        assert await _next(changes) == {"web-3"}
        await c.agent.check.ttl_pass("service:web-1")
        assert await _next(changes) == {"web-1", "web-3"}
        assert time.monotonic() - started < 4 * FOLLOW
        await changes.aclose()
        by_id = {i.id: i for i in await d.instances("web")}
        assert by_id["web-3"].address == "127.0.0.1"  # the node address of cl-node
        assert d.watching() == [("web", None)]


async def test_strategies_over_real_instances(env: tuple[consul.aio.Consul, int]) -> None:
    c, port = env
    for i in range(3):
        await c.agent.service.register("api", service_id=f"api-{i}", address="127.0.0.1",
                                       port=7000 + i, tags=["blue"] if i else [])  # fmt: skip
    async with Discovery(f"127.0.0.1:{port}", wait="5s") as d:
        assert [(await d.pick("api")).id for _ in range(6)] == [
            "api-0", "api-1", "api-2", "api-0", "api-1", "api-2"
        ]  # fmt: skip
        assert await d.resolve("api") == "127.0.0.1:7000"
        least = LeastRequests(seed=2)
        async with d.request("api", strategy=least) as a, d.request("api", strategy=least) as b:
            assert d.in_flight() == {a.key: 1, b.key: 1}
            idle = await d.pick("api", strategy=least)
            assert {a.id, b.id, idle.id} == {"api-0", "api-1", "api-2"}
            # With one busy instance per slot, the idle one keeps winning.
            again = [(await d.pick("api", strategy=least)).id for _ in range(20)]
            assert Counter(again) == {idle.id: 20}
        assert d.in_flight() == {}
        assert {i.id for i in await d.instances("api", tag="blue")} == {"api-1", "api-2"}
        with pytest.raises(DiscoveryError, match='service "nothing-here" has no healthy'):
            await d.pick("nothing-here")
    async with Discovery(f"127.0.0.1:{port}", tag="blue") as blue:
        assert {(await blue.pick("api")).id for _ in range(4)} == {"api-1", "api-2"}


async def test_passing_only_false_keeps_warning_drops_critical(
    env: tuple[consul.aio.Consul, int],
) -> None:
    c, port = env
    for sid in ("ok", "warn", "bad"):
        await _register(c, sid, 8000)
    await c.agent.check.ttl_warn("service:warn")
    await c.agent.check.ttl_fail("service:bad")
    async with Discovery(f"127.0.0.1:{port}", passing_only=False) as relaxed:
        got = await relaxed.instances("web")
        assert [(i.id, i.status) for i in got] == [("ok", "passing"), ("warn", "warning")]
    async with Discovery(f"127.0.0.1:{port}") as strict:
        assert [i.id for i in await strict.instances("web")] == ["ok"]


async def test_unreachable_registry_is_a_clear_error() -> None:
    async with Discovery(f"127.0.0.1:{free_port()}", timeout=0.5) as d:
        for _ in range(2):  # each lookup tries afresh, and no watch is left behind
            with pytest.raises(DiscoveryError, match='cannot resolve service "web": ConnectError'):
                await d.instances("web")
            assert d.watching() == []
    with pytest.raises(ValueError, match='invalid wait "soon"'):
        Discovery(wait="soon")


async def test_idle_watch_stops(env: tuple[consul.aio.Consul, int]) -> None:
    _c, port = env
    async with Discovery(f"127.0.0.1:{port}", wait="0.3s", idle_timeout=0.2) as d:
        assert await d.instances("quiet") == []
        assert d.watching() == [("quiet", None)]
        deadline = time.monotonic() + 3
        while d.watching() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert d.watching() == []
        assert await d.instances("quiet") == []  # a later lookup starts a new watch


async def test_watch_survives_a_registry_restart(tmp_path: Path) -> None:
    port = free_port()

    def config() -> RegistryConfig:
        return RegistryConfig(node_name="rs-node", consul_port=port, dns_port=-1)

    async with Discovery(f"127.0.0.1:{port}", wait="5s", retry_max=0.3) as d:
        async with running_api_server(tmp_path, registry=config()):
            c = consul.aio.Consul(host="127.0.0.1", port=port)
            try:
                await _register(c, "web-a", 9100, address="127.0.0.5")
            finally:
                await c.close()
            changes = d.changes("web")
            assert await _next(changes) == {"web-a"}
        # The registry is down: the cache keeps answering, with no request.
        got = await asyncio.wait_for(d.instances("web"), 0.1)
        assert [i.id for i in got] == ["web-a"]
        await asyncio.sleep(0.5)  # several failed retries
        assert [i.id for i in await d.instances("web")] == ["web-a"]
        async with running_api_server(tmp_path, registry=config()):
            c = consul.aio.Consul(host="127.0.0.1", port=port)
            try:
                await _register(c, "web-b", 9101, address="127.0.0.6")
                deadline = time.monotonic() + 3
                seen: set[str] = set()
                while seen != {"web-a", "web-b"}:
                    remaining = deadline - time.monotonic()
                    assert remaining > 0, f"the watch did not resume (last seen {seen})"
                    seen = {i.id for i in await asyncio.wait_for(anext(changes), remaining)}
            finally:
                await c.close()
                await changes.aclose()


async def test_close_wakes_waiting_lookups_and_iterators(
    env: tuple[consul.aio.Consul, int],
) -> None:
    _c, port = env
    d = Discovery(f"127.0.0.1:{port}", wait="5s")
    changes = d.changes("web")
    assert await _next(changes) == set()
    pending = asyncio.create_task(anext(changes))
    await asyncio.sleep(0.05)
    await d.aclose()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 1)
    with pytest.raises(DiscoveryError, match="closed"):
        await d.instances("web")
