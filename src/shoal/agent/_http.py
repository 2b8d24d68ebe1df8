"""The agent's HTTP endpoint (the kubelet's port): container logs, exec, resource stats and
a health check.

The API server proxies ``GET pods/{name}/log`` here (``/containerLogs/{ns}/{pod}/{container}``
with ``follow``, ``previous``, ``tailLines`` and the pod ``uid``). Logs are plain files
written by the runtime, so streaming is reading a file and, with ``follow``, polling it for
appended bytes until the container's attempt ends; copytruncate rotation is detected by the
file shrinking below the read offset, and the rotated copy's tail is served first.

``/exec/{ns}/{pod}/{container}?command=...`` is the kubelet's exec endpoint: a WebSocket in
Kubernetes' channel protocol (see ``shoal._util.remotecommand``) that runs the command through the
runtime driver's ``exec`` and pumps its pipes; ``/stats/summary`` answers the agent's
``stats_summary()`` in the kubelet's Summary API shape. The API server proxies both.

Served by uvicorn inside the agent's event loop via ``Server._serve`` (not ``serve``) so it
never installs signal handlers: the process owner decides what Ctrl-C does.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from shoal._util.remotecommand import (
    CLOSE,
    ERROR,
    PROTOCOL_V4,
    PROTOCOL_V5,
    STDERR,
    STDIN,
    STDOUT,
    exit_status,
    negotiate,
)
from shoal.errors import APIStatusError, BadRequestError, DriverError, NotFoundError
from shoal.runtime import Driver

if TYPE_CHECKING:
    from shoal.agent._podworker import PodWorker

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


@runtime_checkable
class ExecHost(Protocol):
    """What exec needs of the agent: the pods it runs and the driver that runs them."""

    @property
    def driver(self) -> Driver: ...

    @property
    def workers(self) -> Mapping[str, PodWorker]: ...


@runtime_checkable
class StatsSource(Protocol):
    def stats_summary(self) -> Any:
        """The kubelet Summary API document (a dict, or an awaitable of one)."""
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


def read_tail(path: Path, lines: int) -> tuple[bytes, int]:
    """The last ``lines`` lines of the log, read from one snapshot of it, and the offset in
    ``path`` to follow on from.

    When the file holds fewer lines than asked for (it was just copy-truncated), the rest come
    from the end of ``<name>.1``, as a tail across a rotation does in the kubelet. Taking the
    offset from the same snapshot keeps a rotation between two reads from adding lines or
    starting mid-line.
    """
    try:
        current = path.read_bytes()
    except OSError:
        return b"", 0
    data = current
    if lines > 0 and len(current.splitlines()) < lines:
        with contextlib.suppress(OSError):
            data = path.with_name(path.name + ".1").read_bytes() + current
    return data[tail_offset(data, lines) :], len(current)


async def stream_log(
    ref: LogRef, *, follow: bool, tail_lines: int | None, poll: float = 0.1
) -> AsyncIterator[bytes]:
    """The log's bytes; with ``follow``, then its growth until the attempt ends."""
    offset = 0
    if tail_lines is not None:
        chunk, offset = await asyncio.to_thread(read_tail, ref.path, tail_lines)
        if chunk:
            yield chunk
        if not follow:
            return
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


# --- exec -------------------------------------------------------------------------------------


def find_worker(
    workers: Mapping[str, PodWorker], namespace: str, pod: str, uid: str | None
) -> PodWorker:
    """The worker of the named pod (of that uid, if given) that is still running on this node.
    Raises NotFoundError when there is none."""
    worker = next(
        (
            w
            for w in workers.values()
            if w.pod.metadata.name == pod
            and (w.pod.metadata.namespace or "default") == namespace
            and (not uid or w.uid == uid)
            and not w.finished
        ),
        None,
    )
    if worker is None:
        raise NotFoundError(f'pods "{pod}" not found', kind="pods", name=pod)
    return worker


async def running_container(
    host: ExecHost, namespace: str, pod: str, container: str, uid: str | None
) -> str:
    """The runtime id of ``container`` of the pod, which must be running right now.
    Raises NotFoundError (no such pod on this node) or BadRequestError (Status bodies)."""
    worker = find_worker(host.workers, namespace, pod, uid)
    record = worker.records.get(container)
    if record is None:
        raise BadRequestError(f"container {container} is not valid for pod {pod}")
    not_running = BadRequestError(f"container {container} is not running")
    if not record.running or record.container_id is None:
        raise not_running
    try:
        status = await host.driver.inspect(record.container_id)
    except DriverError:
        raise not_running from None
    if status.state != "running":
        raise not_running
    return record.container_id


def _exit_code(returncode: int) -> int:
    """A shell's view of how a process ended: a signal N shows as 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class ExecSession:
    """One exec: the client's stdin frames into the process, its stdout and stderr out as
    channel 1 and 2 frames, then the exit Status on channel 3 and a normal close.

    If the client goes away first the command is terminated (SIGTERM, then SIGKILL after
    ``kill_grace``): an exec outlives its connection neither in shoal nor in the kubelet."""

    def __init__(
        self,
        ws: WebSocket,
        proc: asyncio.subprocess.Process,
        command: Sequence[str],
        *,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        kill_grace: float = 2.0,
    ) -> None:
        self.ws = ws
        self.proc = proc
        self.command = list(command)
        self.want = {STDIN: stdin, STDOUT: stdout, STDERR: stderr}
        self.kill_grace = kill_grace
        self._send_lock = asyncio.Lock()

    async def run(self) -> None:
        if not self.want[STDIN]:
            self._close_stdin()
        reader = asyncio.create_task(self._read_client(), name="exec-stdin")
        output = asyncio.create_task(self._pump_output(), name="exec-output")
        try:
            await asyncio.wait({reader, output}, return_when=asyncio.FIRST_COMPLETED)
            if not output.done() or output.exception() is not None:
                return  # the client left (or its socket broke): the finally kills the command
            code = _exit_code(await self.proc.wait())
            await self._send(ERROR, json.dumps(exit_status(code, self.command)).encode())
            await self.ws.close(1000)
        finally:
            for task in (reader, output):
                task.cancel()
            await asyncio.gather(reader, output, return_exceptions=True)
            await self._terminate()

    async def _pump_output(self) -> None:
        async def pump(stream: asyncio.StreamReader | None, channel: int) -> None:
            if stream is None:
                return
            while chunk := await stream.read(_CHUNK):
                if self.want[channel]:
                    await self._send(channel, chunk)

        await asyncio.gather(pump(self.proc.stdout, STDOUT), pump(self.proc.stderr, STDERR))

    async def _send(self, channel: int, data: bytes) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(bytes([channel]) + data)

    async def _read_client(self) -> None:
        """Until the client disconnects: stdin frames to the process; an empty stdin frame
        (v4) or the v5 close signal for channel 0 closes the process's stdin."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if not data:
                continue  # text frames belong to the base64 protocols, which we do not offer
            channel, payload = data[0], data[1:]
            ends_stdin = channel == STDIN and not payload
            if ends_stdin or (channel == CLOSE and payload[:1] == bytes([STDIN])):
                self._close_stdin()
            elif channel == STDIN and self.want[STDIN]:
                await self._write_stdin(payload)

    async def _write_stdin(self, payload: bytes) -> None:
        pipe = self.proc.stdin
        if pipe is None or pipe.is_closing():
            return
        try:
            pipe.write(payload)
            await pipe.drain()
        except (BrokenPipeError, ConnectionResetError):
            self._close_stdin()  # the command stopped reading; keep serving its output

    def _close_stdin(self) -> None:
        pipe = self.proc.stdin
        if pipe is not None and not pipe.is_closing():
            pipe.close()

    async def _terminate(self) -> None:
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), self.kill_grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def serve_exec(host: object, ws: WebSocket) -> None:
    """The kubelet's ``/exec/{namespace}/{pod}/{container}`` (``uid`` in the query pins the
    pod instance). Refusals are HTTP Status answers to the upgrade; a command that cannot be
    started is reported on the error channel, as the kubelet does."""
    p, q = ws.path_params, ws.query_params
    command = q.getlist("command")
    try:
        if not isinstance(host, ExecHost):
            raise NotFoundError("this agent does not run containers it could exec into")
        if not command:
            raise BadRequestError("you must specify at least 1 command")
        protocol = negotiate(ws.scope.get("subprotocols") or [])
        if protocol is None:
            raise BadRequestError(
                f"exec needs a WebSocket offering the subprotocol {PROTOCOL_V5} or {PROTOCOL_V4}"
            )
        cid = await running_container(
            host, p["namespace"], p["pod"], p["container"], q.get("uid") or None
        )
    except APIStatusError as err:
        await ws.send_denial_response(_status_response(err))
        return
    await ws.accept(subprotocol=protocol)
    try:
        proc = await host.driver.exec(cid, command)
    except Exception as exc:  # DriverError, or a driver bug: either way the client hears why
        if not isinstance(exc, DriverError):
            log.exception("exec in %s failed", cid)
        failure = APIStatusError(
            f"Internal error occurred: error executing command in container: {exc}"
        )
        status = failure.to_status()
        with contextlib.suppress(Exception):
            await ws.send_bytes(bytes([ERROR]) + json.dumps(status).encode())
            await ws.close(1000)
        return
    session = ExecSession(
        ws,
        proc,
        command,
        stdin=_flag(q.get("stdin")),
        stdout=_flag(q.get("stdout")),
        stderr=_flag(q.get("stderr")),
    )
    await session.run()


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

    async def exec_endpoint(ws: WebSocket) -> None:
        await serve_exec(locator, ws)

    async def stats_summary(_request: Request) -> Response:
        if not isinstance(locator, StatsSource):
            return _status_response(NotFoundError("this agent keeps no resource statistics"))
        summary = locator.stats_summary()
        if inspect.isawaitable(summary):
            summary = await summary
        return Response(json.dumps(summary), media_type="application/json")

    return Starlette(
        routes=[
            Route("/containerLogs/{namespace}/{pod}/{container}", container_logs),
            WebSocketRoute("/exec/{namespace}/{pod}/{container}", exec_endpoint),
            Route("/stats/summary", stats_summary),
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
