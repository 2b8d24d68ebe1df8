"""The reconcile framework: work-queue guarantees and the controller error policy."""

from __future__ import annotations

import asyncio

import pytest

from shoal.client import Client
from shoal.controllers import Controller, WorkQueue
from shoal.controllers._base import QueueShutDown, slow_start_batch
from shoal.errors import ConflictError, NotFoundError, TemporaryError


async def test_dedup_while_queued() -> None:
    q = WorkQueue("t")
    q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    assert await q.get() == "a"
    assert await q.get() == "b"


async def test_key_added_while_processing_runs_again_after() -> None:
    q = WorkQueue("t")
    q.add("a")
    key = await q.get()
    q.add("a")  # an event arrives while "a" is being reconciled
    assert len(q) == 0  # not handed to a second worker meanwhile
    q.done(key)
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    assert q.idle


async def test_add_after_keeps_earliest_deadline() -> None:
    q = WorkQueue("t")
    q.add_after("a", 10)
    q.add_after("a", 0.01)
    q.add_after("a", 5)
    assert await asyncio.wait_for(q.get(), 1) == "a"
    q.shutdown()


async def test_rate_limited_grows_and_forget_resets() -> None:
    q = WorkQueue("t", base_delay=1, max_delay=8)
    delays = [q.add_rate_limited("a") for _ in range(5)]
    for got, want in zip(delays, [1, 2, 4, 8, 8], strict=True):
        assert want * 0.9 <= got <= want * 1.1  # 10% jitter
    q.forget("a")
    assert 0.9 <= q.add_rate_limited("a") <= 1.1
    q.shutdown()


async def test_shutdown_wakes_waiters() -> None:
    q = WorkQueue("t")
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.shutdown()
    with pytest.raises(QueueShutDown):
        await waiter


async def test_slow_start_batches_and_stops_on_error() -> None:
    sizes: list[int] = []
    inflight = 0

    async def ok() -> None:
        nonlocal inflight
        inflight += 1
        await asyncio.sleep(0)
        sizes.append(inflight)
        inflight -= 1

    done, err = await slow_start_batch(10, ok)
    assert (done, err) == (10, None)
    assert max(sizes) == 4  # batches of 1, 2, 4, then the remaining 3

    sizes.clear()
    done, err = await slow_start_batch(40, ok, max_batch=8)
    assert (done, err) == (40, None)
    assert max(sizes) == 8  # 1, 2, 4, 8, 8, 8, 8, 1

    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        if calls >= 2:
            raise RuntimeError("quota")

    done, err = await slow_start_batch(100, failing)
    assert done == 1 and isinstance(err, RuntimeError)
    assert calls == 3  # batch 1 ok, batch 2 failed: no further batches


class Scripted(Controller):
    """Raises the scripted exception per call, then succeeds."""

    name = "scripted"

    def __init__(self, script: list[BaseException | None]) -> None:
        super().__init__(Client("http://127.0.0.1:1"), workers=2)
        self.script = script
        self.calls: list[str] = []
        self.running: dict[str, int] = {}
        self.overlaps = 0

    async def reconcile(self, key: str) -> None:
        self.calls.append(key)
        self.running[key] = self.running.get(key, 0) + 1
        if self.running[key] > 1:
            self.overlaps += 1
        try:
            await asyncio.sleep(0.01)
            exc = self.script.pop(0) if self.script else None
            if exc is not None:
                raise exc
        finally:
            self.running[key] -= 1


async def _run_until(c: Scripted, n: int) -> None:
    task = asyncio.create_task(c.run())
    try:
        for _ in range(300):
            if len(c.calls) >= n and c.queue.idle:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await c.client.close()


async def test_conflict_retries_quickly() -> None:
    c = Scripted([ConflictError("stale"), ConflictError("stale")])
    c.enqueue("a")
    await _run_until(c, 3)
    assert c.calls == ["a", "a", "a"]


async def test_not_found_is_done() -> None:
    c = Scripted([NotFoundError("gone")])
    c.enqueue("a")
    await _run_until(c, 1)
    await asyncio.sleep(0.2)
    assert c.calls == ["a"]


async def test_other_errors_retry_with_backoff() -> None:
    c = Scripted([RuntimeError("boom"), TemporaryError("later", delay=0.05)])
    c.queue = WorkQueue("scripted", base_delay=0.05)
    c.enqueue("a")
    await _run_until(c, 3)
    assert c.calls == ["a", "a", "a"]


async def test_one_key_never_runs_twice_at_once() -> None:
    c = Scripted([])
    c.workers = 4
    task = asyncio.create_task(c.run())
    try:
        for _ in range(20):
            c.enqueue("a")
            c.enqueue("b")
            await asyncio.sleep(0.003)
        for _ in range(100):
            if c.queue.idle:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await c.client.close()
    assert c.overlaps == 0
    # Events that arrived during a reconcile were not lost: each key ran again after.
    assert c.calls.count("a") >= 2 and c.calls.count("b") >= 2
