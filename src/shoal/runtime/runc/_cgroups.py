"""cgroup v1 and v2 as the runc driver sees them: where a container's cgroup lives, its usage,
its OOM kills, and removing what runc leaves behind.

runc (``fs`` driver, absolute ``linux.cgroupsPath``) creates the container's cgroup in every
mounted hierarchy -- on a v1 "hybrid" host that includes ``name=systemd`` and the cgroup2
``unified`` mount -- and on delete removes only the leaf. The parents (``<parent>/<pod uid>``
and ``<parent>`` itself) are ours to remove, in every hierarchy, which is why the layout keeps
the list of all of them rather than one path per controller.

Reading files directly is far cheaper than ``runc events --stats`` (one fork + Go runtime
start per call), which matters when the agent polls every container.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _unescape(field_: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    if "\\" not in field_:
        return field_
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and i + 4 <= len(field_) and field_[i + 1 : i + 4].isdigit():
            out.append(chr(int(field_[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class MountInfo:
    mount_point: str
    root: str
    fstype: str
    super_options: str


def parse_mountinfo(text: str) -> list[MountInfo]:
    """The fields of /proc/self/mountinfo the driver needs (mount point, root, fs type)."""
    result: list[MountInfo] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 3:
            continue
        result.append(MountInfo(_unescape(lf[4]), _unescape(lf[3]), rf[0], rf[2]))
    return result


@dataclass(frozen=True)
class CgroupLayout:
    """The mounted cgroup hierarchies of this host.

    ``version`` 2 when ``/sys/fs/cgroup`` itself is cgroup2 (``cgroup.controllers`` exists):
    everything lives in one tree. Otherwise 1, with one mount per controller group, plus maybe
    ``name=systemd`` and a cgroup2 ``unified`` mount that runc also populates.
    """

    version: int
    controllers: dict[str, Path] = field(default_factory=dict)
    """v1: controller name (``memory``, ``cpuacct``, ``pids``...) -> its mount point."""
    hierarchies: tuple[Path, ...] = ()
    """Every mount point runc creates cgroups in (v2: just the one)."""

    @classmethod
    def detect(cls, root: Path = CGROUP_ROOT, mountinfo: str | None = None) -> CgroupLayout:
        if (root / "cgroup.controllers").exists():
            return cls(version=2, hierarchies=(root,))
        if mountinfo is None:
            try:
                mountinfo = Path("/proc/self/mountinfo").read_text()
            except OSError:
                mountinfo = ""
        controllers: dict[str, Path] = {}
        hierarchies: list[Path] = []
        for m in parse_mountinfo(mountinfo):
            if m.fstype not in ("cgroup", "cgroup2") or m.root != "/":
                continue
            point = Path(m.mount_point)
            if point in hierarchies:
                continue
            hierarchies.append(point)
            if m.fstype == "cgroup":
                for opt in m.super_options.split(","):
                    if opt not in ("rw", "ro") and "=" not in opt and not opt.startswith("xattr"):
                        controllers.setdefault(opt, point)
        return cls(version=1, controllers=controllers, hierarchies=tuple(hierarchies))

    def dir_for(self, controller: str, cgroup_path: str) -> Path | None:
        """Directory of ``cgroup_path`` for ``controller`` (v2 ignores the controller)."""
        base = self.hierarchies[0] if self.version == 2 else self.controllers.get(controller)
        if base is None:
            return None
        return base / cgroup_path.lstrip("/")

    def dirs(self, cgroup_path: str) -> list[Path]:
        """``cgroup_path`` in every hierarchy (present or not)."""
        return [h / cgroup_path.lstrip("/") for h in self.hierarchies]


def _read(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    value = text.strip()
    if value == "max":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _keyed(text: str | None, key: str) -> int | None:
    """The value of ``key`` in a ``key value`` per line file (memory.stat, cpu.stat...)."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            with contextlib.suppress(ValueError):
                return int(value)
    return None


@dataclass(frozen=True)
class Usage:
    cpu_usage_nanos: int
    memory_bytes: int
    """Working set: usage minus inactive file cache."""
    memory_limit_bytes: int | None
    pids: int


_V1_UNLIMITED = 1 << 62
"""v1 reports "no limit" as a page-rounded LONG_MAX; anything this large is no limit."""


def read_usage(layout: CgroupLayout, cgroup_path: str) -> Usage | None:
    """Current usage, or None when the cgroup does not exist (container gone)."""
    if layout.version == 2:
        d = layout.dir_for("", cgroup_path)
        assert d is not None
        cpu = _keyed(_read(d / "cpu.stat"), "usage_usec")
        current = _int(_read(d / "memory.current"))
        if cpu is None and current is None:
            return None
        inactive = _keyed(_read(d / "memory.stat"), "inactive_file") or 0
        return Usage(
            cpu_usage_nanos=(cpu or 0) * 1000,
            memory_bytes=max(0, (current or 0) - inactive),
            memory_limit_bytes=_int(_read(d / "memory.max")),
            pids=_int(_read(d / "pids.current")) or 0,
        )
    cpu_dir = layout.dir_for("cpuacct", cgroup_path)
    mem_dir = layout.dir_for("memory", cgroup_path)
    pids_dir = layout.dir_for("pids", cgroup_path)
    cpu = _int(_read(cpu_dir / "cpuacct.usage" if cpu_dir else None))
    usage = _int(_read(mem_dir / "memory.usage_in_bytes" if mem_dir else None))
    if cpu is None and usage is None:
        return None
    stat = _read(mem_dir / "memory.stat" if mem_dir else None)
    inactive = _keyed(stat, "total_inactive_file") or 0
    limit = _int(_read(mem_dir / "memory.limit_in_bytes" if mem_dir else None))
    return Usage(
        cpu_usage_nanos=cpu or 0,
        memory_bytes=max(0, (usage or 0) - inactive),
        memory_limit_bytes=limit if limit is not None and limit < _V1_UNLIMITED else None,
        pids=_int(_read(pids_dir / "pids.current" if pids_dir else None)) or 0,
    )


def oom_kills(layout: CgroupLayout, cgroup_path: str) -> int:
    """How many processes the kernel OOM-killed in this cgroup (0 when unknown).

    v1: ``oom_kill N`` in memory.oom_control (kernel >= 4.13); v2: memory.events. Must be
    read before ``runc delete`` removes the cgroup.
    """
    d = layout.dir_for("memory", cgroup_path)
    if d is None:
        return 0
    name = "memory.events" if layout.version == 2 else "memory.oom_control"
    return _keyed(_read(d / name), "oom_kill") or 0


def _procs(d: Path) -> list[int]:
    text = _read(d / "cgroup.procs") or ""
    return [int(p) for p in text.split() if p.isdigit()]


def remove_cgroup(d: Path, *, kill: bool, timeout: float = 2.0) -> bool:
    """rmdir ``d`` and its sub-cgroups bottom-up; with ``kill``, SIGKILL their processes first.

    Returns True when ``d`` is gone. A cgroup with live processes cannot be removed (EBUSY),
    so after the kill the rmdir is retried until ``timeout``: dying processes take a moment.
    """
    if not d.is_dir():
        return True
    children = [p for p in d.iterdir() if p.is_dir()]
    ok = all(remove_cgroup(c, kill=kill, timeout=timeout) for c in children)
    if not ok:
        return False
    deadline = time.monotonic() + timeout
    while True:
        if kill:
            for pid in _procs(d):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        try:
            os.rmdir(d)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if not kill or time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def prune_parents(layout: CgroupLayout, cgroup_path: str, stop_at: str) -> None:
    """rmdir the empty parents of ``cgroup_path`` up to and including ``stop_at``, in every
    hierarchy (runc's delete removes only the leaf). Non-empty ones are left alone."""
    parts = cgroup_path.strip("/").split("/")
    stop = stop_at.strip("/").split("/")
    for hierarchy in layout.hierarchies:
        for n in range(len(parts), len(stop) - 1, -1):
            d = hierarchy / "/".join(parts[:n])
            try:
                os.rmdir(d)
            except FileNotFoundError:
                continue
            except OSError:
                break


def children(layout: CgroupLayout, parent: str, depth: int) -> set[str]:
    """Absolute cgroup paths exactly ``depth`` levels below ``parent``, in any hierarchy."""
    found: set[str] = set()
    for hierarchy in layout.hierarchies:
        base = hierarchy / parent.lstrip("/")
        level = [base]
        for _ in range(depth):
            nxt: list[Path] = []
            for d in level:
                with contextlib.suppress(OSError):
                    nxt.extend(p for p in d.iterdir() if p.is_dir())
            level = nxt
        for d in level:
            found.add("/" + str(d.relative_to(hierarchy)))
    return found
