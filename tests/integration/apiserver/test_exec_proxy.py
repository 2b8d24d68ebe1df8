"""pods/exec and nodes/proxy through the API server to a real agent (ProcessDriver): the
Kubernetes channel protocol on the wire, exit codes, stdin, and the Status refusals."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from shoal._util.remotecommand import PROTOCOL_V4, PROTOCOL_V5, exec_query
from shoal.api import Pod
from shoal.client import Client
from shoal.errors import BadRequestError, NotFoundError
from shoal.testing import RunningAPIServer, running_api_server
from tests.integration.cli.conftest import Node, running_node, wait_pod

SLEEPER = [{"name": "main", "command": ["sleep", "60"]}]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningAPIServer]:
    async with running_api_server(tmp_path / "server") as srv:
        yield srv


@pytest.fixture
async def client(server: RunningAPIServer) -> AsyncIterator[Client]:
    async with Client(server.url) as c:
        yield c


@pytest.fixture
async def node(client: Client, tmp_path: Path) -> AsyncIterator[Node]:
    async with running_node(client, tmp_path / "agent") as n:
        yield n


async def run(client: Client, pod: str, command: list[str], **kw: object) -> tuple[int, str, str]:
    out: list[bytes] = []
    err: list[bytes] = []
    code = await client.exec(
        pod,
        "default",
        command,
        stdout=out.append,
        stderr=err.append,
        **kw,  # type: ignore[arg-type]
    )
    return code, b"".join(out).decode(), b"".join(err).decode()


async def test_exec_streams_output_and_exit_codes(client: Client, node: Node) -> None:
    await node.run_pod("box", SLEEPER)
    assert await run(client, "box", ["sh", "-c", "echo out; echo err >&2"]) == (0, "out\n", "err\n")
    code, out, _ = await run(client, "box", ["sh", "-c", "echo partial; exit 3"])
    assert (code, out) == (3, "partial\n")
    # Killed by a signal: 128 + N, as a shell reports it.
    code, _, _ = await run(client, "box", ["sh", "-c", "kill -9 $$"])
    assert code == 137


async def test_exec_stdin_round_trip(client: Client, node: Node) -> None:
    await node.run_pod("cat", SLEEPER)
    data = b"".join(f"line {i}\n".encode() for i in range(5000))  # several frames
    code, out, _ = await run(client, "cat", ["cat"], stdin=data)
    assert code == 0 and out.encode() == data

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"a", b"b", b"c\n"):
            yield part

    assert await run(client, "cat", ["wc", "-c"], stdin=chunks()) == (0, "4\n", "")
    # No stdin requested: the command sees end of input at once.
    assert await run(client, "cat", ["cat"]) == (0, "", "")


async def test_exec_refusals_are_status_errors(client: Client, node: Node) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "two", "namespace": "default"},
        "spec": {
            "nodeName": node.name,
            "restartPolicy": "OnFailure",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "main", "command": ["sleep", "60"]},
                {"name": "quick", "command": ["true"]},
            ],
        },
    }
    await client.pods.create(body)

    def quick_done_main_running(p: Pod) -> bool:
        states = {cs.name: cs.state for cs in p.status.container_statuses}
        return (
            "quick" in states
            and states["quick"].terminated is not None
            and states["main"].running is not None
        )

    await wait_pod(client, "two", quick_done_main_running)
    with pytest.raises(NotFoundError, match='pods "ghost" not found'):
        await client.exec("ghost", "default", ["true"])
    with pytest.raises(BadRequestError, match="container nope is not valid for pod two"):
        await client.exec("two", "default", ["true"], container="nope")
    with pytest.raises(BadRequestError, match="a container name must be specified"):
        await client.exec("two", "default", ["true"])
    with pytest.raises(BadRequestError, match="container quick is not running"):
        await client.exec("two", "default", ["true"], container="quick")
    with pytest.raises(BadRequestError, match="you must specify at least 1 command"):
        await client.exec("two", "default", [], container="main")
    assert await client.exec("two", "default", ["true"], container="main") == 0


async def test_wire_protocol_v4_and_v5(server: RunningAPIServer, node: Node) -> None:
    await node.run_pod("wire", SLEEPER)
    base = server.url.replace("http://", "ws://") + "/api/v1/namespaces/default/pods/wire/exec"
    query = exec_query(["sh", "-c", "cat; exit 2"], stdin=True)
    for proto, end_of_input in ((PROTOCOL_V4, b"\x00"), (PROTOCOL_V5, b"\xff\x00")):
        async with connect(f"{base}?{query}", subprotocols=[proto], proxy=None) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == proto
            await ws.send(b"\x00hi")
            await ws.send(end_of_input)
            frames = [m async for m in ws]
            assert ws.close_code == 1000
        assert isinstance(frames[0], bytes) and frames[0] == b"\x01hi"
        status = json.loads(frames[-1][1:])
        assert frames[-1][0] == 3
        assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]

    # A plain GET (no upgrade) is refused as Kubernetes refuses it.
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get("/api/v1/namespaces/default/pods/wire/exec?command=true")
    assert r.status_code == 400 and r.json()["message"] == "Upgrade request required"
    # An upgrade refused before it starts carries the Status as an HTTP answer.
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            f"{base.replace('wire', 'gone')}?command=true", subprotocols=[PROTOCOL_V4], proxy=None
        ):  # type: ignore[list-item]
            pass  # pragma: no cover
    assert info.value.response.status_code == 404
    assert json.loads(info.value.response.body or b"")["reason"] == "NotFound"


async def test_node_proxy_reaches_the_agent(client: Client, node: Node) -> None:
    await node.run_pod("stats", [{"name": "main", "command": ["sleep", "60"]}])
    async with httpx.AsyncClient(base_url=client.server) as http:
        r = await http.get(f"/api/v1/nodes/{node.name}/proxy/healthz")
    assert (r.status_code, r.text) == (200, "ok")
    with pytest.raises(NotFoundError, match='nodes "no-such-node" not found'):
        await client.stats_summary("no-such-node")
    deadline = time.monotonic() + 10
    while True:
        summary = await client.stats_summary(node.name)
        pods = {p["podRef"]["name"]: p for p in summary.get("pods") or []}
        if "stats" in pods or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert summary["node"]["nodeName"] == node.name
    assert pods["stats"]["podRef"]["namespace"] == "default"
    assert [c["name"] for c in pods["stats"]["containers"]] == ["main"]
