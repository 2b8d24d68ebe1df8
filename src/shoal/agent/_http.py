"""The agent's HTTP endpoint (the kubelet's port): container logs and a health check.

The API server proxies ``GET pods/{name}/log`` here (``/containerLogs/{ns}/{pod}/{container}``
with ``follow``, ``previous``, ``tailLines`` and the pod ``uid``). Logs are plain files
written by the runtime, so streaming is reading a file and, with ``follow``, polling it for
appended bytes until the container's attempt ends; copytruncate rotation is detected by the
file shrinking below the read offset, and the rotated copy's tail is served first.

Served by uvicorn inside the agent's event loop via ``Server._serve`` (not ``serve``) so it
never installs signal handlers: the process owner decides what Ctrl-C does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from shoal.errors import APIStatusError, BadRequestError

log = logging.getLogger("shoal.agent.http")

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class LogRef:
    """One attempt's log file, and how to tell whether that attempt still runs."""

    path: Path
    live: Callable[[], bool]


class LogLocator(Protocol):
    def find_log(
        self, namespace: str, pod: str, container: str, uid: str | None, previous: bool
    ) -> LogRef:
        """The log to serve; raises NotFoundError / BadRequestError (sent as a Status)."""
        ...


def _status_response(err: APIStatusError) -> Response:
    return Response(
        json.dumps(err.to_status()), status_code=err.code, media_type="application/json"
    )


def _flag(value: str | None) -> bool:
    return value in ("1", "true", "True", "yes")


def tail_offset(data: bytes, lines: int) -> int:
    """Byte offset where the last ``lines`` lines of ``data`` begin (a final unterminated line
    counts as a line, as in ``tail -n``)."""
    if lines <= 0:
        return len(data)
    kept = data.splitlines(keepends=True)[-lines:]
    return len(data) - sum(len(line) for line in kept)


def read_new(path: Path, offset: int, limit: int = _CHUNK) -> tuple[bytes, int]:
    """Up to ``limit`` bytes of ``path`` from ``offset``, and the offset to continue from.

    If the file shrank below ``offset`` it was copy-truncated: what we had not read yet is
    at the same offset in ``<name>.1``, so that is returned and reading restarts at 0.
    """
    try:
        size = path.stat().st_size
    except OSError:
        return b"", offset
    if size < offset:
        rotated = path.with_name(path.name + ".1")
        rest = b""
        with contextlib.suppress(OSError), rotated.open("rb") as fh:
            fh.seek(offset)
            rest = fh.read()
        return rest, 0
    if size == offset:
        return b"", offset
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read(limit)
    except OSError:
        return b"", offset
    return data, offset + len(data)


async def stream_log(
    ref: LogRef, *, follow: bool, tail_lines: int | None, poll: float = 0.1
) -> AsyncIterator[bytes]:
    """The log's bytes; with ``follow``, then its growth until the attempt ends."""
    offset = 0
    if tail_lines is not None:
        with contextlib.suppress(OSError):
            data = await asyncio.to_thread(ref.path.read_bytes)
            offset = tail_offset(data, tail_lines)
    while True:
        # Sample liveness before reading: bytes written before the exit are then surely read.
        live = follow and ref.live()
        chunk, offset = read_new(ref.path, offset)
        if chunk:
            yield chunk
            continue
        if not live:
            return
        await asyncio.sleep(poll)


def build_app(locator: LogLocator) -> Starlette:
    async def container_logs(request: Request) -> Response:
        p = request.path_params
        q = request.query_params
        try:
            tail: int | None = None
            if q.get("tailLines") not in (None, ""):
                try:
                    tail = int(q["tailLines"])
                except ValueError:
                    raise BadRequestError(
                        f'invalid tailLines "{q["tailLines"]}": must be an integer'
                    ) from None
                if tail < 0:
                    raise BadRequestError("tailLines must be greater than or equal to 0")
            ref = locator.find_log(
                p["namespace"],
                p["pod"],
                p["container"],
                q.get("uid") or None,
                _flag(q.get("previous")),
            )
        except APIStatusError as err:
            return _status_response(err)
        return StreamingResponse(
            stream_log(ref, follow=_flag(q.get("follow")), tail_lines=tail),
            media_type="text/plain",
        )

    async def healthz(_request: Request) -> Response:
        return Response("ok", media_type="text/plain")

    return Starlette(
        routes=[
            Route("/containerLogs/{namespace}/{pod}/{container}", container_logs),
            Route("/healthz", healthz),
        ]
    )


class AgentHTTPServer:
    """uvicorn in the caller's loop on a socket we bind ourselves (so port 0 works and the
    chosen port is known before the Node is registered)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        os.set_inheritable(sock.fileno(), False)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="none",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server._serve(sockets=[sock]), name="agent-http")
        while not self._server.started:
            if self._task.done():
                await self._task
                raise OSError(f"the agent endpoint could not listen on {self.host}:{self.port}")
            await asyncio.sleep(0.01)
        return self.port

    @property
    def active_requests(self) -> int:
        """Requests being served right now (a follow stream counts until it ends)."""
        return len(self._server.server_state.tasks) if self._server is not None else 0

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 3)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        except Exception:
            log.exception("agent HTTP server failed")
        self._server = self._task = None
