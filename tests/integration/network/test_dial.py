"""NetnsDialer: connections opened from inside a network namespace the test made, while the
test process stays in its own; and the agent's probes going through it, as an agent with
``--node-netns`` probes its pods. The only traffic is to 127.0.0.1 inside that namespace (and
one connection attempt to 127.0.0.1 in the test's own, which must not reach the server)."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest

from shoal.agent._probes import PodAddress, ProbeTarget, run_check
from shoal.api import Container, Probe
from shoal.errors import NetworkError
from shoal.network import NetnsDialer

SERVER = """
import http.server, sys
TOKEN = sys.argv[1].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/" else 503)
        self.send_header("Content-Length", str(len(TOKEN)))
        self.end_headers()
        self.wfile.write(TOKEN)
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


@pytest.fixture
def server(make_netns: Callable[[str], str]) -> Iterator[tuple[str, int, str]]:
    """(netns, port, token): an HTTP server on 127.0.0.1 inside a fresh namespace."""
    netns = make_netns("dial")
    token = secrets.token_hex(8)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", SERVER, token],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield netns, port, token
    finally:
        proc.kill()
        proc.wait()


def test_connections_start_in_the_namespace(server: tuple[str, int, str]) -> None:
    netns, port, token = server

    async def main() -> None:
        dialer = NetnsDialer(netns)
        try:
            reader, writer = await dialer.open_connection("127.0.0.1", port, timeout=5)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            assert (await reader.read()).endswith(token.encode())
            writer.close()
            async with httpx.AsyncClient(transport=dialer.http_transport()) as http:
                for _ in range(3):  # kept-alive connections are reused
                    resp = await http.get(f"http://127.0.0.1:{port}/")
                    assert resp.status_code == 200 and resp.text == token
        finally:
            dialer.close()
        # From the test's own namespace the same address and port is not that server.
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except OSError:
            return
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        assert token.encode() not in await asyncio.wait_for(reader.read(), 5)
        writer.close()

    asyncio.run(main())


def test_probes_reach_a_pod_through_the_node_namespace(server: tuple[str, int, str]) -> None:
    netns, port, _ = server
    container = Container.model_validate({"name": "c", "image": "x"})

    def probe(kind: str, path: str = "/") -> Probe:
        action = {"port": port, "path": path} if kind == "httpGet" else {"port": port}
        return Probe.model_validate({kind: action, "timeoutSeconds": 2})

    async def main() -> None:
        dialer = NetnsDialer(netns)
        pod_http = httpx.AsyncClient(transport=dialer.http_transport(verify=False))
        via = ProbeTarget(container, pod=PodAddress("127.0.0.1", dialer, pod_http))
        try:
            async with httpx.AsyncClient() as host_http:
                assert (await run_check(probe("httpGet"), via, host_http)).ok
                assert (await run_check(probe("tcpSocket"), via, host_http)).ok
                bad = await run_check(probe("httpGet", "/healthz"), via, host_http)
                assert not bad.ok and "statuscode: 503" in bad.message
        finally:
            await pod_http.aclose()
            dialer.close()

    asyncio.run(main())


def test_a_missing_namespace_is_named(prefix: str) -> None:
    async def main() -> None:
        dialer = NetnsDialer(f"{prefix}-absent")
        try:
            with pytest.raises(NetworkError, match=f"{prefix}-absent"):
                await dialer.connect("127.0.0.1", 9, timeout=1)
        finally:
            dialer.close()

    asyncio.run(main())
