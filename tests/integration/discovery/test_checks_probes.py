"""The check runner against real targets: an HTTP server (aiohttp, plain and TLS) that
answers 200, 429, 500 and is then stopped; a TCP listener that is then closed; scripts
with exit codes, big outputs and a timeout that must kill their whole process group; the
first run staggered within the interval; close() leaving no task and no process behind."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from shoal.discovery._checks import CheckDefinition, CheckRunner
from shoal.errors import BadRequestError
from tests.unit.discovery.test_checks import Recorder


@pytest.fixture
async def rec() -> Recorder:
    return Recorder()


@pytest.fixture
async def runner(rec: Recorder) -> AsyncIterator[CheckRunner]:
    r = CheckRunner(rec.report, rec.deregister, enable_script_checks=True, reap_interval=0.05)
    await r.start()
    try:
        yield r
    finally:
        await r.close()


class Server:
    """A real aiohttp server on 127.0.0.1 with an ephemeral port; ``handler`` is swapped
    per test, ``requests`` records what arrived."""

    def __init__(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.handler = handler
        self.requests: list[tuple[str, str, dict[str, list[str]], bytes]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers: dict[str, list[str]] = {}
        for k, v in request.headers.items():
            headers.setdefault(k.lower(), []).append(v)
        self.requests.append((request.method, request.path, headers, await request.read()))
        return await self.handler(request)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async def ok(_: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    s = Server(ok)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def http_check(cid: str, url: str, **kw: object) -> CheckDefinition:
    kw.setdefault("interval", 0.05)
    return CheckDefinition(cid, cid, "http", http=url, **kw)  # type: ignore[arg-type]


def script_check(cid: str, script: str, **kw: object) -> CheckDefinition:
    kw.setdefault("interval", 0.05)
    return CheckDefinition(cid, cid, "script", args=("sh", "-c", script), **kw)  # type: ignore[arg-type]


# --- HTTP --------------------------------------------------------------------------------------


async def test_http_200_429_500_then_stopped(
    runner: CheckRunner, rec: Recorder, server: Server
) -> None:
    status = [200]

    async def answer(_: web.Request) -> web.StreamResponse:
        return web.Response(status=status[0], text=f"state {status[0]}")

    server.handler = answer
    url = f"http://127.0.0.1:{server.port}/health"
    runner.set(http_check("web", url))
    assert await rec.until_status("web", "passing") == (f"HTTP GET {url}: 200 OK Output: state 200")
    status[0] = 429
    assert await rec.until_status("web", "warning") == (
        f"HTTP GET {url}: 429 Too Many Requests Output: state 429"
    )
    status[0] = 500
    assert await rec.until_status("web", "critical") == (
        f"HTTP GET {url}: 500 Internal Server Error Output: state 500"
    )
    await server.stop()
    await rec.until(lambda: "connection refused" in rec.of("web")[-1][1])
    assert rec.of("web")[-1] == (
        "critical",
        f'Get "{url}": dial tcp 127.0.0.1:{server.port}: connect: connection refused',
    )
    assert [s for s, _ in rec.of("web")] == ["passing", "warning", "critical", "critical"]


async def test_http_reports_only_changes(
    runner: CheckRunner, rec: Recorder, server: Server
) -> None:
    runner.set(http_check("steady", f"http://127.0.0.1:{server.port}/"))
    await rec.until(lambda: len(server.requests) >= 8)
    assert [s for s, _ in rec.of("steady")] == ["passing"]


async def test_http_sends_method_headers_body_and_consul_defaults(
    runner: CheckRunner, rec: Recorder, server: Server
) -> None:
    url = f"http://127.0.0.1:{server.port}/probe?x=1"
    runner.set(
        http_check(
            "post",
            url,
            method="POST",
            header={"X-Token": ["a", "b"], "Accept": ["application/json"]},
            body='{"ping": true}',
        )
    )
    assert (await rec.until_status("post", "passing")).startswith(f"HTTP POST {url}: 200 OK")
    method, path, headers, body = server.requests[0]
    assert (method, path, body) == ("POST", "/probe", b'{"ping": true}')
    assert headers["x-token"] == ["a", "b"]
    assert headers["accept"] == ["application/json"]  # a given header wins over the default
    assert headers["user-agent"] == ["Consul Health Check"]


async def test_http_timeout_is_critical(runner: CheckRunner, rec: Recorder, server: Server) -> None:
    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        return web.Response(text="late")

    server.handler = slow
    url = f"http://127.0.0.1:{server.port}/slow"
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    runner.set(http_check("slow", url, timeout=0.2))
    assert await rec.until_status("slow", "critical", timeout=3) == (
        f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
    )
    assert loop.time() - t0 < 2


async def test_http_keeps_the_last_4k_of_the_body(
    runner: CheckRunner, rec: Recorder, server: Server
) -> None:
    async def big(_: web.Request) -> web.StreamResponse:
        return web.Response(text="a" * 10_000 + "END")

    server.handler = big
    url = f"http://127.0.0.1:{server.port}/"
    runner.set(http_check("big", url))
    output = await rec.until_status("big", "passing")
    prefix = f"HTTP GET {url}: 200 OK Output: "
    assert output == prefix + "a" * 4093 + "END"


async def test_http_redirects_followed_only_on_the_same_origin(
    runner: CheckRunner, rec: Recorder, server: Server
) -> None:
    other = Server(server.handler)
    await other.start()
    try:

        async def redirect(request: web.Request) -> web.StreamResponse:
            if request.path == "/here":
                raise web.HTTPFound("/ok")
            if request.path == "/away":
                raise web.HTTPFound(f"http://127.0.0.1:{other.port}/ok")
            return web.Response(text="ok")

        server.handler = redirect
        here = f"http://127.0.0.1:{server.port}/here"
        away = f"http://127.0.0.1:{server.port}/away"
        runner.set(http_check("here", here))
        runner.set(http_check("away", away))
        assert await rec.until_status("here", "passing") == f"HTTP GET {here}: 200 OK Output: ok"
        assert (await rec.until_status("away", "critical")).startswith(
            f"HTTP GET {away}: 302 Found Output: "
        )
        assert other.requests == []
    finally:
        await other.stop()


def _self_signed(tmp: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "checks-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


async def test_https_self_signed_needs_tls_skip_verify(
    runner: CheckRunner, rec: Recorder, tmp_path: Path
) -> None:
    async def ok(_: web.Request) -> web.StreamResponse:
        return web.Response(text="secure")

    tls = Server(ok)
    await tls.start(_self_signed(tmp_path))
    try:
        url = f"https://127.0.0.1:{tls.port}/"
        runner.set(http_check("verify", url))
        runner.set(http_check("skip", url, tls_skip_verify=True))
        assert await rec.until_status("skip", "passing") == f"HTTP GET {url}: 200 OK Output: secure"
        assert (await rec.until_status("verify", "critical")).startswith(
            f'Get "{url}": tls: failed to verify certificate: self-signed certificate'
        )
    finally:
        await tls.stop()


# --- TCP ---------------------------------------------------------------------------------------


async def test_tcp_listener_then_closed(runner: CheckRunner, rec: Recorder) -> None:
    accepted: list[int] = []

    async def on_connect(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(1)
        w.close()

    listener = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        runner.set(CheckDefinition("db", "db", "tcp", tcp=f"127.0.0.1:{port}", interval=0.05))
        assert await rec.until_status("db", "passing") == f"TCP connect 127.0.0.1:{port}: Success"
        assert accepted
    finally:
        listener.close()
        await listener.wait_closed()
    assert await rec.until_status("db", "critical") == (
        f"dial tcp 127.0.0.1:{port}: connect: connection refused"
    )


async def test_tcp_bad_address_is_a_critical_result(runner: CheckRunner, rec: Recorder) -> None:
    runner.set(CheckDefinition("bad", "bad", "tcp", tcp="no-port-here", interval=0.05))
    assert await rec.until_status("bad", "critical") == (
        "dial tcp address no-port-here: missing port in address"
    )


async def test_first_runs_are_staggered_within_the_interval(
    runner: CheckRunner, rec: Recorder
) -> None:
    listener = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(20):
            runner.set(CheckDefinition(f"st{i}", "st", "tcp", tcp=f"127.0.0.1:{port}", interval=1))
        firsts: dict[str, float] = {}

        def all_seen() -> bool:
            for _, cid, _s, _o in rec.reports:
                firsts.setdefault(cid, loop.time() - t0)
            return len(firsts) == 20

        await rec.until(all_seen, timeout=3)
        # Within one interval, and spread over it rather than all at once.
        assert max(firsts.values()) < 1.3
        assert max(firsts.values()) - min(firsts.values()) > 0.3
    finally:
        listener.close()
        await listener.wait_closed()


# --- scripts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "status"),
    [
        ("exit 0", "passing"),
        ("exit 1", "warning"),
        ("exit 2", "critical"),
        ("kill -9 $$", "critical"),
    ],
)
async def test_script_exit_codes(
    runner: CheckRunner, rec: Recorder, script: str, status: str
) -> None:
    runner.set(script_check("s", f"echo to-out; echo to-err >&2; {script}"))
    assert await rec.until_status("s", status) == "to-out\nto-err\n"


async def test_script_that_cannot_start_is_critical(runner: CheckRunner, rec: Recorder) -> None:
    runner.set(CheckDefinition("nx", "nx", "script", args=("no-such-tool-4c1",), interval=0.05))
    assert await rec.until_status("nx", "critical") == (
        'exec: "no-such-tool-4c1": executable file not found in $PATH'
    )


async def test_script_output_keeps_the_last_4k(runner: CheckRunner, rec: Recorder) -> None:
    runner.set(script_check("loud", "head -c 10000 /dev/zero | tr '\\0' a; echo END"))
    output = await rec.until_status("loud", "passing")
    assert output == "Captured 4096 of 10004 bytes\n...\n" + "a" * 4092 + "END\n"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def _gone(pids: list[int], timeout: float = 3.0) -> bool:
    async with asyncio.timeout(timeout):
        while any(_alive(p) for p in pids):
            await asyncio.sleep(0.02)
    return True


def _read_pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def _pids(path: Path) -> list[int]:
    """The two PIDs (script, background child) a test script writes to ``path``."""
    async with asyncio.timeout(5):
        while len(pids := _read_pids(path)) < 2:
            await asyncio.sleep(0.02)
    return pids


async def test_script_timeout_kills_the_process_group(
    runner: CheckRunner, rec: Recorder, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    # The script and a background child it leaves holding the output pipe.
    script = f"echo started; sleep 30 & echo $$ $! > {pidfile}; wait"
    # The first run comes at a random point within the interval: keep it short.
    runner.set(script_check("hang", script, timeout=0.3, interval=0.2))
    output = await rec.until_status("hang", "critical", timeout=5)
    assert output == "Timed out (300ms) running check\n\nstarted\n"
    assert await _gone(await _pids(pidfile))


async def test_background_leftovers_are_killed_after_a_normal_exit(
    runner: CheckRunner, rec: Recorder, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    script = f"sleep 30 > /dev/null 2>&1 & echo $$ $! > {pidfile}; exit 0"
    runner.set(script_check("bg", script, interval=0.2))
    assert await rec.until_status("bg", "passing") == ""
    assert await _gone(await _pids(pidfile))


async def test_script_flag_off_refuses_script_checks(rec: Recorder) -> None:
    r = CheckRunner(rec.report, rec.deregister)
    await r.start()
    try:
        with pytest.raises(BadRequestError, match="enable_script_checks"):
            r.set(script_check("s", "exit 0"))
        assert r.ids() == frozenset()
    finally:
        await r.close()


async def test_deregister_after_http_target_dies(
    runner: CheckRunner, rec: Recorder, server: Server
) -> None:
    url = f"http://127.0.0.1:{server.port}/"
    runner.set(http_check("svc:http", url, service_id="svc", deregister_critical_after=0.3))
    await rec.until_status("svc:http", "passing")
    await server.stop()
    await rec.until_status("svc:http", "critical")
    await rec.until(lambda: rec.deregistered == ["svc"])


# --- close ---------------------------------------------------------------------------------


async def test_close_leaves_no_task_and_no_process(
    rec: Recorder, server: Server, tmp_path: Path
) -> None:
    before = asyncio.all_tasks()
    r = CheckRunner(rec.report, rec.deregister, enable_script_checks=True, reap_interval=0.05)
    await r.start()
    long_pids, removed_pids = tmp_path / "long", tmp_path / "removed"
    r.set(script_check("long", f"sleep 30 & echo $$ $! > {long_pids}; wait", timeout=60))
    r.set(script_check("removed", f"sleep 30 & echo $$ $! > {removed_pids}; wait", timeout=60))
    r.set(http_check("h", f"http://127.0.0.1:{server.port}/"))
    r.set(CheckDefinition("t", "t", "ttl", ttl=30))
    pids = await _pids(long_pids) + await _pids(removed_pids)
    await rec.until_status("h", "passing")
    r.remove("removed")  # its task may still be winding down when close() runs
    await r.close()
    assert asyncio.all_tasks() <= before
    assert await _gone(pids)
    # Every script's command line names this test's directory: none may be left running.
    assert [p for p in _pids_mentioning(str(tmp_path)) if _alive(p)] == []
    assert r.ids() == frozenset()


def _pids_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


if sys.platform != "linux":  # pragma: no cover - /proc, process groups
    pytestmark = pytest.mark.skip(reason="Linux only")
