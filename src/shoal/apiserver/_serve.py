"""Run the API server with uvicorn inside the caller's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from shoal._util.asgi import start_uvicorn
from shoal.apiserver._app import APIServer
from shoal.apiserver._registry_source import RegistrySource
from shoal.discovery import RegistryConfig, RunningRegistry, serve_registry

DEFAULT_PORT = 6440


async def serve_api(
    server: APIServer,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    on_started: Callable[[], Awaitable[None]] | None = None,
    registry: RegistryConfig | None = None,
) -> None:
    """Serve until cancelled. ``on_started`` runs once the socket listens (and, with
    ``registry``, once the Consul API and DNS listen too)."""
    await server.startup()
    try:
        running = await start_uvicorn(server.app(), host, port, "the API server")
    except BaseException:
        await server.shutdown()
        raise
    registry_task: asyncio.Task[None] | None = None
    try:
        if registry is not None:
            registry_task = await _start_registry(server, registry)
        if on_started is not None:
            await on_started()
        # Shielded: cancelling us must not cancel uvicorn mid-loop (its shutdown would never
        # run and the listening socket would stay open); ``finally`` asks it to exit instead.
        await asyncio.shield(running.task)
    finally:
        if registry_task is not None:
            registry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await registry_task
        await running.stop()
        await server.shutdown()
        logging.getLogger("shoal.apiserver").debug("API server stopped")


async def _start_registry(server: APIServer, config: RegistryConfig) -> asyncio.Task[None]:
    """Start the registry (Consul API, DNS, checks) over ``server``'s objects; return once
    it listens. A port that cannot be bound raises OSError naming it."""
    started = asyncio.Event()

    async def mark(_running: RunningRegistry) -> None:
        started.set()

    task = asyncio.create_task(serve_registry(RegistrySource(server.registry), config, mark))
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        await task
        raise OSError("the registry stopped while starting")
    return task


async def serve_data_dir(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    on_started: Callable[[], Awaitable[None]] | None = None,
    registry: RegistryConfig | None = None,
) -> None:
    """Open (or create) the SQLite store in ``data_dir`` and serve it until cancelled.

    The one place a process outside the API server package gets a store: callers (``shoal up``,
    ``shoal server``) hand over a directory, never a store object.
    """
    from shoal.store import open_store

    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, at startup)
    store = open_store(data_dir / "state.db")
    try:
        await serve_api(APIServer(store), host, port, on_started, registry)
    finally:
        await store.close()
