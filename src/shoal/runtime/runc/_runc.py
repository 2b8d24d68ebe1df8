"""A thin async wrapper over the ``runc`` command line (runc 1.1).

Every call runs ``runc --root STATE ...`` so an agent only ever sees its own containers.
Failures become DriverError carrying runc's own message (from stderr, or from the JSON
``--log`` file for ``create``, whose stderr is the container's log).
"""

from __future__ import annotations

import asyncio
import builtins
import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from shoal.errors import DriverError

_PR_SET_CHILD_SUBREAPER = 36
_subreaper = False


def become_subreaper() -> None:
    """Make this process the child subreaper of everything it spawns (once per process).

    ``runc create`` exits as soon as the container is set up; without this the container's
    init would be reparented to PID 1 and its exit status lost. As subreaper the agent is its
    parent, so a waitpid gives the real exit code.
    """
    global _subreaper
    if _subreaper:
        return
    from shoal.runtime.runc._rootfs import libc

    if libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise DriverError(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    _subreaper = True


def _last_error(log_file: Path) -> str:
    """The last error message runc wrote to its JSON log (``{"level":"error","msg":...}``)."""
    try:
        lines = log_file.read_text().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            return str(entry.get("msg", ""))
    return ""


class Runc:
    """``runc`` bound to one state directory."""

    def __init__(self, binary: str, state_dir: Path) -> None:
        self.binary = binary
        self.state_dir = state_dir

    def _argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.state_dir), *args]

    async def _run(self, *args: str) -> str:
        """Run to completion; stdout on success, DriverError with stderr on failure."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(*args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise DriverError(f"cannot run {self.binary}: {exc}") from exc
        out, err = await proc.communicate()
        if proc.returncode != 0:
            message = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
            raise DriverError(f"runc {args[0]}: {message}")
        return out.decode(errors="replace")

    async def run_detached(self, runc_id: str, bundle: Path, pid_file: Path, log_fd: int) -> None:
        """``runc run --detach``: create and start in one runc process (``create`` then
        ``start`` costs a second Go process start, ~7 ms of CPU per container). The init's pid
        is in ``pid_file`` when this returns; as the agent is the child subreaper, an init
        that already exited stays a zombie until we reap it, so no exit is missed. Its stdout
        and stderr are ``log_fd`` (a file: runc hands its own stdio to the init, never give
        it a pipe)."""
        log_file = bundle / "runc.log"
        log_file.unlink(missing_ok=True)
        argv = [
            self.binary,
            "--root",
            str(self.state_dir),
            "--log",
            str(log_file),
            "--log-format",
            "json",
            "run",
            "--detach",
            "--bundle",
            str(bundle),
            "--pid-file",
            str(pid_file),
            runc_id,
        ]
        try:
            # Spawned and waited for in a worker thread: the spawn blocks its caller until
            # runc has exec'd (vfork), several ms when the CPUs are busy starting many
            # containers; on the event loop that would stall every other pod and probe.
            # The thread owns a duplicate of the log fd, so a cancelled caller closing its
            # own cannot pull it from under the spawn.
            fd = os.dup(log_fd)

            def spawn() -> int:
                try:
                    return subprocess.run(
                        argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, check=False
                    ).returncode
                finally:
                    os.close(fd)

            rc = await asyncio.to_thread(spawn)
        except OSError as exc:
            raise DriverError(f"cannot run {self.binary}: {exc}") from exc
        if rc != 0:
            message = _last_error(log_file) or f"exit status {rc}"
            raise DriverError(message)

    async def kill(self, runc_id: str, sig: str) -> None:
        await self._run("kill", runc_id, sig)

    async def delete(self, runc_id: str, *, force: bool = True) -> None:
        """``runc delete [--force]``; a container runc does not know is not an error."""
        try:
            await self._run("delete", *(["--force"] if force else []), runc_id)
        except DriverError as exc:
            if "does not exist" in str(exc) or "not found" in str(exc):
                return
            raise

    async def list(self) -> list[dict[str, Any]]:
        """``runc list --format json`` (runc prints ``null`` when there are none)."""
        if not self.state_dir.is_dir():
            return []
        data = json.loads(await self._run("list", "--format", "json") or "null")
        return [d for d in data or [] if isinstance(d, dict)]

    async def exec(self, runc_id: str, command: builtins.list[str]) -> asyncio.subprocess.Process:
        """``runc exec`` with pipes (no tty). runc takes the env, cwd, user, capabilities and
        noNewPrivileges of the container's config.json, so the command runs exactly as the
        container's own process does; nothing needs repeating on the command line."""
        try:
            return await asyncio.create_subprocess_exec(
                *self._argv("exec", runc_id, *command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise DriverError(f"cannot run {self.binary}: {exc}") from exc


def runc_version(binary: str = "runc") -> str:
    """``1.1.5+ds1`` from ``runc --version``; "" when it cannot be run."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    first = out.splitlines()[0] if out else ""
    return first.split()[-1] if first.startswith("runc version") else ""


def runc_unavailable_reason(runc: str = "runc") -> str | None:
    """Why the runc driver cannot work on this machine, or None when it can.

    Needs Linux, root (cgroups, mounts and namespaces), the ``runc`` binary, and overlayfs
    (for image roots).
    """
    if not sys.platform.startswith("linux"):
        return f"the runc driver needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the runc driver needs root (cgroups, mounts, namespaces)"
    if shutil.which(runc) is None:
        return f"{runc!r} not found on PATH (install runc)"
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if not any(line.split()[-1:] == ["overlay"] for line in filesystems.splitlines()):
        return "overlayfs is not available (modprobe overlay)"
    return None
