"""Fixtures shared by the Consul-compatibility tests: an API server with its registry on
free ports (node name from the test module's ``NODE``), a py-consul client and a raw HTTP
client on the Consul API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import consul.aio
import httpx
import pytest

from shoal.discovery import RegistryConfig
from shoal.testing import RunningAPIServer, running_api_server


@pytest.fixture
async def srv(request: pytest.FixtureRequest) -> AsyncIterator[RunningAPIServer]:
    node = getattr(request.module, "NODE", "registry-node")
    config = RegistryConfig(node_name=node, consul_port=0, dns_port=-1)
    async with running_api_server(registry=config) as s:
        yield s


@pytest.fixture
async def c(srv: RunningAPIServer) -> AsyncIterator[consul.aio.Consul]:
    assert srv.registry is not None
    client = consul.aio.Consul(host="127.0.0.1", port=srv.registry.consul_port)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def http(srv: RunningAPIServer) -> AsyncIterator[httpx.AsyncClient]:
    assert srv.registry is not None
    base = f"http://127.0.0.1:{srv.registry.consul_port}"
    async with httpx.AsyncClient(base_url=base) as client:
        yield client
