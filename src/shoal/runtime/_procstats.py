"""Resource usage of a process group from /proc, for the process driver's ``stats``.

A process container has no cgroup of its own, so its usage is the sum over the members of
its process group (its session leader's group): CPU as utime + stime, plus cutime + cstime
so that children which already exited and were waited for still count (as cgroup
accounting would count them), and memory as the resident set size. Processes that left the
group (a daemon that called ``setsid``) are not counted; that is the documented limit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class GroupUsage:
    cpu_nanos: int
    """Cumulative CPU time of the members (and their reaped children), in nanoseconds."""
    rss_bytes: int
    pids: int
    """Members still alive (zombies excluded)."""


def _fields(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    _, _, rest = text.rpartition(")")
    fields = rest.split()
    return fields if len(fields) >= 22 else None


def group_usage(pgid: int) -> GroupUsage:
    """Usage of every process in group ``pgid`` right now (zeros if none is left)."""
    ticks = rss_pages = pids = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        entries = []
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _fields(entry)
        if fields is None:
            continue
        try:
            if int(fields[2]) != pgid:
                continue
            # stat fields 14-17 (utime, stime, cutime, cstime) and 24 (rss), 0-based from 3.
            ticks += sum(int(f) for f in fields[11:15])
            if fields[0] not in ("Z", "X", "x"):
                pids += 1
                rss_pages += int(fields[21])
        except ValueError:
            continue
    return GroupUsage(
        cpu_nanos=ticks * 1_000_000_000 // _TICKS, rss_bytes=rss_pages * _PAGE, pids=pids
    )


def proc_environ(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with (for exec into a container adopted from a
    state file that predates saving it); empty when unreadable."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env


def proc_cwd(pid: int) -> str:
    """The current directory of ``pid``, "" when unreadable."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""
