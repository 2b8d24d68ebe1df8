"""What the process driver records for one container, and its on-disk state file form.

Kept apart from ``process.py`` so the driver reads as a state machine; the state file is
what lets a restarted agent re-adopt a running process (pid + /proc start time) and exec
into it with the environment it was started with.
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass, field
from typing import Any

from shoal.runtime._record import ContainerRecord, opt_int

STATE_VERSION = 1


@dataclass(kw_only=True)
class ProcContainer(ContainerRecord):
    """Everything the driver tracks for one container (its latest attempt)."""

    popen: subprocess.Popen[bytes] | None = None
    """Set only for processes this instance spawned (and so may reap); None when adopted."""
    poll_task: asyncio.Task[None] | None = None
    stragglers: list[tuple[int, int]] = field(default_factory=list)
    """(pid, start_ticks) of group members seen while stopping an adopted process."""
    env: dict[str, str] | None = None
    """The environment the process was started with (for exec); None in old state files."""
    cwd: str = ""
    """Its working directory on the host (after mapping a volume's mountPath)."""
    user: int | None = None
    """uid/gid it runs as when not the agent's own (securityContext.runAsUser/Group)."""
    group: int | None = None
    memory_limit_bytes: int | None = None
    execs: list[tuple[int, int]] = field(default_factory=list)
    """(pid, start_ticks) of processes exec'd into this container, killed with it."""

    def to_state(self) -> dict[str, Any]:
        return {
            **super().to_state(),
            "version": STATE_VERSION,
            "pgid": self.pid,
            "env": self.env,
            "cwd": self.cwd,
            "user": self.user,
            "group": self.group,
            "memory_limit_bytes": self.memory_limit_bytes,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> ProcContainer:
        """Rebuild from a state file; raises KeyError/TypeError/ValueError when malformed."""
        return cls(
            **cls.fields_from_state(data, default_state="running"),
            env=_opt_env(data.get("env")),
            cwd=str(data.get("cwd") or ""),
            user=opt_int(data.get("user")),
            group=opt_int(data.get("group")),
            memory_limit_bytes=opt_int(data.get("memory_limit_bytes")),
        )


def _opt_env(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {str(k): str(v) for k, v in value.items()}
