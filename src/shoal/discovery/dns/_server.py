"""The DNS server: UDP and TCP on one port in front of an :class:`AnswerTable`, kept current.

Updates are incremental and coalesced. :meth:`DNSServer.update` only records the newest
snapshot and what changed; a background task re-renders, at most once per
:data:`COALESCE_SECONDS` (a registration storm of hundreds of snapshots per second costs a
few renders, each with the latest snapshot), only the services that changed, plus the nodes
and the services on them when the nodes changed. The work runs on the event loop in slices
of at most :data:`SLICE_SECONDS`, so queries keep being answered while a large catalog is
rendered; each changed name is dropped from the UDP cache as soon as it is rendered. A name
is always answered whole from either its old or its new records; during a long render some
names are already new while others are not, as DNS allows. ``await server.flush()`` waits
until the answers reflect the last snapshot given.

It runs on whatever event loop is current (asyncio's or uvloop's): the UDP socket is
drained by a reader callback, not a datagram transport, see :mod:`._udp`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Collection, Iterable, Iterator

from shoal.discovery._catalog import Catalog
from shoal.discovery._derive import ClusterIPService
from shoal.discovery.dns._answers import AnswerTable, changed_services
from shoal.discovery.dns._config import DNSConfig
from shoal.discovery.dns._udp import UDPListener, make_listener

log = logging.getLogger(__name__)

COALESCE_SECONDS = 0.05
"""At most one render starts per this interval; changes in between are taken together."""
SLICE_SECONDS = 0.01
"""The longest stretch a render holds the event loop before letting queries through."""
RETRY_SECONDS = 1.0
"""After a render failed (a bug: logged), the pause before everything is rendered afresh."""
_TCP_IDLE_TIMEOUT = 30.0


class DNSServer:
    """Serves a catalog over DNS (UDP and TCP, same port), shaped by ``config``.

    A ``catalog`` given here is handed to :meth:`update`: rendered at once outside an event
    loop, in the background inside one (``await flush()`` to wait for it). Services with a
    cluster IP come separately, through :meth:`set_cluster_ip` and :meth:`sync_cluster_ips`
    (the catalog holds instances, not Kubernetes Services).
    """

    def __init__(self, config: DNSConfig | None = None, catalog: Catalog | None = None) -> None:
        self.config = config or DNSConfig()
        self.table = AnswerTable(self.config)
        self.port = 0
        self.renders = 0
        """How many renders ran (tests and benchmarks check the coalescing with it)."""
        self._catalog = Catalog.build([], [])  # what the table answers
        self._latest: Catalog | None = None  # the newest snapshot not yet rendered
        self._pending: set[str] = set()
        self._pending_all = False
        self._pending_nodes = False
        self._cluster_ips: dict[tuple[str, str], ClusterIPService] = {}
        self._pending_ips: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()
        self._last_render = -COALESCE_SECONDS
        self._sock: socket.socket | None = None
        self._listener: UDPListener | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._closed = False
        if catalog is not None:
            self.update(catalog)

    # --- keeping the answers current -----------------------------------------------------

    def update(
        self,
        catalog: Catalog,
        changed_services: Collection[str] | None = None,
        nodes_changed: bool = True,
    ) -> None:
        """Answer from ``catalog`` soon (within ~50 ms, or at once if no render ran lately).

        ``changed_services`` names the services that differ from the previous snapshot;
        None means anything may have changed (then every service is compared, which is
        cheap for snapshots made with :meth:`Catalog.replace`). ``nodes_changed`` says the
        nodes or their checks may differ. Called outside a running event loop, it renders
        at once. Its signature is a :class:`~shoal.discovery.RegistryState` listener's.
        """
        self._latest = catalog
        if changed_services is None:
            self._pending_all = True
        else:
            self._pending.update(changed_services)
        self._pending_nodes |= nodes_changed
        self._schedule()

    def set_cluster_ip(self, namespace: str, name: str, service: ClusterIPService | None) -> None:
        """Answer ``NAME.NAMESPACE.svc`` with ``service``'s cluster IP soon; None: the
        Service is headless or gone (its name answers its Ready pods, if any)."""
        key = (namespace, name)
        if service is None:
            self._cluster_ips.pop(key, None)
        else:
            self._cluster_ips[key] = service
        self._pending_ips.add(key)
        self._schedule()

    def sync_cluster_ips(self, services: Iterable[ClusterIPService]) -> None:
        """Answer exactly ``services`` with cluster IPs (after a relist, when deletions
        may have been missed); only those that differ are re-rendered."""
        wanted = {(s.namespace, s.name): s for s in services}
        old = self._cluster_ips
        changed = {k for k in old.keys() | wanted.keys() if old.get(k) != wanted.get(k)}
        self._cluster_ips = wanted
        if changed:
            self._pending_ips |= changed
            self._schedule()

    def _schedule(self) -> None:
        if self._closed:
            return  # a listener may still call after close(): start no task that outlives it
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            for _ in self._render_steps():
                pass
            return
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._render_loop(), name="dns-render")

    async def flush(self) -> None:
        """Return once the answers reflect everything given so far (or the server closed)."""
        while self._task is not None and not self._task.done():
            self._hurry.set()
            await asyncio.wait({self._task})

    async def _render_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._latest is not None or self._pending_ips:
            wait = self._last_render + COALESCE_SECONDS - loop.time()
            if wait > 0 and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), wait)
            self._last_render = loop.time()
            try:
                for _ in self._render_steps():
                    await asyncio.sleep(0)
            except Exception:
                log.exception("rendering the DNS answers failed; retrying in %s s", RETRY_SECONDS)
                await asyncio.sleep(RETRY_SECONDS)
        self._hurry.clear()

    def _render_steps(self) -> Iterator[None]:
        """Render the pending changes, yielding every :data:`SLICE_SECONDS` of work. On a
        failure everything is left pending again, to be compared and rendered afresh."""
        catalog, self._latest = self._latest, None
        ips, self._pending_ips = self._pending_ips, set()
        pending = None if self._pending_all else self._pending
        nodes = self._pending_nodes
        self._pending, self._pending_all, self._pending_nodes = set(), False, False
        self.renders += 1
        table = self.table
        started = time.perf_counter()
        try:
            changed: set[bytes] = set()
            for namespace, name in sorted(ips):
                service = self._cluster_ips.get((namespace, name))
                changed |= table.set_cluster_ip(namespace, name, service)
            if catalog is not None:
                services, nodes = changed_services(self._catalog, catalog, pending, nodes, table)
                if nodes:
                    changed |= table.set_nodes(catalog)
                for service_name in sorted(services):
                    changed |= table.set_service(catalog, service_name)
                    if time.perf_counter() - started > SLICE_SECONDS:
                        self._forget(changed)
                        changed = set()
                        yield
                        started = time.perf_counter()
            self._forget(changed)
        except BaseException as exc:
            if self._listener is not None:
                self._listener.clear()  # some names changed and were not forgotten
            if isinstance(exc, Exception):
                if self._latest is None:
                    self._latest = catalog
                self._pending_all = self._pending_nodes = True
                self._pending_ips |= ips
            raise
        if catalog is not None:
            self._catalog = catalog

    def _forget(self, names: set[bytes]) -> None:
        if self._listener is not None and names:
            self._listener.forget(names)

    # --- listening -----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 8600) -> None:
        """Listen on ``host:port`` for UDP and TCP. ``port=0`` picks a free port for both
        (UDP first, then TCP on the same number, retried if that one is taken) and sets
        :attr:`port`. Raises OSError when the port cannot be had."""
        if self._sock is not None:
            raise RuntimeError("the DNS server is already listening")
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        attempts = 1 if port else 10
        for attempt in range(attempts):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            tcp: asyncio.Server | None = None
            try:
                sock.setblocking(False)
                sock.bind((host, port))
                chosen: int = sock.getsockname()[1]
                try:
                    tcp = await asyncio.start_server(self._serve_tcp, host, chosen)
                except OSError:
                    if attempt + 1 < attempts:
                        sock.close()
                        continue  # another process holds that TCP port: pick another
                    raise
                listener = make_listener(self.table, sock, self.config.max_udp_payload + 1024)
                loop.add_reader(sock.fileno(), listener.on_readable)
            except BaseException:
                sock.close()
                if tcp is not None:
                    tcp.close()
                raise
            self._sock, self._listener, self._tcp, self.port = sock, listener, tcp, chosen
            return

    async def close(self) -> None:
        """Stop listening, drop open TCP connections and stop rendering (for good)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        sock, self._sock, self._listener = self._sock, None, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        tcp, self._tcp = self._tcp, None
        if tcp is not None:
            tcp.close()
            connections = set(self._connections)
            for connection in connections:
                connection.cancel()
            if connections:
                await asyncio.wait(connections)
            await tcp.wait_closed()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Length-prefixed queries (RFC 1035 4.2.2), any number per connection; a connection
        idle for 30 s, or one sending something we drop, is closed."""
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    async with asyncio.timeout(_TCP_IDLE_TIMEOUT):
                        prefix = await reader.readexactly(2)
                        query = await reader.readexactly(int.from_bytes(prefix, "big"))
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                response = self.table.answer(query, False)
                if response is None:
                    return
                writer.write(len(response).to_bytes(2, "big") + response)
                await writer.drain()
        except ConnectionError:
            return
        except Exception:
            log.exception("DNS TCP connection failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
