"""Remote commands over WebSocket, in Kubernetes' channel protocol (``kubectl exec``).

``GET /api/v1/namespaces/NS/pods/NAME/exec?command=a&command=b&stdin=true&stdout=true&stderr=true``
is upgraded to a WebSocket whose subprotocol is ``v5.channel.k8s.io`` or ``v4.channel.k8s.io``.
Every binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (a
``metav1.Status`` JSON sent once, when the command has ended), 4 terminal resize. Version 5
adds a close signal, the two bytes ``[255, channel]``: the client sends ``[255, 0]`` when its
standard input ends. Version 4 has no half-close (its clients close the socket), so shoal
reads an *empty* stdin message (the single byte ``0``) as end of input; both are accepted
whichever version was negotiated. The API server relays the messages unchanged to the node
agent, which runs the command through the runtime driver.

This module holds the protocol's constants and Status shapes (the agent and the API server
use them too) and the client side of a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from shoal.errors import APIStatusError, ServerUnreachableError, ShoalError

PROTOCOL_V5 = "v5.channel.k8s.io"
PROTOCOL_V4 = "v4.channel.k8s.io"
PROTOCOLS = (PROTOCOL_V5, PROTOCOL_V4)
"""In order of preference."""

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255
"""v5 close signal: ``bytes([CLOSE, channel])``."""

MAX_MESSAGE = 16 * 1024 * 1024
"""Largest message accepted on either side (uvicorn's own default)."""

Sink = Callable[[bytes], None]
"""Receives a chunk of the command's output."""

ExecInput = bytes | AsyncIterator[bytes] | None


def exit_status(exit_code: int, command: Sequence[str] = ()) -> dict[str, Any]:
    """The error-channel Status for a command that ran: Success for 0, else the kubelet's
    NonZeroExitCode failure with the code as the ExitCode cause."""
    if exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command "
        f"{list(command)}, exit code {exit_code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def exit_code_of(status: dict[str, Any]) -> int:
    """The command's exit code from an error-channel Status. A Failure that is not a
    non-zero exit (the command could not be started) raises the APIStatusError it carries."""
    if status.get("status") == "Success":
        return 0
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message", ""))
                except ValueError:
                    break
    raise APIStatusError.from_status(status, int(status.get("code") or 500))


def negotiate(offered: Sequence[str]) -> str | None:
    """The subprotocol to answer with: the first of the client's list that we speak."""
    for proto in offered:
        if proto in PROTOCOLS:
            return proto
    return None


def exec_query(
    command: Sequence[str],
    *,
    container: str | None = None,
    stdin: bool = False,
    stdout: bool = True,
    stderr: bool = True,
    extra: dict[str, str] | None = None,
) -> str:
    """The query string of an exec request (``command`` repeated once per argument)."""
    pairs: list[tuple[str, str]] = [("command", arg) for arg in command]
    if container:
        pairs.append(("container", container))
    for key, on in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
        if on:
            pairs.append((key, "true"))
    pairs += list((extra or {}).items())
    return urlencode(pairs)


def websocket_url(http_url: str) -> str:
    """``http://h:p/path`` -> ``ws://h:p/path`` (and https -> wss)."""
    if http_url.startswith("https://"):
        return "wss://" + http_url[len("https://") :]
    if http_url.startswith("http://"):
        return "ws://" + http_url[len("http://") :]
    return http_url


def denial_error(exc: InvalidStatus) -> APIStatusError:
    """The Status an upgrade was refused with (the server answered HTTP instead)."""
    resp = exc.response
    try:
        body = json.loads(resp.body or b"")
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return APIStatusError.from_status(body, resp.status_code)
    text = (resp.body or b"").decode(errors="replace").strip()[:200]
    err = APIStatusError(f"HTTP {resp.status_code}: {text or resp.reason_phrase}")
    err.code = resp.status_code
    return err


async def open_exec(url: str, protocols: Sequence[str] = PROTOCOLS) -> ClientConnection:
    """Connect to an exec endpoint (``ws://...?command=...``). A refused upgrade raises the
    server's APIStatusError; an unreachable server raises ServerUnreachableError."""
    try:
        return await connect(
            url,
            subprotocols=[Subprotocol(p) for p in protocols],
            max_size=MAX_MESSAGE,
            compression=None,
            proxy=None,
            open_timeout=15,
        )
    except InvalidStatus as exc:
        raise denial_error(exc) from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise ServerUnreachableError(f"cannot open the exec stream at {url}: {exc}") from exc


async def _send_stdin(ws: ClientConnection, stdin: ExecInput) -> None:
    """Send the input, then signal its end (both ways, see the module docstring)."""
    if isinstance(stdin, bytes):
        if stdin:
            await ws.send(bytes([STDIN]) + stdin)
    elif stdin is not None:
        async for chunk in stdin:
            if chunk:
                await ws.send(bytes([STDIN]) + chunk)
    end = bytes([CLOSE, STDIN]) if ws.subprotocol == PROTOCOL_V5 else bytes([STDIN])
    await ws.send(end)


async def run_session(
    ws: ClientConnection,
    stdin: ExecInput = None,
    stdout: Sink | None = None,
    stderr: Sink | None = None,
) -> int:
    """Pump one exec session to its end; returns the command's exit code."""
    feeder: asyncio.Task[None] | None = None
    if stdin is not None:
        feeder = asyncio.create_task(_send_stdin(ws, stdin), name="exec-stdin")
    status: dict[str, Any] | None = None
    try:
        async for message in ws:
            if isinstance(message, str) or not message:
                continue
            channel, data = message[0], message[1:]
            if channel == STDOUT and stdout is not None:
                stdout(data)
            elif channel == STDERR and stderr is not None:
                stderr(data)
            elif channel == ERROR:
                parsed = json.loads(data or b"{}")
                status = parsed if isinstance(parsed, dict) else {}
    except ConnectionClosed as exc:
        if status is None:
            raise ServerUnreachableError(f"the exec stream was cut: {exc}") from exc
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await feeder
        await ws.close()
    if status is None:
        raise ShoalError("the exec stream ended without the command's exit status")
    return exit_code_of(status)
