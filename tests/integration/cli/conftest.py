"""A real API server per test and a way to run the CLI against it.

The CLI calls ``asyncio.run``, which cannot nest inside the test's running loop, so each
invocation runs in a worker thread while the server keeps serving on the test's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from shoal.cli import app
from shoal.client import Client
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
