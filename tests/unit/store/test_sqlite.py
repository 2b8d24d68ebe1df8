"""SQLiteStore: CRUD, revisions, watch replay/live hand-over, compaction, durability."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

import shoal
from shoal.errors import (
    AlreadyExistsError,
    ConflictError,
    GoneError,
    NotFoundError,
    UnavailableError,
)
from shoal.store import JSONObject, SQLiteStore, WatchEvent, open_store


def pod(name: str, namespace: str = "default", **labels: str) -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }


def node(name: str) -> JSONObject:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


def rv(obj: JSONObject) -> int:
    return int(obj["metadata"]["resourceVersion"])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = open_store(tmp_path / "state" / "shoal.db")
    yield s
    await s.close()


async def take(it: AsyncIterator[WatchEvent], n: int, timeout: float = 5.0) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await anext(it))
    return out


async def aclose(it: AsyncIterator[WatchEvent]) -> None:
    """The protocol types watch() as AsyncIterator, which has no aclose(); ours has."""
    await cast(Any, it).aclose()


# -- CRUD --------------------------------------------------------------------------------------


async def test_create_get_update_delete(store: SQLiteStore) -> None:
    assert await store.revision() == 0
    created = await store.create("pods", pod("web-1"))
    assert rv(created) == 1
    assert created["spec"] == pod("web-1")["spec"]

    got = await store.get("pods", "default", "web-1")
    assert got == created

    changed = {**got, "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}
    updated = await store.update("pods", changed)
    assert rv(updated) == 2
    assert (await store.get("pods", "default", "web-1"))["spec"]["containers"][0]["image"] == (
        "nginx:2"
    )

    deleted = await store.delete("pods", "default", "web-1")
    assert rv(deleted) == 3
    assert deleted["spec"] == changed["spec"]
    with pytest.raises(NotFoundError):
        await store.get("pods", "default", "web-1")
    assert await store.revision() == 3


async def test_create_does_not_mutate_input_and_returns_independent_copy(
    store: SQLiteStore,
) -> None:
    obj = pod("a")
    snapshot = repr(obj)
    created = await store.create("pods", obj)
    assert repr(obj) == snapshot
    assert "resourceVersion" not in obj["metadata"]
    created["spec"]["containers"].append({"name": "x"})
    assert len(obj["spec"]["containers"]) == 1
    assert len((await store.get("pods", "default", "a"))["spec"]["containers"]) == 1


async def test_cluster_scoped_objects_use_empty_namespace(store: SQLiteStore) -> None:
    await store.create("nodes", node("n1"))
    assert (await store.get("nodes", "", "n1"))["metadata"]["name"] == "n1"
    await store.delete("nodes", "", "n1")
    with pytest.raises(NotFoundError):
        await store.get("nodes", "", "n1")


async def test_already_exists(store: SQLiteStore) -> None:
    await store.create("pods", pod("web-1"))
    with pytest.raises(AlreadyExistsError) as info:
        await store.create("pods", pod("web-1"))
    assert str(info.value) == 'pods "web-1" already exists'
    assert info.value.kind == "pods" and info.value.name == "web-1"
    # A failed create takes no revision and leaves the original intact.
    assert await store.revision() == 1
    # Same name in another namespace or resource is a different key.
    await store.create("pods", pod("web-1", "other"))
    await store.create("services", pod("web-1"))
    assert await store.revision() == 3


async def test_not_found(store: SQLiteStore) -> None:
    with pytest.raises(NotFoundError) as info:
        await store.get("pods", "default", "web-1")
    assert str(info.value) == 'pods "web-1" not found'
    assert info.value.code == 404 and info.value.name == "web-1"
    with pytest.raises(NotFoundError):
        await store.update("pods", pod("web-1"))
    with pytest.raises(NotFoundError):
        await store.delete("pods", "default", "web-1")
    assert await store.revision() == 0


async def test_compare_and_swap(store: SQLiteStore) -> None:
    v1 = await store.create("pods", pod("web-1"))
    v2 = await store.update("pods", v1, expected_revision=rv(v1))
    with pytest.raises(ConflictError) as info:
        await store.update("pods", v1, expected_revision=rv(v1))
    assert str(info.value) == (
        'Operation cannot be fulfilled on pods "web-1": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    with pytest.raises(ConflictError):
        await store.delete("pods", "default", "web-1", expected_revision=rv(v1))
    assert await store.revision() == rv(v2)
    assert await store.get("pods", "default", "web-1") == v2
    # Without expected_revision the write is unconditional.
    v3 = await store.update("pods", v1)
    deleted = await store.delete("pods", "default", "web-1", expected_revision=rv(v3))
    assert rv(deleted) == rv(v3) + 1


async def test_revision_is_global_and_monotonic_across_resources(store: SQLiteStore) -> None:
    revs = [
        rv(await store.create("pods", pod("a"))),
        rv(await store.create("nodes", node("n"))),
        rv(await store.create("pods", pod("b", "kube-system"))),
        rv(await store.update("nodes", node("n"))),
        rv(await store.delete("pods", "default", "a")),
    ]
    assert revs == [1, 2, 3, 4, 5]


async def test_revision_survives_reopen_even_after_deleting_newest(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = open_store(path)
    await s.create("pods", pod("a"))
    await s.create("pods", pod("b"))
    await s.delete("pods", "default", "b")
    await s.compact(0)  # even with no events left, the revision must not go back
    await s.close()

    s = open_store(path)
    try:
        assert await s.revision() == 3
        assert rv(await s.get("pods", "default", "a")) == 1
        assert rv(await s.create("pods", pod("b"))) == 4
        assert await s.compacted_revision() == 3
    finally:
        await s.close()


async def test_open_store_creates_parent_dirs_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "s.db"
    s = open_store(path)
    await s.create("pods", pod("a"))
    await s.close()
    assert path.exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_memory_store() -> None:
    s = open_store(":memory:")
    await s.create("pods", pod("a"))
    assert (await s.list("pods")).revision == 1
    await s.close()


async def test_closed_store_is_unavailable(tmp_path: Path) -> None:
    s = open_store(tmp_path / "s.db")
    await s.close()
    with pytest.raises(UnavailableError):
        await s.get("pods", "default", "a")
    with pytest.raises(UnavailableError):
        await s.create("pods", pod("a"))
    with pytest.raises(UnavailableError):
        await anext(s.watch("pods"))
    await s.close()  # idempotent


# -- list --------------------------------------------------------------------------------------


async def test_list_sorted_namespace_and_predicate(store: SQLiteStore) -> None:
    await store.create("pods", pod("b", "ns2", app="web"))
    await store.create("pods", pod("z", "ns1", app="db"))
    await store.create("pods", pod("a", "ns2", app="db"))
    await store.create("pods", pod("m", "ns1", app="web"))
    await store.create("services", pod("svc", "ns1"))

    every = await store.list("pods")
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in every.items] == [
        ("ns1", "m"),
        ("ns1", "z"),
        ("ns2", "a"),
        ("ns2", "b"),
    ]
    assert every.revision == 5

    ns1 = await store.list("pods", "ns1")
    assert [o["metadata"]["name"] for o in ns1.items] == ["m", "z"]

    web = await store.list("pods", predicate=lambda o: o["metadata"]["labels"].get("app") == "web")
    assert [o["metadata"]["name"] for o in web.items] == ["m", "b"]
    assert web.revision == 5

    assert (await store.list("pods", "nope")).items == []
    assert [o["metadata"]["resourceVersion"] for o in ns1.items] == ["4", "2"]


# -- watch -------------------------------------------------------------------------------------


async def test_watch_since_zero_gets_only_new_events(store: SQLiteStore) -> None:
    await store.create("pods", pod("old"))
    it = store.watch("pods")
    await store.create("pods", pod("new"))
    await store.create("nodes", node("n"))  # other resource: not delivered
    await store.update("pods", pod("new"))
    events = await take(it, 2)
    assert [(e.type, e.object["metadata"]["name"], e.revision) for e in events] == [
        ("ADDED", "new", 2),
        ("MODIFIED", "new", 4),
    ]
    assert all(e.resource == "pods" for e in events)
    assert events[0].object["metadata"]["resourceVersion"] == "2"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(it), 0.05)
    await aclose(it)


async def test_watch_from_revision_replays_history_then_live(store: SQLiteStore) -> None:
    for i in range(10):
        await store.create("pods", pod(f"p{i}"))
    it = store.watch("pods", since=4)
    await store.create("pods", pod("live"))
    events = await take(it, 7)
    assert [e.revision for e in events] == list(range(5, 12))
    assert events[-1].object["metadata"]["name"] == "live"
    await aclose(it)


async def test_watch_namespace_filter(store: SQLiteStore) -> None:
    await store.create("pods", pod("a", "ns1"))
    await store.create("pods", pod("b", "ns2"))
    it = store.watch("pods", "ns2")
    await store.create("pods", pod("c", "ns1"))
    await store.create("pods", pod("d", "ns2"))
    assert [e.object["metadata"]["name"] for e in await take(it, 1)] == ["d"]
    replay = store.watch("pods", "ns2", since=1)
    assert [e.object["metadata"]["name"] for e in await take(replay, 2)] == ["b", "d"]
    await aclose(replay)
    await aclose(it)


async def test_watch_replay_and_live_without_gaps_or_duplicates(store: SQLiteStore) -> None:
    """Write concurrently while a watcher replays a long history (several pages) and then
    follows live: it must see every pod revision exactly once, in order."""
    for i in range(1_000):
        await store.create("pods", pod(f"h{i}"))
    since = 100
    expected = list(range(since + 1, 1_001))
    history_end = 1_000

    async def writer() -> None:
        for i in range(600):
            obj = await store.create("pods", pod(f"w{i}"))
            expected.append(rv(obj))
            await asyncio.sleep(0)
            expected.append(rv(await store.update("pods", obj)))
            if i % 3 == 0:
                expected.append(rv(await store.delete("pods", "default", f"w{i}")))
            await store.create("nodes", node(f"n{i}"))  # other resource: not delivered
            await asyncio.sleep(0)
        expected.append(rv(await store.create("pods", pod("end"))))

    seen: list[int] = []
    revision_when_history_replayed = 0

    async def reader() -> None:
        nonlocal revision_when_history_replayed
        async with asyncio.timeout(30):
            async for event in store.watch("pods", since=since):
                seen.append(event.revision)
                if event.revision == history_end:
                    revision_when_history_replayed = await store.revision()
                if event.revision <= history_end:
                    await asyncio.sleep(0)  # let the writer run mid-replay
                # ...then catch up (faster than the writer) and follow live.
                if event.object["metadata"]["name"] == "end":
                    break

    await asyncio.gather(writer(), reader())
    assert revision_when_history_replayed > history_end  # writes did interleave the replay
    assert seen == expected
    assert store.watcher_count() == 0


async def test_deleted_event_carries_last_state_with_deletion_revision(
    store: SQLiteStore,
) -> None:
    obj = await store.create("pods", pod("web-1", app="web"))
    obj = await store.update("pods", {**obj, "status": {"phase": "Running"}})
    it = store.watch("pods")
    deleted = await store.delete("pods", "default", "web-1")
    (event,) = await take(it, 1)
    assert event.type == "DELETED"
    assert event.revision == 3 == rv(event.object) == rv(deleted)
    assert event.object["status"] == {"phase": "Running"}
    assert event.object["metadata"]["labels"] == {"app": "web"}
    # Replayed from history it is the same.
    replay = store.watch("pods", since=2)
    (again,) = await take(replay, 1)
    assert (again.type, again.revision, again.object) == ("DELETED", 3, event.object)
    await aclose(it)
    await aclose(replay)


async def test_watch_predicate_delivers_matching_and_leaving_objects(
    store: SQLiteStore,
) -> None:
    def is_web(o: JSONObject) -> bool:
        return bool(o["metadata"]["labels"].get("app") == "web")

    live = store.watch("pods", predicate=is_web)
    a = await store.create("pods", pod("a", app="web"))  # 1 ADDED, matches
    b = await store.create("pods", pod("b", app="db"))  # 2 never matches
    await store.update("pods", {**b, "spec": {}})  # 3 never matches
    a = await store.update("pods", {**a, "metadata": {**a["metadata"], "labels": {}}})  # 4 leaves
    await store.update("pods", {**a, "spec": {}})  # 5 no longer matching: not delivered
    await store.create("pods", pod("c", app="web"))  # 6
    await store.delete("pods", "default", "c")  # 7 DELETED of matching object
    await store.delete("pods", "default", "b")  # 8 never matched
    expected = [("ADDED", 1), ("MODIFIED", 4), ("ADDED", 6), ("DELETED", 7)]
    got = await take(live, 4)
    assert [(e.type, e.revision) for e in got] == expected
    assert got[1].object["metadata"]["labels"] == {}  # sees it no longer matches
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(live), 0.05)

    hist = store.watch("pods", since=1, predicate=is_web)  # replayed from history
    got = await take(hist, 3)
    assert [(e.type, e.revision) for e in got] == expected[1:]
    await aclose(hist)
    await aclose(live)


async def test_idle_watch_does_not_busy_loop_and_survives_timeouts(store: SQLiteStore) -> None:
    it = store.watch("pods")
    cpu = time.process_time()
    for _ in range(5):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(it), 0.1)
    assert time.process_time() - cpu < 0.2  # a spinning watcher would burn ~0.5 s
    # A timed-out __anext__ does not end the watch.
    await store.create("pods", pod("a"))
    (event,) = await take(it, 1)
    assert event.revision == 1
    await aclose(it)


async def test_aclose_unregisters(store: SQLiteStore) -> None:
    it = store.watch("pods")
    other = store.watch("nodes")
    assert store.watcher_count() == 2
    await aclose(it)
    assert store.watcher_count() == 1
    with pytest.raises(StopAsyncIteration):
        await anext(it)
    await store.create("pods", pod("a"))  # nothing is queued for the closed watch
    await aclose(other)
    assert store.watcher_count() == 0


async def test_break_unregisters(store: SQLiteStore) -> None:
    await store.create("pods", pod("a"))
    await store.create("pods", pod("b"))
    async for event in store.watch("pods", since=1):
        assert event.revision == 2
        break
    assert store.watcher_count() == 0


async def test_cancelled_consumer_unregisters(store: SQLiteStore) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        it = store.watch("pods")
        started.set()
        async for _ in it:
            pass

    task = asyncio.create_task(consume())
    await started.wait()
    await asyncio.sleep(0.01)
    assert store.watcher_count() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del task
    await asyncio.sleep(0)  # the loop drops its last reference to the finished task
    gc.collect()
    assert store.watcher_count() == 0


async def test_overflowing_watcher_ends_with_gone(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.db")  # default backlog: 10,000
    try:
        slow = s.watch("pods")
        fast = s.watch("pods")
        fast_seen: list[int] = []

        async def follow() -> None:
            async for event in fast:
                fast_seen.append(event.revision)
                if event.revision == 10_001:
                    return

        follower = asyncio.create_task(follow())
        for i in range(10_001):
            await s.create("pods", {"metadata": {"name": f"p{i}"}})
            if i % 100 == 0:
                await asyncio.sleep(0)  # the fast watcher keeps up
        await asyncio.wait_for(follower, 5)
        assert fast_seen == list(range(1, 10_002))
        with pytest.raises(GoneError):
            await anext(slow)
        assert s.watcher_count() == 1  # only the (still open) fast one
    finally:
        await s.close()


async def test_close_ends_watchers_cleanly(tmp_path: Path) -> None:
    s = open_store(tmp_path / "s.db")
    got: list[int] = []

    async def consume() -> None:
        async for event in s.watch("pods"):
            got.append(event.revision)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    await s.create("pods", pod("a"))
    await asyncio.sleep(0.01)
    await s.close()
    await asyncio.wait_for(task, 2)  # finished, no exception
    assert got == [1]
    assert s.watcher_count() == 0


# -- compaction --------------------------------------------------------------------------------


async def test_compaction_gone_below_and_ok_from_compacted_revision(store: SQLiteStore) -> None:
    for i in range(20):
        await store.create("pods", pod(f"p{i}"))
    assert await store.compact(5) == 15
    assert await store.compacted_revision() == 15
    assert await store.compact(10) == 15  # never moves backwards

    old = store.watch("pods", since=14)
    with pytest.raises(GoneError) as info:
        await anext(old)
    assert str(info.value) == "too old resource version: 14 (15)"
    assert info.value.code == 410
    assert store.watcher_count() == 0

    ok = store.watch("pods", since=15)
    assert [e.revision for e in await take(ok, 5)] == [16, 17, 18, 19, 20]
    await aclose(ok)

    # since=0 is "from now" and never gone; objects themselves are untouched.
    now = store.watch("pods")
    await store.create("pods", pod("x"))
    assert [e.revision for e in await take(now, 1)] == [21]
    await aclose(now)
    assert len((await store.list("pods")).items) == 21


async def test_compaction_during_replay_ends_with_gone(store: SQLiteStore) -> None:
    for i in range(1_000):
        await store.create("pods", pod(f"p{i}"))
    it = store.watch("pods", since=1)
    first = await take(it, 1)
    assert first[0].revision == 2
    await store.compact(10)
    with pytest.raises(GoneError):
        await take(it, 1_000)


async def test_automatic_compaction_bounds_history(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = SQLiteStore(path, history=100)
    try:
        for i in range(2_500):
            await s.create("pods", {"metadata": {"name": f"p{i}"}})
        # Compacted at writes 1000 and 2000, keeping 100 revisions each time.
        assert await s.compacted_revision() == 1_900
        with sqlite3.connect(path) as conn:
            (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
        assert count == 600 <= 100 + 1_000
        with pytest.raises(GoneError):
            await anext(s.watch("pods", since=1_899))
        ok = s.watch("pods", since=1_900)
        assert (await anext(ok)).revision == 1_901
        await aclose(ok)
    finally:
        await s.close()


# -- durability --------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from shoal.store import open_store

    async def main() -> None:
        store = open_store(sys.argv[1])
        i = 0
        while True:
            name = f"p{i}"
            await store.create("pods", {"metadata": {"name": name, "namespace": "default"},
                                        "spec": {"i": i, "pad": "x" * 500}})
            print(name, flush=True)
            i += 1

    asyncio.run(main())
    """
)


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    env = {**os.environ, "PYTHONPATH": str(Path(shoal.__file__).parent.parent)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    acked: list[str] = []
    try:
        assert child.stdout is not None
        while len(acked) < 2_000:
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"child died early: {child.stderr.read() if child.stderr else ''}")
            acked.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        # Lines printed before the kill were acknowledged too. Read them through the same
        # buffered stream (communicate() would bypass what readline() already buffered); a
        # last line without its newline was cut by the kill and is not an acknowledgement.
        rest = child.stdout.read()
        acked.extend(line for line in rest.splitlines(keepends=True) if line.endswith("\n"))
        acked = [a.strip() for a in acked]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    asyncio.run(_check_acked(path, acked))


async def _check_acked(path: Path, acked: list[str]) -> None:
    s = open_store(path)
    try:
        assert acked == [f"p{i}" for i in range(len(acked))]
        for name in acked:
            obj = await s.get("pods", "default", name)
            assert obj["spec"]["i"] == int(name[1:])
        assert await s.revision() >= len(acked)
        after = await s.create("pods", {"metadata": {"name": "after", "namespace": "default"}})
        assert rv(after) > len(acked)
    finally:
        await s.close()
