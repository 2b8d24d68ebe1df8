"""shoal.discovery.client against a real registry: a watch-backed cache that follows
registrations, health changes and deregistrations without the caller polling, and pick
strategies."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import consul.aio
import pytest
from consul import Check

from shoal.discovery import RegistryConfig
from shoal.discovery.client import (
    Discovery,
    DiscoveryError,
    LeastRequests,
    Random,
    RoundRobin,
    ServiceInstance,
)
from shoal.testing import free_port, running_api_server

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def env() -> AsyncIterator[tuple[consul.aio.Consul, Discovery]]:
    async with running_api_server(
        registry=RegistryConfig(node_name="cl-node", consul_port=0, dns_port=-1)
    ) as srv:
        assert srv.registry is not None
        port = srv.registry.consul_port
        c = consul.aio.Consul(host="127.0.0.1", port=port)
        d = Discovery(f"127.0.0.1:{port}", wait="5s")
        try:
            yield c, d
        finally:
            await d.aclose()
            await c.close()


async def _until(probe: object, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "cache did not follow in time"
        await asyncio.sleep(0.02)


async def test_cache_follows_registry_changes(env: tuple[consul.aio.Consul, Discovery]) -> None:
    c, d = env
    for i in (1, 2):
        await c.agent.service.register("web", service_id=f"web-{i}", address="127.0.0.1",
                                       port=9000 + i, check=Check.ttl("60s"))  # fmt: skip
        await c.agent.check.ttl_pass(f"service:web-{i}")
    assert [i.port for i in await d.instances("web")] == [9001, 9002]

    async def ids(want: set[str]) -> bool:
        return {i.id for i in await d.instances("web")} == want

    await c.agent.service.register("web", service_id="web-3", port=9003, check=Check.ttl("60s"))
    await c.agent.check.ttl_pass("service:web-3")
    await _until(lambda: ids({"web-1", "web-2", "web-3"}))
    three = {i.id: i for i in await d.instances("web")}
    assert three["web-3"].address == "127.0.0.1"  # falls back to the node's address
    await c.agent.check.ttl_fail("service:web-1")
    await _until(lambda: ids({"web-2", "web-3"}))
    await c.agent.service.deregister("web-2")
    await _until(lambda: ids({"web-3"}))
    assert await d.resolve("web") == "127.0.0.1:9003"


async def test_strategies(env: tuple[consul.aio.Consul, Discovery]) -> None:
    c, d = env
    for i in range(3):
        await c.agent.service.register(
            "api", service_id=f"api-{i}", address="127.0.0.1", port=7000 + i
        )
    rr = Counter([(await d.pick("api")).id for _ in range(9)])
    assert rr == {"api-0": 3, "api-1": 3, "api-2": 3}
    rand = Random(seed=1)
    rnd = Counter([(await d.pick("api", strategy=rand)).id for _ in range(300)])
    assert set(rnd) == {"api-0", "api-1", "api-2"} and min(rnd.values()) > 50
    least = LeastRequests(seed=2)
    async with (
        d.request("api", strategy=least) as first,
        d.request("api", strategy=least) as second,
    ):
        third = await d.pick("api", strategy=least)
        assert len({first.id, second.id, third.id}) == 3  # the idle one is chosen
    with pytest.raises(DiscoveryError, match="no healthy instance"):
        await d.pick("nothing-here")


async def test_unreachable_registry_is_a_clear_error() -> None:
    async with Discovery(f"127.0.0.1:{free_port()}", timeout=0.5) as d:
        with pytest.raises(DiscoveryError, match='cannot resolve service "web"'):
            await d.instances("web")


def test_round_robin_is_pure() -> None:
    insts = [ServiceInstance(str(i), "s", "10.0.0.1", i) for i in range(3)]
    rr = RoundRobin()
    assert [rr.pick(insts, {}).id for _ in range(4)] == ["0", "1", "2", "0"]
    assert LeastRequests(seed=0).pick(insts, {"0": 2, "1": 1, "2": 5}).id == "1"
