"""Log-serving helpers: tail offsets, copytruncate-aware reads, follow termination."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoal.agent._http import LogRef, read_new, stream_log, tail_offset


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
