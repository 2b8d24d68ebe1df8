"""The DNS server on a loopback port, queried by real clients: dnspython and dig."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import pytest

from shoal.discovery import Catalog, Instance, Node
from shoal.discovery.dns import DNSConfig, DNSServer, _udp

NODES = [Node("dnsit-n1", "127.0.0.1")]


def _catalog(count: int) -> Catalog:
    insts = [
        Instance(f"web-{i:03}", "web", "dnsit-n1", f"127.1.{i // 250}.{i % 250 + 1}", 9000 + i)
        for i in range(count)
    ]
    return Catalog.build(NODES, insts)


@pytest.fixture(params=["mmsg", "plain"])
async def server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[DNSServer]:
    """A server on a free port, with each UDP driver (recvmmsg batches, recvfrom/sendto)."""
    if request.param == "plain":
        monkeypatch.setattr(_udp, "_MMSG", None)
    else:
        assert _udp._MMSG is not None, "recvmmsg/sendmmsg not found in libc"
    srv = DNSServer(DNSConfig(ttl=3), _catalog(3))
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.close()


def _a(msg: dns.message.Message) -> set[str]:
    return {rd.to_text() for rrset in msg.answer for rd in rrset}


async def test_udp_and_tcp_answers(server: DNSServer) -> None:
    query = dns.message.make_query("web.service.consul", "A")
    udp = await dns.asyncquery.udp(query, "127.0.0.1", port=server.port, timeout=2)
    assert udp.id == query.id and _a(udp) == {"127.1.0.1", "127.1.0.2", "127.1.0.3"}
    srv_query = dns.message.make_query("_web._tcp.service.consul", "SRV")
    tcp = await dns.asyncquery.tcp(srv_query, "127.0.0.1", port=server.port, timeout=2)
    assert len(_a(tcp)) == 3 and len(tcp.additional) == 3
    nx = await dns.asyncquery.udp(
        dns.message.make_query("gone.service.consul", "A"), "127.0.0.1", port=server.port, timeout=2
    )
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority


async def test_updates_reach_cached_answers(server: DNSServer) -> None:
    """Answers are cached per query; a change drops exactly the names it touched."""
    query = dns.message.make_query("web.service.consul", "A")
    missing = dns.message.make_query("api.service.consul", "SRV")

    async def ask(q: dns.message.Message) -> dns.message.Message:
        return await dns.asyncquery.udp(q, "127.0.0.1", port=server.port, timeout=2)

    for _ in range(3):  # the first fills the cache, the others hit it
        assert len(_a(await ask(query))) == 3
        assert (await ask(missing)).rcode() == dns.rcode.NXDOMAIN
    server.update(_catalog(1), ["web"], nodes_changed=False)
    await server.flush()
    assert _a(await ask(query)) == {"127.1.0.1"}
    api = Instance("api-1", "api", "dnsit-n1", "", 7000)
    server.update(Catalog.build(NODES, [api]))
    await server.flush()
    assert (await ask(query)).rcode() == dns.rcode.NXDOMAIN
    assert _a(await ask(missing)) == {"1 1 7000 dnsit-n1.node.dc1.consul."}


async def test_truncation_then_tcp_fallback(server: DNSServer) -> None:
    server.update(_catalog(80))
    await server.flush()
    query = dns.message.make_query("web.service.consul", "A")
    udp = await dns.asyncquery.udp(query, "127.0.0.1", port=server.port, timeout=2)
    assert udp.flags & dns.flags.TC and len(_a(udp)) == 3  # Consul's udp_answer_limit
    big = dns.message.make_query("web.service.consul", "SRV", use_edns=0, payload=1232)
    fit = await dns.asyncquery.udp(big, "127.0.0.1", port=server.port, timeout=2)
    assert fit.flags & dns.flags.TC and 10 < len(_a(fit)) < 80
    assert len(fit.to_wire()) <= 1232 and len(fit.additional) == len(_a(fit))
    full, used_tcp = await dns.asyncquery.udp_with_fallback(
        query, "127.0.0.1", port=server.port, timeout=2
    )
    assert used_tcp and len(_a(full)) == 80


async def test_many_queries_on_one_tcp_connection(server: DNSServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        ids = list(range(100, 110))
        for qid in ids:
            wire = dns.message.make_query("dnsit-n1.node.consul", "A", id=qid).to_wire()
            writer.write(len(wire).to_bytes(2, "big") + wire)
        await writer.drain()
        for qid in ids:
            size = int.from_bytes(await reader.readexactly(2), "big")
            msg = dns.message.from_wire(await reader.readexactly(size))
            assert msg.id == qid and _a(msg) == {"127.0.0.1"}
    finally:
        writer.close()
        await writer.wait_closed()


async def test_garbage_does_not_stop_the_server(server: DNSServer) -> None:
    def blast() -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            for packet in (b"", b"\x01", os.urandom(40), b"\xff" * 600, os.urandom(3000)):
                sock.sendto(packet, ("127.0.0.1", server.port))
            sock.sendto(b"\xbe\xef\x01\x00\x00\x02" + bytes(6), ("127.0.0.1", server.port))
            while True:  # skip answers to the random packets; find the FORMERR for 0xbeef
                data = sock.recv(4096)
                if data[:2] == b"\xbe\xef":
                    return data

    formerr = await asyncio.to_thread(blast)
    assert formerr[3] & 0x0F == dns.rcode.FORMERR
    msg = await dns.asyncquery.udp(
        dns.message.make_query("web.service.consul", "A"), "127.0.0.1", port=server.port, timeout=2
    )
    assert len(_a(msg)) == 3


async def test_dig(server: DNSServer) -> None:
    if shutil.which("dig") is None:
        if os.geteuid() != 0:
            pytest.skip("dig not installed (dnsutils)")
        pytest.fail("running as root but dig is not installed (make test installs dnsutils)")
    server.update(_catalog(80))
    await server.flush()

    def dig(*args: str) -> str:
        proc = subprocess.run(
            ["dig", "@127.0.0.1", "-p", str(server.port), "+time=2", "+tries=1", *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    short = await asyncio.to_thread(dig, "+short", "dnsit-n1.node.consul")
    assert short.split() == ["127.0.0.1"]
    srv = await asyncio.to_thread(dig, "+short", "SRV", "_web._tcp.service.consul")
    assert len(srv.splitlines()) == 80 and "dnsit-n1.node.dc1.consul." not in srv
    # Without EDNS the 80 A records do not fit in 512 bytes: dig retries over TCP by itself.
    full = await asyncio.to_thread(dig, "+noedns", "web.service.consul")
    assert "Truncated, retrying in TCP mode" in full and "ANSWER: 80" in full
    # +ignore shows the UDP answer itself, with the tc flag: for a 512-byte client
    # Consul's udp_answer_limit (3), for a larger one as many records as fit.
    small = await asyncio.to_thread(dig, "+ignore", "+bufsize=512", "SRV", "web.service.consul")
    assert re.search(r"flags: qr aa tc rd;.*ANSWER: 3,", small)
    cut = await asyncio.to_thread(dig, "+ignore", "+bufsize=1232", "SRV", "web.service.consul")
    found = re.search(r"flags: qr aa tc rd;.*ANSWER: (\d+),", cut)
    assert found is not None and 3 < int(found.group(1)) < 80, cut
    tcp = await asyncio.to_thread(dig, "+tcp", "+short", "web.service.consul")
    assert len(tcp.split()) == 80
    nx = await asyncio.to_thread(dig, "missing.service.consul")
    assert "status: NXDOMAIN" in nx and "ns.consul. hostmaster.consul." in nx


def test_runs_under_uvloop() -> None:
    import uvloop

    async def main() -> set[str]:
        srv = DNSServer(DNSConfig(), _catalog(2))
        await srv.start("127.0.0.1", 0)
        try:
            query = dns.message.make_query("web.service.consul", "A")
            udp = await dns.asyncquery.udp(query, "127.0.0.1", port=srv.port, timeout=2)
            tcp = await dns.asyncquery.tcp(query, "127.0.0.1", port=srv.port, timeout=2)
            assert _a(udp) == _a(tcp)
            return _a(udp)
        finally:
            await srv.close()

    assert uvloop.run(main()) == {"127.1.0.1", "127.1.0.2"}


async def test_close_frees_both_ports() -> None:
    srv = DNSServer()
    await srv.start("127.0.0.1", 0)
    port = srv.port
    await srv.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("127.0.0.1", port))
