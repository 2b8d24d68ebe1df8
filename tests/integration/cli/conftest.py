"""A real API server per test, a way to run the CLI against it, and a real node agent
(ProcessDriver) for the commands that reach containers (exec, top).

The CLI calls ``asyncio.run``, which cannot nest inside the test's running loop, so each
invocation runs in a worker thread while the server keeps serving on the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from shoal.agent import Agent, AgentConfig
from shoal.api import Pod
from shoal.cli import app
from shoal.client import Client
from shoal.runtime import _procutil as pu
from shoal.testing import RunningAPIServer, running_api_server

Cli = Callable[..., Coroutine[Any, Any, Result]]


@pytest.fixture
async def server() -> AsyncIterator[RunningAPIServer]:
    async with running_api_server() as srv:
        yield srv


@pytest.fixture
async def client(server: RunningAPIServer) -> AsyncIterator[Client]:
    async with Client(server.url) as c:
        yield c


@pytest.fixture
def cli(server: RunningAPIServer) -> Cli:
    runner = CliRunner()

    async def invoke(*args: str, input: str | None = None) -> Result:
        result = await asyncio.to_thread(
            runner.invoke, app, ["--server", server.url, *args], input=input
        )
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return invoke


# --- a node agent (real ProcessDriver) for exec, logs and stats -------------------------------


@dataclass
class Node:
    """A running agent with the process driver, registered as ``name``."""

    name: str
    agent: Agent
    client: Client

    async def run_pod(
        self, name: str, containers: list[dict[str, Any]], timeout: float = 15.0, **spec: Any
    ) -> Pod:
        """Create a pod bound to this node and wait until every container runs."""
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": self.name, "terminationGracePeriodSeconds": 1,
                     "containers": containers, **spec},
        }  # fmt: skip
        await self.client.pods.create(body)
        return await wait_pod(
            self.client,
            name,
            lambda p: (
                p.status.phase == "Running"
                and all(cs.state.running is not None for cs in p.status.container_statuses)
            ),
            timeout,
        )


async def wait_pod(
    client: Client, name: str, predicate: Callable[[Pod], bool], timeout: float = 15.0
) -> Pod:
    deadline = time.monotonic() + timeout
    while True:
        pod = await client.pods.get(name, "default")
        if predicate(pod):
            return pod
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {name}: unexpected status {pod.status.to_dict()}")
        await asyncio.sleep(0.1)


def _recorded(data_dir: Path) -> list[tuple[int, int]]:
    found = []
    for path in (data_dir / "containers").glob("*.json"):
        data = pu.read_json(path) or {}
        if data.get("pid") and data.get("start_ticks"):
            found.append((int(data["pid"]), int(data["start_ticks"])))
    return found


@contextlib.asynccontextmanager
async def running_node(client: Client, data_dir: Path, **overrides: Any) -> AsyncIterator[Node]:
    """An agent on a unique node name; on exit it stops its containers, and any process it
    recorded that is still alive is killed by pid + start time (even after a failure)."""
    name = f"node-{secrets.token_hex(3)}"
    settings: dict[str, Any] = {
        "node_name": name,
        "data_dir": data_dir,
        "heartbeat_interval": 0.5,
        "housekeeping_interval": 0.3,
        "force_kill_grace": 1.0,
        "stop_pods_on_exit": True,
        **overrides,
    }
    agent = Agent(client, AgentConfig(**settings))
    task = asyncio.create_task(agent.run())
    try:
        ready = asyncio.create_task(agent.ready.wait())
        await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            await task
        assert agent.ready.is_set(), "the agent did not become ready"
        yield Node(name, agent, client)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        for pid, ticks in _recorded(data_dir):
            if pu.is_same_process(pid, ticks):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


@pytest.fixture
async def node(client: Client, tmp_path: Path) -> AsyncIterator[Node]:
    async with running_node(client, tmp_path / "agent") as n:
        yield n
