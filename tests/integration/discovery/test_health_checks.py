"""Health checks run by the registry, driven through the real py-consul client: TTL, HTTP and
TCP checks against real local servers, script checks, DeregisterCriticalServiceAfter."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import consul.aio
import pytest
from aiohttp import web
from consul import Check

from shoal.discovery import RegistryConfig
from shoal.testing import free_port, running_api_server

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def agent(request: pytest.FixtureRequest) -> AsyncIterator[consul.aio.Consul]:
    scripts = getattr(request, "param", False)
    config = RegistryConfig(
        node_name="hc-node", consul_port=0, dns_port=-1, enable_script_checks=scripts
    )
    async with running_api_server(registry=config) as srv:
        assert srv.registry is not None
        c = consul.aio.Consul(host="127.0.0.1", port=srv.registry.consul_port)
        try:
            yield c
        finally:
            await c.close()


async def _check(c: consul.aio.Consul, cid: str) -> dict[str, Any]:
    checks = await c.agent.checks()
    return dict(checks[cid])


async def _eventually(
    probe: Callable[[], Awaitable[bool]], timeout: float = 5.0, step: float = 0.05
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(step)


async def test_ttl_check_goes_critical_then_passing(agent: consul.aio.Consul) -> None:
    c = agent
    await c.agent.service.register(
        "my-service",
        service_id="my-service",
        address="127.0.0.1",
        port=8080,
        tags=["web", "api"],
        check=Check.ttl("1s"),
    )
    assert (await _check(c, "service:my-service"))["Status"] == "critical"
    await c.agent.check.ttl_pass("service:my-service", "all good")
    check = await _check(c, "service:my-service")
    assert (check["Status"], check["Output"]) == ("passing", "all good")
    _, passing = await c.health.service("my-service", passing=True)
    assert [e["Service"]["ID"] for e in passing] == ["my-service"]

    async def expired() -> bool:
        got = await _check(c, "service:my-service")
        # Consul's wording keeps the last output the TTL check had.
        return bool(
            got["Status"] == "critical"
            and got["Output"] == "TTL expired (last output before timeout follows): all good"
        )

    await _eventually(expired, timeout=4)
    _, passing = await c.health.service("my-service", passing=True)
    assert passing == []
    await c.agent.check.ttl_warn("service:my-service", "slow")
    assert (await _check(c, "service:my-service"))["Status"] == "warning"
    await c.agent.check.ttl_pass("service:my-service")
    assert (await _check(c, "service:my-service"))["Status"] == "passing"


async def test_http_check_follows_a_real_server(agent: consul.aio.Consul) -> None:
    c = agent
    codes = [200]

    async def handle(_req: web.Request) -> web.Response:
        return web.Response(status=codes[0], text="hello")

    app = web.Application()
    app.router.add_get("/health", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stopped = False
    try:
        url = f"http://127.0.0.1:{port}/health"
        await c.agent.service.register(
            "web", service_id="web-1", address="127.0.0.1", port=port,
            check=Check.http(url, "100ms", timeout="1s"),
        )  # fmt: skip

        async def status_is(want: str) -> bool:
            return bool((await _check(c, "service:web-1"))["Status"] == want)

        await _eventually(lambda: status_is("passing"))
        assert (await _check(c, "service:web-1"))[
            "Output"
        ] == f"HTTP GET {url}: 200 OK Output: hello"
        codes[0] = 429
        await _eventually(lambda: status_is("warning"))
        codes[0] = 503
        await _eventually(lambda: status_is("critical"))
        codes[0] = 200
        await _eventually(lambda: status_is("passing"))
        await runner.cleanup()
        stopped = True
        await _eventually(lambda: status_is("critical"))
        _, passing = await c.health.service("web", passing=True)
        assert passing == []
    finally:
        if not stopped:
            await runner.cleanup()


async def test_tcp_check_against_a_real_listener(agent: consul.aio.Consul) -> None:
    c = agent

    async def on_conn(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await c.agent.service.register(
            "db", service_id="db-1", port=port, check=Check.tcp("127.0.0.1", port, "100ms")
        )

        async def status_is(want: str) -> bool:
            return bool((await _check(c, "service:db-1"))["Status"] == want)

        await _eventually(lambda: status_is("passing"))
        assert (await _check(c, "service:db-1"))[
            "Output"
        ] == f"TCP connect 127.0.0.1:{port}: Success"
    finally:
        server.close()
        await server.wait_closed()
    await _eventually(lambda: status_is("critical"))


async def test_deregister_critical_service_after_removes_the_instance(
    agent: consul.aio.Consul,
) -> None:
    c = agent
    await c.agent.service.register(
        "flaky", service_id="flaky-1", port=1,
        check={"ttl": "300ms", "DeregisterCriticalServiceAfter": "1s"},
    )  # fmt: skip
    await c.agent.service.register("steady", service_id="steady-1", port=2, check=Check.ttl("30s"))
    await c.agent.check.ttl_pass("service:steady-1")
    assert set(await c.agent.services()) == {"flaky-1", "steady-1"}

    async def gone() -> bool:
        return "flaky-1" not in await c.agent.services()

    await _eventually(gone, timeout=6)
    _, entries = await c.catalog.service("flaky")
    assert entries == []
    assert "service:flaky-1" not in await c.agent.checks()
    assert set(await c.agent.services()) == {"steady-1"}


async def test_script_checks_are_refused_unless_enabled(agent: consul.aio.Consul) -> None:
    with pytest.raises(consul.ConsulException, match="enable_script_checks"):
        await agent.agent.service.register(
            "s", service_id="s1", check=Check.script([sys.executable, "-c", "pass"], "1s")
        )
    assert await agent.agent.services() == {}


@pytest.mark.parametrize("agent", [True], indirect=True)
async def test_script_check_exit_codes_and_timeout(agent: consul.aio.Consul) -> None:
    c = agent
    for sid, code in (("ok", 0), ("warn", 1), ("bad", 2)):
        await c.agent.service.register(
            "scripts", service_id=sid,
            check=Check.script([sys.executable, "-c", f"print('out-{sid}'); raise SystemExit({code})"], "200ms"),
        )  # fmt: skip
    await c.agent.service.register(
        "scripts", service_id="slow",
        check={"args": [sys.executable, "-c", "import time; time.sleep(30)"], "interval": "5s", "timeout": "300ms"},
    )  # fmt: skip
    want = {"ok": "passing", "warn": "warning", "bad": "critical"}

    async def all_done() -> bool:
        checks = await c.agent.checks()
        return (
            all(
                checks[f"service:{sid}"]["Status"] == status
                and checks[f"service:{sid}"]["Output"].strip() == f"out-{sid}"
                for sid, status in want.items()
            )
            and "Timed out" in checks["service:slow"]["Output"]
        )

    await _eventually(all_done, timeout=8)
