"""Run the registry: the live catalog, the Consul HTTP API, DNS and the health checks.

The API server calls :func:`serve_registry` with an object source over its own registry
(see ARCHITECTURE.md: the control plane mounts the registry), so ``shoal up`` and
``shoal server`` both answer Consul clients on 127.0.0.1:8500 and DNS on 127.0.0.1:8600.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import uvicorn

from shoal.discovery._catalog import Catalog
from shoal.discovery._source import ObjectSource
from shoal.discovery._state import RegistryState
from shoal.discovery.consul import ConsulAPI
from shoal.discovery.dns import DNSConfig, DNSServer, build_table

log = logging.getLogger("shoal.discovery")


@dataclass
class RegistryConfig:
    """Where and how the registry serves. A port of -1 turns that listener off; 0 picks a
    free one (tests), reported back in :attr:`RunningRegistry.consul_port` / ``dns_port``."""

    node_name: str
    node_address: str = "127.0.0.1"
    datacenter: str = "dc1"
    consul_host: str = "127.0.0.1"
    consul_port: int = 8500
    dns_host: str = "127.0.0.1"
    dns_port: int = 8600
    enable_script_checks: bool = False
    dns: DNSConfig = field(default_factory=DNSConfig)
    on_started: Callable[[RunningRegistry], Awaitable[None]] | None = field(
        default=None, repr=False
    )
    """Called once everything listens (tests read the chosen ports from it)."""


@dataclass
class RunningRegistry:
    """Handles on a started registry, for tests and benchmarks."""

    state: RegistryState
    api: ConsulAPI
    dns: DNSServer | None
    consul_port: int
    dns_port: int


async def _serve_http(
    api: ConsulAPI, host: str, port: int
) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    config = uvicorn.Config(
        api.app(),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="none",
        timeout_graceful_shutdown=1,
        backlog=2048,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server._serve())
    while not server.started:
        if task.done():
            await task
            raise OSError(f"the Consul API could not listen on {host}:{port}")
        await asyncio.sleep(0.01)
    bound = port
    for srv in server.servers:
        for sock in srv.sockets:
            bound = int(sock.getsockname()[1])
    return server, task, bound


async def serve_registry(
    source: ObjectSource,
    config: RegistryConfig,
    on_started: Callable[[RunningRegistry], Awaitable[None]] | None = None,
) -> None:
    """Serve until cancelled; ``on_started`` runs once every listener is up."""
    state = RegistryState(
        source, config.node_name, node_address=config.node_address, datacenter=config.datacenter
    )
    state_task = asyncio.create_task(state.run(), name="registry-state")
    http: tuple[uvicorn.Server, asyncio.Task[None], int] | None = None
    dns: DNSServer | None = None
    try:
        synced = asyncio.create_task(state.wait_synced())
        done, _ = await asyncio.wait({state_task, synced}, return_when=asyncio.FIRST_COMPLETED)
        if state_task in done:
            synced.cancel()
            await state_task
        api = ConsulAPI(source, state, enable_script_checks=config.enable_script_checks)
        if config.dns_port >= 0:
            dns_config = config.dns
            dns = DNSServer(lambda c: build_table(c, dns_config), state.catalog)
            await dns.start(config.dns_host, config.dns_port)
            running_dns = dns

            def on_change(catalog: Catalog, _changed: set[str] | None, _nodes: bool) -> None:
                running_dns.update(catalog)

            state.add_listener(on_change)
        consul_port = -1
        if config.consul_port >= 0:
            http = await _serve_http(api, config.consul_host, config.consul_port)
            consul_port = http[2]
        running = RunningRegistry(state, api, dns, consul_port, dns.port if dns else -1)
        for hook in (on_started, config.on_started):
            if hook is not None:
                await hook(running)
        await asyncio.shield(state_task)
    finally:
        if http is not None:
            server, task, _ = http
            server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(task), 3)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        if dns is not None:
            await dns.close()
        state_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await state_task
