"""Host-process helpers for the drivers: /proc reading, exec lookup, ports, state files.

Kept apart from ``process.py`` so the driver reads as a state machine and these small,
Linux-specific pieces can be tested and reasoned about one at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shoal.errors import DriverError
from shoal.runtime._protocol import PortRequest

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH given to containers when the agent itself has none (as in a bare systemd unit)."""


# --- /proc -----------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat, or None when the process does not exist.

    The command name (field 2) may hold spaces and parentheses, so split after the LAST ``)``.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    _, _, rest = text.rpartition(")")
    fields = rest.split()
    return fields if len(fields) >= 20 else None


def proc_start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot (stat field 22), or None if gone.

    Together with the pid it names one process for the life of the machine, which is how
    we tell "our" process from an unrelated one that later got the same pid.
    """
    fields = _stat_fields(pid)
    if fields is None:
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def proc_state(pid: int) -> str | None:
    """One-letter process state (R, S, D, Z, ...) or None when there is no such pid."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def is_same_process(pid: int, start_ticks: int | None) -> bool:
    """True if ``pid`` still names the process that started at ``start_ticks`` (zombie or not).

    Used before every signal sent to a process this driver did not spawn itself: a pid alone
    may have been reused by something we must never touch.
    """
    return start_ticks is not None and proc_start_ticks(pid) == start_ticks


def is_running(pid: int, start_ticks: int | None) -> bool:
    """Same process and not yet exited (a zombie has exited; it only waits to be reaped)."""
    if not is_same_process(pid, start_ticks):
        return False
    return proc_state(pid) not in (None, "Z", "X", "x")


def group_members(pgid: int) -> list[tuple[int, int]]:
    """(pid, start_ticks) of every live process in process group ``pgid``.

    Taken as a snapshot while the group leader is known alive (so the group is ours), it lets
    the driver finish off stragglers after the leader is gone, each re-checked by start time.
    """
    members: list[tuple[int, int]] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None or fields[0] in ("Z", "X", "x"):
            continue
        try:
            if int(fields[2]) == pgid:
                members.append((int(entry), int(fields[19])))
        except ValueError:
            continue
    return members


def exit_code_from_waitid(result: os.waitid_result) -> int:
    """Shell-style exit code: the process's own code, or 128+N when signal N killed it."""
    if result.si_code == os.CLD_EXITED:
        return result.si_status
    return 128 + result.si_status


def exit_code_from_returncode(returncode: int) -> int:
    """Convert subprocess's convention (-N for signal N) to the shell's (128+N)."""
    return 128 - returncode if returncode < 0 else returncode


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """killpg that treats "already gone" as success; other failures become DriverError."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise DriverError(f"cannot send {sig.name} to process group {pgid}: {exc}") from exc


def kill_if_same(pid: int, start_ticks: int, sig: signal.Signals) -> None:
    """Signal one process only if it is still the one we recorded."""
    if is_same_process(pid, start_ticks):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# --- exec lookup -----------------------------------------------------------------------------


def resolve_executable(program: str, path_var: str, cwd: str) -> str:
    """Find ``program`` the way execvp would, raising a Go/Docker-style DriverError message.

    Done before fork so a typo becomes a clear, immediate error instead of a child that dies
    with a cryptic exit code.
    """
    if not program:
        raise DriverError('exec: "": executable file not found in $PATH')
    if "/" in program:
        candidate = program if os.path.isabs(program) else os.path.join(cwd, program)
        if not os.path.exists(candidate):
            raise DriverError(f'exec: "{program}": no such file or directory')
        if os.path.isdir(candidate):
            raise DriverError(f'exec: "{program}": is a directory')
        if not os.access(candidate, os.X_OK):
            raise DriverError(f'exec: "{program}": permission denied')
        return candidate
    found = shutil.which(program, path=path_var)
    if found is None:
        raise DriverError(f'exec: "{program}": executable file not found in $PATH')
    if not os.path.isabs(found):
        found = os.path.join(cwd, found)
    return found


# --- environment -----------------------------------------------------------------------------


def port_env_name(port_name: str) -> str:
    """``SHOAL_PORT_<NAME>`` with the name upper-cased and ``-`` turned into ``_``."""
    return "SHOAL_PORT_" + port_name.upper().replace("-", "_")


def base_host_env(host_env: Mapping[str, str]) -> dict[str, str]:
    """The few host variables a process needs to behave sanely; nothing else leaks in."""
    env = {"PATH": host_env.get("PATH") or DEFAULT_PATH}
    for key in ("HOME", "LANG", "LC_ALL"):
        value = host_env.get(key)
        if value:
            env[key] = value
    return env


# --- ports -----------------------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    """Whether a server could bind ``port`` on every interface right now.

    SO_REUSEADDR mirrors what servers set, so a port held only by TIME_WAIT connections of
    the previous attempt still counts as free (and a restarted server keeps its endpoint).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def allocate_port(avoid: Iterable[int], attempts: int = 50) -> int:
    """A TCP port free on all interfaces that is not in ``avoid``.

    The kernel picks it (bind to port 0); the socket is closed at once, so the container can
    bind it. ``avoid`` holds ports handed to other containers that may not have bound yet.
    """
    avoid_set = set(avoid)
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("0.0.0.0", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid_set:
            return port
    raise DriverError("could not allocate a free host port")


# --- state files -----------------------------------------------------------------------------


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write via a temp file and os.replace, so a crash leaves the old or the new file whole.

    No fsync: the state only has to survive an agent crash, not a power cut (after which no
    process it describes is alive anyway).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """The object in ``path``, or None if it is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- host facts ------------------------------------------------------------------------------


def host_memory_bytes() -> int:
    """Physical memory: sysconf when available, else MemTotal from /proc/meminfo, else 0."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and page_size > 0:
            return int(pages * page_size)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


# --- shared by the drivers -------------------------------------------------------------------

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_safe(what: str, value: str) -> None:
    """Ids and names become file and cgroup names: refuse anything that could escape."""
    if not _SAFE_NAME.match(value) or ".." in value:
        raise DriverError(f"invalid {what} {value!r}: must be [A-Za-z0-9._-] (no '..')")


def assign_host_ports(
    ports: Iterable[PortRequest],
    previous: Mapping[int, int],
    held: set[int],
    remembered: set[int],
) -> dict[int, int]:
    """Pick a host port per declared containerPort, reusing ``previous`` where still free.

    Stable endpoints across restarts: a container gets its last attempt's port back when no
    running container (``held``) has it and it can still be bound. Ports ``remembered`` for
    other, exited containers are avoided for new picks, so their restarts get theirs back.
    """
    result: dict[int, int] = {}
    for req in ports:
        if req.container_port in result:
            continue
        want = previous.get(req.container_port)
        if want and want not in held and want not in result.values() and port_is_free(want):
            result[req.container_port] = want
        else:
            result[req.container_port] = allocate_port(held | remembered | set(result.values()))
    return result


def copytruncate(path: Path) -> None:
    """Copy ``path`` to ``path.1`` (atomically replacing it), then empty ``path``.

    Works without telling the writer because it writes with O_APPEND: after the truncate its
    next write lands at the new end (offset 0). Lines written between the copy and the
    truncate are lost; that is the accepted price.
    """
    rotated = path.with_name(path.name + ".1")
    tmp = path.with_name(path.name + ".1.tmp")
    shutil.copyfile(path, tmp)
    os.replace(tmp, rotated)
    os.truncate(path, 0)
