"""One run of an HTTP, TCP or script health check, with Consul's verdicts and output texts.

These are the probes :class:`~shoal.discovery._checks.CheckRunner` schedules. Each returns a
``(status, output)`` pair and never raises for a failing target: an unreachable server, a
refused connection or a script that cannot start is a *critical result*, reported with the
output a Consul agent would show (``agent/checks/check.go``), because that output is what an
operator reads in ``/v1/health/checks`` to find out why.

Outputs are capped at :data:`OUTPUT_MAX_SIZE` bytes (Consul's ``DefaultBufSize``, 4 KiB) so a
chatty endpoint cannot bloat every stored check. Like Consul, HTTP and script probes keep the
*last* 4 KiB (a ring buffer), since the end of the output usually carries the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
from collections.abc import Mapping, Sequence

import httpx

from shoal.discovery._catalog import HealthStatus

OUTPUT_MAX_SIZE = 4096
"""Bytes of output kept per result (Consul's ``DefaultBufSize``)."""
DEFAULT_TIMEOUT = 10.0
"""Seconds an HTTP or TCP probe may take when the check sets no timeout (Consul's default)."""
DEFAULT_SCRIPT_TIMEOUT = 30.0
"""Seconds a script may run when the check sets no timeout (Consul's ``CheckMonitor``)."""
USER_AGENT = "Consul Health Check"
ACCEPT = "text/plain, text/*, */*"
MAX_REDIRECTS = 10
"""Go's ``http.Client`` gives up after 10 redirects; so do HTTP probes."""
_DRAIN_GRACE = 0.2
"""Seconds to keep reading a script's output after its process group was killed."""

Result = tuple[HealthStatus, str]


class OutputTail:
    """The last ``limit`` bytes written, and how many were written in all.

    A ring buffer rather than a growing bytes object: a probe target that streams megabytes
    costs 4 KiB of memory, not megabytes.
    """

    def __init__(self, limit: int = OUTPUT_MAX_SIZE) -> None:
        self._limit = limit
        self._buf = bytearray()
        self.total = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        self._buf += data
        if len(self._buf) > self._limit:
            del self._buf[: len(self._buf) - self._limit]

    @property
    def truncated(self) -> bool:
        return self.total > len(self._buf)

    def text(self) -> str:
        """The kept bytes as text; a UTF-8 sequence cut by the ring buffer is dropped rather
        than shown as a replacement character."""
        data = bytes(self._buf)
        if self.truncated:
            data = data.lstrip(bytes(range(0x80, 0xC0)))
        return data.decode(errors="replace")

    def annotated(self) -> str:
        """:meth:`text`, prefixed as Consul's script checks do when output was dropped."""
        text = self.text()
        if self.truncated:
            return f"Captured {len(self._buf)} of {self.total} bytes\n...\n{text}"
        return text


def cap_output(output: str, limit: int = OUTPUT_MAX_SIZE) -> str:
    """``output`` cut to its first ``limit`` bytes, noting the cut the way Consul's TTL
    updates do (``... (captured 4096 of 5000 bytes)``)."""
    data = output.encode()
    if len(data) <= limit:
        return output
    kept = data[:limit].decode(errors="ignore")
    return f"{kept} ... (captured {limit} of {len(data)} bytes)"


def go_duration(seconds: float) -> str:
    """``seconds`` written as Go's ``time.Duration.String`` does (``1s``, ``1.5s``,
    ``500ms``, ``1m30s``, ``1h0m0s``), since Consul's output texts embed durations so."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _trim(ns, size) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = _trim(rest, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}"
    if minutes:
        return f"{sign}{minutes}m{secs}"
    return sign + secs


def _trim(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


def _os_error(exc: BaseException) -> OSError | None:
    """The first OSError in ``exc``'s cause chain (httpx wraps the socket error twice)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _errno_text(err: OSError) -> str:
    """Go's lower-case wording of an errno (``connection refused``)."""
    if isinstance(err, socket.gaierror):
        return err.strerror or str(err)
    code = err.errno or 0
    return (os.strerror(code) if code else str(err)).lower()


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    defaults = {"http": 80, "https": 443}
    return (a.scheme, a.host, a.port or defaults.get(a.scheme)) == (
        b.scheme,
        b.host,
        b.port or defaults.get(b.scheme),
    )


def _verdict(code: int) -> HealthStatus:
    if 200 <= code <= 299:
        return "passing"
    if code == 429:
        return "warning"
    return "critical"


async def probe_http(
    client: httpx.AsyncClient,
    url: str,
    *,
    method: str = "GET",
    header: Mapping[str, Sequence[str]] | None = None,
    body: str = "",
    timeout: float = DEFAULT_TIMEOUT,
) -> Result:
    """One request: 2xx passing, 429 warning, anything else critical, as is any failure.

    ``timeout`` bounds the whole exchange including the body, like Go's ``Client.Timeout``;
    a body cut off by it still yields a verdict from the status line. Redirects are followed
    (Go's client does) only while they stay on the checked URL's scheme, host and port: a
    check of one service must not pass because another host answered. ``client`` must not
    follow redirects itself.
    """
    op = method[:1].upper() + method[1:].lower()
    headers: list[tuple[str, str]] = [(k, v) for k, vs in (header or {}).items() for v in vs]
    names = {k.lower() for k, _ in headers}
    if "user-agent" not in names:
        headers.append(("User-Agent", USER_AGENT))
    if "accept" not in names:
        headers.append(("Accept", ACCEPT))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        request = client.build_request(method, url, headers=headers, content=body or None)
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        return "critical", f'{op} "{url}": {exc}'
    origin = request.url
    try:
        for _ in range(MAX_REDIRECTS + 1):
            async with asyncio.timeout_at(deadline):
                response = await client.send(request, stream=True)
            try:
                follow = response.next_request
                if follow is not None and _same_origin(follow.url, origin):
                    request = follow
                    continue
                tail = OutputTail()
                # A body that breaks off or outlasts the timeout keeps what arrived: the
                # status line alone decides the verdict, as in Consul.
                with contextlib.suppress(TimeoutError, httpx.HTTPError):
                    async with asyncio.timeout_at(deadline):
                        async for chunk in response.aiter_bytes():
                            tail.write(chunk)
                status = f"{response.status_code} {response.reason_phrase}".rstrip()
                output = f"HTTP {method} {url}: {status} Output: {tail.text()}"
                return _verdict(response.status_code), output
            finally:
                await response.aclose()
        return "critical", f'{op} "{url}": stopped after {MAX_REDIRECTS} redirects'
    except TimeoutError:
        return "critical", (
            f'{op} "{url}": context deadline exceeded '
            "(Client.Timeout exceeded while awaiting headers)"
        )
    except httpx.HTTPError as exc:
        err = _os_error(exc)
        if isinstance(err, ssl.SSLCertVerificationError):
            reason = err.verify_message or err.reason or str(err)
            return "critical", f'{op} "{url}": tls: failed to verify certificate: {reason}'
        if isinstance(err, ssl.SSLError):
            return "critical", f'{op} "{url}": tls: {err.reason or err}'
        if isinstance(exc, httpx.ConnectError) and err is not None:
            where = f"{origin.host}:{origin.port or (443 if origin.scheme == 'https' else 80)}"
            if isinstance(err, socket.gaierror):
                return "critical", f'{op} "{url}": dial tcp: lookup {origin.host}: {err.strerror}'
            return "critical", f'{op} "{url}": dial tcp {where}: connect: {_errno_text(err)}'
        return "critical", f'{op} "{url}": {exc or type(exc).__name__}'


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as (host, port); ValueError in Go's words otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError(f"address {address}: missing port in address")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address {address}: too many colons in address")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f'address {address}: invalid port "{port}"')
    return host, int(port)


async def probe_tcp(address: str, *, timeout: float = DEFAULT_TIMEOUT) -> Result:
    """Passing when a TCP connection to ``address`` opens within ``timeout``; closed at once."""
    try:
        host, port = split_host_port(address)
    except ValueError as exc:
        return "critical", f"dial tcp {exc}"
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return "critical", f"dial tcp {address}: i/o timeout"
    except socket.gaierror as exc:
        return "critical", f"dial tcp: lookup {host}: {exc.strerror}"
    except OSError as exc:
        return "critical", f"dial tcp {address}: connect: {_errno_text(exc)}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return "passing", f"TCP connect {address}: Success"


def _kill_group(pgid: int) -> None:
    """SIGKILL the process group the script leads (it was started in its own session, so
    the group is exactly the script and whatever it spawned)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _exec_error(argv0: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError) and "/" not in argv0:
        return f'exec: "{argv0}": executable file not found in $PATH'
    return f"fork/exec {argv0}: {_errno_text(exc)}"


async def probe_script(args: Sequence[str], *, timeout: float = DEFAULT_SCRIPT_TIMEOUT) -> Result:
    """Run ``args`` (no shell): exit 0 passing, 1 warning, anything else critical.

    stdout and stderr share one pipe, as in Consul. The script leads its own process group;
    at ``timeout`` — or when the probe is cancelled — the whole group is SIGKILLed by its
    PID, and it is killed again after a normal exit so that nothing the script left in the
    background outlives the run. The pipe is read separately from waiting for the exit, so
    a grandchild that escaped the group and holds the pipe cannot stall the runner.
    """
    if not args:
        return "critical", "no command given to run"
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            start_new_session=True,
        )
    except OSError as exc:
        os.close(read_fd)
        return "critical", _exec_error(args[0], exc)
    except BaseException:  # cancelled while spawning: leak no descriptor
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    tail = OutputTail()
    eof = loop.create_future()
    os.set_blocking(read_fd, False)

    def readable() -> None:
        try:
            data = os.read(read_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            tail.write(data)
        elif not eof.done():
            eof.set_result(None)
            loop.remove_reader(read_fd)

    loop.add_reader(read_fd, readable)
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            timed_out = True
        _kill_group(proc.pid)
        await proc.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_GRACE):
                await asyncio.shield(eof)
    finally:
        # Cancelled (runner closing, check removed) or not, nothing outlives the probe.
        if proc.returncode is None:
            _kill_group(proc.pid)
        loop.remove_reader(read_fd)
        os.close(read_fd)
        if not eof.done():
            eof.cancel()
    if timed_out:
        message = f"Timed out ({go_duration(timeout)}) running check"
        output = tail.annotated()
        return "critical", f"{message}\n\n{output}" if output else message
    code = proc.returncode
    if code == 0:
        return "passing", tail.annotated()
    if code == 1:
        return "warning", tail.annotated()
    return "critical", tail.annotated()
