"""The status writer: only changes, coalesced, conflict-aware, retrying while the server is
away. Against an in-memory stand-in for the pods client (no network)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.agent._reporter import StatusReporter
from shoal.api import Pod, PodStatus
from shoal.errors import ConflictError, NotFoundError, ServerUnreachableError


class FakePods:
    """Stores one pod per name; PUT .../status with resourceVersion CAS, like the server."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.status_writes: list[dict[str, Any]] = []
        self.fail_next: list[Exception] = []

    def add(self, name: str, uid: str = "u1") -> Pod:
        self.pods[name] = {
            "metadata": {"name": name, "namespace": "default", "uid": uid, "resourceVersion": "1"},
            "spec": {"containers": [{"name": "c", "command": ["x"]}]},
            "status": {"phase": "Pending"},
        }
        return Pod.model_validate(self.pods[name])

    def bump(self, name: str) -> None:
        meta = self.pods[name]["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    async def get(self, name: str, namespace: str | None = None) -> Pod:
        if self.fail_next:
            raise self.fail_next.pop(0)
        if name not in self.pods:
            raise NotFoundError(f'pods "{name}" not found')
        return Pod.model_validate(self.pods[name])

    async def update_status(self, body: dict[str, Any]) -> Pod:
        if self.fail_next:
            raise self.fail_next.pop(0)
        name = body["metadata"]["name"]
        if name not in self.pods:
            raise NotFoundError(f'pods "{name}" not found')
        stored = self.pods[name]
        if body["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"]:
            raise ConflictError("the object has been modified")
        stored["status"] = body["status"]
        self.bump(name)
        self.status_writes.append(body["status"])
        return Pod.model_validate(stored)


class FakeClient:
    def __init__(self) -> None:
        self.pods = FakePods()


@pytest.fixture
async def running() -> AsyncIterator[tuple[StatusReporter, FakePods]]:
    client = FakeClient()
    reporter = StatusReporter(client, coalesce=0.05)  # type: ignore[arg-type]
    task = asyncio.create_task(reporter.run())
    yield reporter, client.pods
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _status(phase: str, msg: str = "") -> dict[str, Any]:
    """In the wire shape the agent submits (PodStatus.to_dict)."""
    return PodStatus.model_validate({"phase": phase, "message": msg or None}).to_dict()


async def _settle(reporter: StatusReporter) -> None:
    await asyncio.sleep(0)
    await asyncio.wait_for(reporter.wait_idle(), 5)


async def test_a_burst_of_changes_is_one_write(running: tuple[StatusReporter, FakePods]) -> None:
    reporter, pods = running
    pod = pods.add("p")
    for i in range(5):
        reporter.submit(pod, _status("Running", f"step {i}"))
        await asyncio.sleep(0.005)
    await _settle(reporter)
    assert pods.status_writes == [_status("Running", "step 4")]


async def test_unchanged_status_is_not_written(running: tuple[StatusReporter, FakePods]) -> None:
    reporter, pods = running
    pod = pods.add("p")
    reporter.submit(pod, _status("Pending"))  # what the server already has
    await _settle(reporter)
    assert pods.status_writes == []
    reporter.submit(pod, _status("Running"))
    await _settle(reporter)
    reporter.submit(pod, _status("Running"))
    await _settle(reporter)
    assert pods.status_writes == [_status("Running")]


async def test_conflict_rereads_and_reapplies(running: tuple[StatusReporter, FakePods]) -> None:
    reporter, pods = running
    pod = pods.add("p")
    pods.bump("p")  # someone else wrote meanwhile; our copy is stale
    reporter.submit(pod, _status("Running"))
    await _settle(reporter)
    assert pods.status_writes == [_status("Running")]
    assert pods.pods["p"]["status"] == _status("Running")


async def test_server_away_keeps_the_newest_wish(running: tuple[StatusReporter, FakePods]) -> None:
    reporter, pods = running
    pod = pods.add("p")
    pods.fail_next = [ServerUnreachableError("down")] * 3
    reporter.submit(pod, _status("Running"))
    await asyncio.sleep(0.1)
    reporter.submit(pod, _status("Succeeded"))
    await _settle(reporter)
    assert pods.status_writes[-1] == _status("Succeeded")
    assert pods.pods["p"]["status"] == _status("Succeeded")


async def test_deleted_or_replaced_pods_are_dropped(
    running: tuple[StatusReporter, FakePods],
) -> None:
    reporter, pods = running
    gone = pods.add("gone")
    del pods.pods["gone"]
    reporter.submit(gone, _status("Running"))
    old = pods.add("reused", uid="old")
    pods.add("reused", uid="new")
    pods.bump("reused")
    reporter.submit(old, _status("Failed"))
    await _settle(reporter)
    assert pods.status_writes == []
    assert pods.pods["reused"]["status"] == {"phase": "Pending"}


async def test_forget_drops_queued_status(running: tuple[StatusReporter, FakePods]) -> None:
    reporter, pods = running
    pod = pods.add("p")
    reporter.submit(pod, _status("Running"))
    reporter.forget("u1")
    await asyncio.sleep(0.15)
    assert pods.status_writes == []
