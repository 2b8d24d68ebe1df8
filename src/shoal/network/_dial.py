"""TCP connections opened from inside a named network namespace while the process stays in
its own: how an agent whose node is a network namespace (``--node-netns``) probes its pods at
their addresses, which only that namespace can route to.

A socket belongs to the network namespace of the thread that created it, for its whole life.
A :class:`NetnsDialer` keeps one thread that has joined the namespace (``setns``, which for a
network namespace affects the calling thread only) and creates sockets there; connecting and
all I/O then happen on the event loop as for any other socket. :meth:`NetnsDialer.http_backend`
gives the same to httpx, as an httpcore network backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import os
import select
import socket
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.streams.tls
import httpcore
import httpx

from shoal.errors import NetworkError
from shoal.network._exec import NETNS_DIR

_CLONE_NEWNET = 0x40000000


def _join(netns: str) -> None:
    """Move the calling thread into the named network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(Path(NETNS_DIR) / netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsDialer:
    """Opens TCP connections from the named network namespace ``netns``."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"netns-{netns}",
            initializer=_join,
            initargs=(netns,),
        )

    async def _socket(self, family: int) -> socket.socket:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._thread, socket.socket, family, socket.SOCK_STREAM
            )
        except concurrent.futures.BrokenExecutor as exc:
            # The initializer failed (the namespace is gone or not ours to join): say which.
            raise NetworkError(f"cannot open sockets in network namespace {self.netns}") from exc

    async def connect(self, host: str, port: int, timeout: float | None = None) -> socket.socket:
        """A connected, non-blocking TCP socket to ``host:port`` (an address, or a name
        resolved in the process's own namespace). Raises OSError or TimeoutError."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"no address for {host}")
        family, _, _, _, address = infos[0]
        sock = await self._socket(family)
        try:
            sock.setblocking(False)
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock

    async def open_connection(
        self, host: str, port: int, timeout: float | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """:func:`asyncio.open_connection`, from the namespace."""
        sock = await self.connect(host, port, timeout)
        try:
            return await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise

    def http_backend(self) -> httpcore.AsyncNetworkBackend:
        """An httpcore network backend whose connections start in the namespace."""
        return _Backend(self)

    def http_transport(self, *, verify: bool = True) -> httpx.AsyncHTTPTransport:
        """An httpx transport whose connections start in the namespace."""
        transport = httpx.AsyncHTTPTransport(verify=verify)
        # httpx has no parameter for httpcore's network backend; its transport is a thin
        # mapping over this pool, built here as httpx builds it, plus the backend.
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            network_backend=self.http_backend(),
        )
        return transport

    def close(self) -> None:
        self._thread.shutdown(wait=False)


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self, dialer: NetnsDialer) -> None:
        self._dialer = dialer

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            sock = await self._dialer.connect(host, port, timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        for option in socket_options or ():
            sock.setsockopt(*option)
        return _Stream(await anyio.abc.SocketStream.from_socket(sock))

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("unix sockets have no network namespace")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class _Stream(httpcore.AsyncNetworkStream):
    """httpcore's view of an anyio byte stream, with anyio's errors as httpcore's."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            with anyio.fail_after(timeout):
                return await self._stream.receive(max_bytes)
        except anyio.EndOfStream:
            return b""
        except TimeoutError as exc:
            raise httpcore.ReadTimeout("read timed out") from exc
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            with anyio.fail_after(timeout):
                await self._stream.send(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("write timed out") from exc
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                tls = await anyio.streams.tls.TLSStream.wrap(
                    self._stream,
                    ssl_context=ssl_context,
                    hostname=server_hostname,
                    standard_compatible=False,
                )
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout("TLS handshake timed out") from exc
        except (anyio.BrokenResourceError, anyio.EndOfStream, ssl.SSLError, OSError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Stream(tls)

    def get_extra_info(self, info: str) -> Any:
        attributes = {
            "ssl_object": anyio.streams.tls.TLSAttribute.ssl_object,
            "client_addr": anyio.abc.SocketAttribute.local_address,
            "server_addr": anyio.abc.SocketAttribute.remote_address,
            "socket": anyio.abc.SocketAttribute.raw_socket,
        }
        if info == "is_readable":
            sock = self._stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
            return sock is not None and _readable(sock)
        attribute = attributes.get(info)
        return None if attribute is None else self._stream.extra(attribute, None)


def _readable(sock: socket.socket) -> bool:
    """Whether a kept-alive connection has something to read (for httpcore, that means the
    server closed it or sent garbage: it is not reused)."""
    ready, _, _ = select.select([sock], [], [], 0)
    return bool(ready)
