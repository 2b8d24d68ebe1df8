"""Run the registry: the live catalog, the Consul HTTP API, DNS and the health checks.

The API server calls :func:`serve_registry` with an object source over its own registry
(see ARCHITECTURE.md: the control plane mounts the registry), so ``shoal up`` and
``shoal server`` both answer Consul clients on 127.0.0.1:8500 and DNS on 127.0.0.1:8600.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from shoal._util.asgi import RunningServer, start_uvicorn
from shoal.discovery._catalog import Catalog
from shoal.discovery._checks import CheckDefinition, CheckRunner
from shoal.discovery._derive import cluster_ip_service
from shoal.discovery._source import JSONObject, ObjectSource
from shoal.discovery._state import RegistryState
from shoal.discovery.consul import ConsulAPI
from shoal.discovery.dns import DNSConfig, DNSServer
from shoal.errors import NotFoundError, ShoalError

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


def _check_defs(resource: str, obj: JSONObject | None) -> dict[str, tuple[JSONObject, JSONObject]]:
    """Check ID -> (definition, last state) of the checks an object holds."""
    if obj is None:
        return {}
    spec = obj.get("spec") or {}
    if resource == "healthchecks":
        return {str(spec.get("checkID")): (spec, obj.get("status") or {})}
    if resource == "serviceregistrations":
        states = {s.get("checkID"): s for s in (obj.get("status") or {}).get("checks") or []}
        return {
            str(c.get("checkID")): (c, states.get(c.get("checkID")) or {})
            for c in spec.get("checks") or []
        }
    return {}


_heap_frozen = False


def _freeze_heap_once() -> None:
    """Hide everything alive now (code, the first catalog and its DNS answers, the API
    server) from the cyclic garbage collector, once per process.

    A full collection walks every tracked object while the event loop waits; during a
    re-render of 1,000 services x 10 instances they took 80-155 ms (about 400 ms beside a
    million other objects), 30-46 ms with the start-up heap frozen. Frozen objects are still
    freed by reference counting; only cycles among them are never collected, which bounds
    the cost by what lives at start-up, hence once per process (tests start many registries).
    """
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.collect()
        gc.freeze()


def _follow_cluster_ips(state: RegistryState, dns: DNSServer) -> None:
    """Keep ``dns`` answering each Service's cluster IP: per Service change, and in full
    whenever the registry relisted (a relist replaces objects without telling apart the
    deleted ones), then hand the catalog snapshots on."""

    def on_object(resource: str, old: JSONObject | None, new: JSONObject | None) -> None:
        if resource != "services":
            return
        meta = (new if new is not None else old or {}).get("metadata") or {}
        service = cluster_ip_service(new) if new is not None else None
        dns.set_cluster_ip(str(meta.get("namespace") or "default"), str(meta.get("name")), service)

    def on_catalog(catalog: Catalog, services: set[str] | None, nodes: bool) -> None:
        if services is None:
            found = (cluster_ip_service(o) for o in state.objects("services").values())
            dns.sync_cluster_ips(s for s in found if s is not None)
        dns.update(catalog, services, nodes)  # incremental, coalesced renders

    state.add_object_listener(on_object)  # replays the Services listed so far
    state.add_listener(on_catalog)


async def _start_checks(api: ConsulAPI, state: RegistryState, enable_scripts: bool) -> CheckRunner:
    """Run every registered check, following registrations as they come and go."""

    async def deregister(service_id: str) -> None:
        with contextlib.suppress(NotFoundError):
            await api.agent.deregister_service(service_id)

    runner = CheckRunner(
        api.agent.set_check_status, deregister, enable_script_checks=enable_scripts
    )
    await runner.start()
    api.agent.ttl_updater = runner

    def follow(resource: str, old: JSONObject | None, new: JSONObject | None) -> None:
        before, after = _check_defs(resource, old), _check_defs(resource, new)
        for cid in before.keys() - after.keys():
            runner.remove(cid)
        for cid, (definition, last) in after.items():
            try:
                runner.set(CheckDefinition.from_stored(definition, last))
            except ShoalError as exc:
                log.warning("check %s not run: %s", cid, exc)

    state.add_object_listener(follow)
    return runner


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
    http: RunningServer | None = None
    dns: DNSServer | None = None
    runner: CheckRunner | None = None
    try:
        synced = asyncio.create_task(state.wait_synced())
        done, _ = await asyncio.wait({state_task, synced}, return_when=asyncio.FIRST_COMPLETED)
        if state_task in done:
            synced.cancel()
            await state_task
        api = ConsulAPI(source, state, enable_script_checks=config.enable_script_checks)
        runner = await _start_checks(api, state, config.enable_script_checks)
        if config.dns_port >= 0:
            dns = DNSServer(config.dns, state.catalog)
            _follow_cluster_ips(state, dns)
            await dns.flush()
            _freeze_heap_once()
            await dns.start(config.dns_host, config.dns_port)
        consul_port = -1
        if config.consul_port >= 0:
            http = await start_uvicorn(
                api.app(), config.consul_host, config.consul_port, "the Consul API", backlog=2048
            )
            consul_port = http.port
        running = RunningRegistry(state, api, dns, consul_port, dns.port if dns else -1)
        for hook in (on_started, config.on_started):
            if hook is not None:
                await hook(running)
        await asyncio.shield(state_task)
    finally:
        state.release_waiters()
        if http is not None:
            await http.stop()
        if dns is not None:
            await dns.close()
        if runner is not None:
            await runner.close()
        state_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await state_task
