"""What the process driver records for one container, and its on-disk state file form.

Kept apart from ``process.py`` so the driver reads as a state machine; the state file is
what lets a restarted agent re-adopt a running process (pid + /proc start time) and exec
into it with the environment it was started with.
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.runtime._protocol import ContainerState, ContainerStatus

STATE_VERSION = 1


@dataclass
class ProcContainer:
    """Everything the driver tracks for one container (its latest attempt)."""

    container_id: str
    pod_uid: str
    name: str
    pod_name: str
    namespace: str
    attempt: int
    log_path: Path
    pid: int | None
    start_ticks: int | None
    started_at: float | None
    host_ports: dict[int, int]
    state: ContainerState
    exit_code: int | None = None
    finished_at: float | None = None
    reason: str = ""
    popen: subprocess.Popen[bytes] | None = None
    """Set only for processes this instance spawned (and so may reap); None when adopted."""
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    pidfd: int | None = None
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

    def status(self) -> ContainerStatus:
        return ContainerStatus(
            container_id=self.container_id,
            pod_uid=self.pod_uid,
            name=self.name,
            attempt=self.attempt,
            state=self.state,
            pid=self.pid,
            started_at=self.started_at,
            finished_at=self.finished_at,
            exit_code=self.exit_code,
            reason=self.reason,
            host_ports=dict(self.host_ports),
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "container_id": self.container_id,
            "pod_uid": self.pod_uid,
            "name": self.name,
            "pod_name": self.pod_name,
            "namespace": self.namespace,
            "attempt": self.attempt,
            "pid": self.pid,
            "pgid": self.pid,
            "start_ticks": self.start_ticks,
            "started_at": self.started_at,
            "host_ports": {str(k): v for k, v in self.host_ports.items()},
            "log_path": str(self.log_path),
            "state": self.state,
            "exit_code": self.exit_code,
            "finished_at": self.finished_at,
            "reason": self.reason,
            "env": self.env,
            "cwd": self.cwd,
            "user": self.user,
            "group": self.group,
            "memory_limit_bytes": self.memory_limit_bytes,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> ProcContainer:
        """Rebuild from a state file; raises KeyError/TypeError/ValueError when malformed."""
        state = str(data.get("state", "running"))
        if state not in ("created", "running", "exited", "unknown"):
            raise ValueError(f"bad state {state!r}")
        pid = data.get("pid")
        ticks = data.get("start_ticks")
        exit_code = data.get("exit_code")
        return cls(
            container_id=str(data["container_id"]),
            pod_uid=str(data["pod_uid"]),
            name=str(data["name"]),
            pod_name=str(data.get("pod_name", "")),
            namespace=str(data.get("namespace", "")),
            attempt=int(data["attempt"]),
            log_path=Path(str(data["log_path"])),
            pid=int(pid) if pid is not None else None,
            start_ticks=int(ticks) if ticks is not None else None,
            started_at=_opt_float(data.get("started_at")),
            host_ports={int(k): int(v) for k, v in (data.get("host_ports") or {}).items()},
            state=state,  # type: ignore[arg-type]  # checked against the Literal above
            exit_code=int(exit_code) if exit_code is not None else None,
            finished_at=_opt_float(data.get("finished_at")),
            reason=str(data.get("reason", "")),
            env=_opt_env(data.get("env")),
            cwd=str(data.get("cwd") or ""),
            user=_opt_int(data.get("user")),
            group=_opt_int(data.get("group")),
            memory_limit_bytes=_opt_int(data.get("memory_limit_bytes")),
        )


def _opt_float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _opt_int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _opt_env(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {str(k): str(v) for k, v in value.items()}
