"""The API server goes away and comes back on the same address: the agent keeps its pods
running, queues their status, and resumes heartbeats and status writes afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from shoal.agent import Agent, AgentConfig
from shoal.agent._http import AgentHTTPServer
from shoal.apiserver import APIServer
from shoal.client import Client
from shoal.runtime import _procutil as pu
from shoal.store import SQLiteStore, open_store
from shoal.testing import free_port
from tests.integration.agent.conftest import alive, eventually


class _Server:
    """An API server that can be stopped and started again on the same port.

    Served through the agent's uvicorn wrapper rather than ``serve_api``: cancelling
    ``serve_api`` currently leaves its listening socket open (see the agent report).
    """

    def __init__(self, store: SQLiteStore, port: int) -> None:
        self.store = store
        self.port = port
        self.api: APIServer | None = None
        self.http: AgentHTTPServer | None = None

    async def start(self) -> None:
        self.api = APIServer(self.store)
        await self.api.startup()
        self.http = AgentHTTPServer(self.api.app(), "127.0.0.1", self.port)
        await self.http.start()

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
        if self.api is not None:
            await self.api.shutdown()
        self.http = self.api = None


async def test_agent_rides_out_a_server_outage(tmp_path: Path) -> None:
    store = open_store(tmp_path / "state.db")
    port = free_port()
    server = _Server(store, port)
    await server.start()
    client = Client(f"http://127.0.0.1:{port}", timeout=2.0)
    config = AgentConfig("node-a", tmp_path / "agent", heartbeat_interval=0.3, backoff_initial=0.2)
    agent = Agent(client, config)
    agent_task = asyncio.create_task(agent.run())
    procs: list[tuple[int, int]] = []
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        await client.pods.create(
            {
                "metadata": {"name": "steady"},
                "spec": {
                    "nodeName": "node-a",
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "command": ["sh", "-c", "sleep 3; exit 0"]}],
                },
            }
        )

        async def running() -> bool:
            return (await client.pods.get("steady")).status.phase == "Running"

        await eventually(running)
        (st,) = await agent.driver.list()
        assert st.pid is not None
        start_ticks = pu.proc_start_ticks(st.pid)
        assert start_ticks is not None
        pid, ticks = st.pid, start_ticks
        procs.append((pid, ticks))
        beats = agent.node.heartbeats if agent.node else 0

        await server.stop()  # the control plane is gone
        assert alive(pid, ticks), "pods keep running while the server is away"
        # The container finishes during the outage; its status cannot be written yet.
        await eventually(lambda: not alive(pid, ticks), timeout=5)
        await asyncio.sleep(0.3)
        assert not agent_task.done()

        await server.start()

        async def succeeded() -> bool:
            return (await client.pods.get("steady")).status.phase == "Succeeded"

        await eventually(succeeded, timeout=10)
        await eventually(lambda: agent.node is not None and agent.node.heartbeats > beats + 1)
        node = await client.nodes.get("node-a")
        assert node.status.conditions[0].status == "True"
    finally:
        agent_task.cancel()
        with contextlib.suppress(BaseException):
            await agent_task
        await server.stop()
        await client.close()
        await store.close()
        for pid, ticks in procs:
            assert not alive(pid, ticks)
