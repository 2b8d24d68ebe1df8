"""Test helpers that ship with shoal: a real API server on a free loopback port over a
temporary SQLite store, and a fake clock. Tests of controllers, agents and the CLI run
against the real server rather than mocks of it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from shoal._util import FakeClock
from shoal.apiserver import APIServer, serve_api
from shoal.discovery import RegistryConfig, RunningRegistry
from shoal.store import SQLiteStore, open_store

__all__ = ["FakeClock", "RunningAPIServer", "free_port", "running_api_server"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to 0 and read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class RunningAPIServer:
    url: str
    port: int
    store: SQLiteStore
    server: APIServer
    data_dir: Path
    registry: RunningRegistry | None = None
    """Set when started with a registry config: the Consul API and DNS ports, the state."""


@contextlib.asynccontextmanager
async def running_api_server(
    data_dir: Path | None = None, registry: RegistryConfig | None = None
) -> AsyncIterator[RunningAPIServer]:
    """Start an API server in this event loop; stop it (and close its store) on exit.

    With ``registry`` the registry runs too (use ports 0 for free ones)."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shoal-test-")))
        store = open_store(data_dir / "state.db")
        server = APIServer(store)
        port = free_port()
        started = asyncio.Event()
        running: list[RunningRegistry] = []

        async def on_started() -> None:
            started.set()

        if registry is not None:
            user_hook = registry.on_started

            async def keep(r: RunningRegistry) -> None:
                running.append(r)
                if user_hook is not None:
                    await user_hook(r)

            registry.on_started = keep
        task = asyncio.create_task(serve_api(server, "127.0.0.1", port, on_started, registry))
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiter.cancel()
            await task
        try:
            yield RunningAPIServer(
                f"http://127.0.0.1:{port}",
                port,
                store,
                server,
                data_dir,
                running[0] if running else None,
            )
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await store.close()
