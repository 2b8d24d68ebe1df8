"""One probe check against real loopback servers and host commands."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shoal.agent._probes import ProbeTarget, run_check
from shoal.api import Container, Probe
from shoal.runtime import _procutil as pu


async def _http_server(status: int) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _target(ports: dict[int, int] | None = None, **kw: object) -> ProbeTarget:
    container = Container.model_validate(
        {"name": "c", "command": ["x"], "ports": [{"containerPort": 80, "name": "web"}]}
    )
    return ProbeTarget(container=container, host_ports=ports or {}, **kw)  # type: ignore[arg-type]


async def test_http_get_success_and_failure_codes(http: httpx.AsyncClient) -> None:
    for code, ok in ((200, True), (302, True), (399, True), (404, False), (500, False)):
        server, port = await _http_server(code)
        async with server:
            probe = Probe.model_validate({"httpGet": {"port": "web", "path": "/healthz"}})
            outcome = await run_check(probe, _target({80: port}), http)
        assert outcome.ok is ok, code
        if not ok:
            assert outcome.message == f"HTTP probe failed with statuscode: {code}"


async def test_http_get_refused(http: httpx.AsyncClient) -> None:
    server, port = await _http_server(200)
    server.close()
    await server.wait_closed()
    outcome = await run_check(Probe.model_validate({"httpGet": {"port": port}}), _target(), http)
    assert not outcome.ok and outcome.message.startswith(f'Get "http://127.0.0.1:{port}/"')


async def test_tcp_socket(http: httpx.AsyncClient) -> None:
    server, port = await _http_server(200)
    async with server:
        ok = await run_check(
            Probe.model_validate({"tcpSocket": {"port": 80}}), _target({80: port}), http
        )
    assert ok.ok
    refused = await run_check(Probe.model_validate({"tcpSocket": {"port": port}}), _target(), http)
    assert not refused.ok and "dial tcp" in refused.message
    unknown = await run_check(
        Probe.model_validate({"tcpSocket": {"port": "nope"}}), _target(), http
    )
    assert not unknown.ok and unknown.message == 'unknown port name "nope"'


async def test_exec_uses_env_and_exit_code(http: httpx.AsyncClient, tmp_path: Path) -> None:
    target = _target(env={"PATH": "/usr/bin:/bin", "WANT": "yes"}, working_dir=str(tmp_path))
    ok = await run_check(
        Probe.model_validate({"exec": {"command": ["sh", "-c", 'test "$WANT" = yes && pwd']}}),
        target,
        http,
    )
    assert ok.ok and ok.message == str(tmp_path)
    bad = await run_check(
        Probe.model_validate({"exec": {"command": ["sh", "-c", "echo broken; exit 2"]}}),
        target,
        http,
    )
    assert not bad.ok and bad.message == "broken"
    missing = await run_check(
        Probe.model_validate({"exec": {"command": ["no-such-probe-cmd"]}}), target, http
    )
    assert not missing.ok


async def test_exec_timeout_kills_the_command(http: httpx.AsyncClient, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    probe = Probe.model_validate(
        {
            "exec": {"command": ["sh", "-c", f"echo $$ > {marker}; exec sleep 30"]},
            "timeoutSeconds": 1,
        }
    )
    began = time.monotonic()
    outcome = await run_check(probe, _target(env={"PATH": "/usr/bin:/bin"}), http)
    assert not outcome.ok and "timed out" in outcome.message
    assert time.monotonic() - began < 3
    pid = int(marker.read_text())
    assert pu.proc_state(pid) is None, "the timed-out command was killed and reaped"
