"""Serve an ASGI app with uvicorn inside the caller's event loop (the API server and the
registry's Consul API both do)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import uvicorn


@dataclass
class RunningServer:
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int
    """The bound port (the chosen one when asked for 0)."""

    async def stop(self) -> None:
        """Ask uvicorn to exit; cancel it if it has not within 3 s."""
        self.server.should_exit = True
        if not self.task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 3)
            except (TimeoutError, asyncio.CancelledError):
                self.task.cancel()


async def start_uvicorn(app: Any, host: str, port: int, what: str, **options: Any) -> RunningServer:
    """Start serving ``app``; return once it listens. Uvicorn's signal capture is bypassed:
    the process owner decides what Ctrl-C does, and tests run several servers in one
    process. Raises OSError naming ``what`` when the address cannot be bound."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="none",
        timeout_graceful_shutdown=1,
        **options,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server._serve())
    try:
        while not server.started:
            if task.done():
                await task
                raise OSError(f"{what} could not listen on {host}:{port}")
            await asyncio.sleep(0.01)
    except BaseException:
        server.should_exit = True
        task.cancel()
        raise
    bound = port
    for srv in server.servers:
        for sock in srv.sockets:
            bound = int(sock.getsockname()[1])
    return RunningServer(server, task, bound)
