"""Log-serving helpers: tail offsets, copytruncate-aware reads, follow termination."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoal.agent._http import LogRef, read_new, read_tail, stream_log, tail_offset


def test_tail_offset() -> None:
    data = b"a\nb\nc\n"
    assert data[tail_offset(data, 2) :] == b"b\nc\n"
    assert data[tail_offset(data, 10) :] == data
    assert data[tail_offset(data, 0) :] == b""
    partial = b"a\nb\nunterminated"
    assert partial[tail_offset(partial, 1) :] == b"unterminated"
    assert partial[tail_offset(partial, 2) :] == b"b\nunterminated"


def test_read_new_follows_appends(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_bytes(b"one\n")
    data, off = read_new(log, 0)
    assert (data, off) == (b"one\n", 4)
    assert read_new(log, off) == (b"", 4)
    with log.open("ab") as fh:
        fh.write(b"two\n")
    assert read_new(log, off) == (b"two\n", 8)
    assert read_new(tmp_path / "missing.log", 3) == (b"", 3)


def test_read_new_survives_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_bytes(b"old-1\nold-2\n")
    _, off = read_new(log, 0, limit=6)  # read "old-1\n" only
    assert off == 6
    # Rotation: copy to .1, truncate, then the process writes on.
    (tmp_path / "0.log.1").write_bytes(log.read_bytes())
    log.write_bytes(b"")
    with log.open("ab") as fh:
        fh.write(b"n\n")
    rest, off = read_new(log, off)
    assert rest == b"old-2\n" and off == 0, "the unread tail comes from the rotated copy"
    assert read_new(log, off) == (b"n\n", 2)


async def test_stream_follows_until_the_attempt_ends(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_bytes(b"a\n")
    state: dict[str, Any] = {"live": True, "polls": 0}

    def live() -> bool:
        state["polls"] += 1
        if state["polls"] == 3:
            with log.open("ab") as fh:
                fh.write(b"b\n")
        if state["polls"] == 5:
            with log.open("ab") as fh:
                fh.write(b"last\n")  # written before the exit is observed
            state["live"] = False
        return bool(state["live"])

    chunks = [
        c async for c in stream_log(LogRef(log, live), follow=True, tail_lines=None, poll=0.01)
    ]
    assert b"".join(chunks) == b"a\nb\nlast\n"


async def test_stream_without_follow_returns_what_is_there(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_bytes(b"1\n2\n3\n")
    out = [c async for c in stream_log(LogRef(log, lambda: True), follow=False, tail_lines=2)]
    assert b"".join(out) == b"2\n3\n"


def test_tail_reaches_into_the_rotated_copy_when_the_log_was_just_truncated(
    tmp_path: Path,
) -> None:
    log = tmp_path / "0.log"
    (tmp_path / "0.log.1").write_bytes(b"r1\nr2\nr3\n")
    log.write_bytes(b"n1\n")
    assert read_tail(log, 1) == (b"n1\n", 3)
    assert read_tail(log, 3) == (b"r2\nr3\nn1\n", 3)
    log.write_bytes(b"")
    assert read_tail(log, 1) == (b"r3\n", 0)
    assert read_tail(tmp_path / "missing.log", 2) == (b"", 0)


async def test_tail_is_one_snapshot_even_if_the_log_rotates_meanwhile(tmp_path: Path) -> None:
    """A non-follow tail is read once: a copytruncate after it cannot add the rotated copy's
    lines or a mid-line start (the race a chatty container hit in CI)."""
    log = tmp_path / "0.log"
    log.write_bytes(b"".join(b"%08d\n" % i for i in range(50)))
    stream = stream_log(LogRef(log, lambda: True), follow=False, tail_lines=1)
    first = await anext(stream)
    (tmp_path / "0.log.1").write_bytes(log.read_bytes())
    log.write_bytes(b"".join(b"new-%04d\n" % i for i in range(60)))  # past the old offset
    rest = [c async for c in stream]
    assert first == b"00000049\n" and rest == []
