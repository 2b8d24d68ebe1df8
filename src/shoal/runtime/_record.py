"""What both host-side drivers record for one container, and the common part of its state file.

``ProcContainer`` (process driver) and ``runc._state.Container`` extend ``ContainerRecord``
with their own fields; each state file holds the keys written here plus the driver's own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.runtime._protocol import ContainerState, ContainerStatus

_STATES = ("created", "running", "exited", "unknown")


@dataclass(kw_only=True)
class ContainerRecord:
    """One container (its latest attempt): identity, ports, process and exit."""

    container_id: str
    pod_uid: str
    name: str
    pod_name: str
    namespace: str
    attempt: int
    log_path: Path
    host_ports: dict[int, int]
    state: ContainerState
    pid: int | None = None
    start_ticks: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str = ""
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    pidfd: int | None = None

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
        """The keys every driver's state file holds; a driver's record adds its own."""
        return {
            "container_id": self.container_id,
            "pod_uid": self.pod_uid,
            "name": self.name,
            "pod_name": self.pod_name,
            "namespace": self.namespace,
            "attempt": self.attempt,
            "log_path": str(self.log_path),
            "host_ports": {str(k): v for k, v in self.host_ports.items()},
            "state": self.state,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "exit_code": self.exit_code,
            "reason": self.reason,
        }

    @staticmethod
    def fields_from_state(data: dict[str, Any], default_state: str | None) -> dict[str, Any]:
        """The constructor arguments of the common keys (see ``to_state``).

        ``default_state`` is assumed when the file has no ``state`` (None: it must have one).
        Raises KeyError/TypeError/ValueError when malformed.
        """
        state = str(data["state"] if default_state is None else data.get("state", default_state))
        if state not in _STATES:
            raise ValueError(f"bad state {state!r}")
        return {
            "container_id": str(data["container_id"]),
            "pod_uid": str(data["pod_uid"]),
            "name": str(data["name"]),
            "pod_name": str(data.get("pod_name", "")),
            "namespace": str(data.get("namespace", "")),
            "attempt": int(data["attempt"]),
            "log_path": Path(str(data["log_path"])),
            "host_ports": {int(k): int(v) for k, v in dict(data.get("host_ports") or {}).items()},
            "state": state,
            "pid": opt_int(data.get("pid")),
            "start_ticks": opt_int(data.get("start_ticks")),
            "started_at": opt_float(data.get("started_at")),
            "finished_at": opt_float(data.get("finished_at")),
            "exit_code": opt_int(data.get("exit_code")),
            "reason": str(data.get("reason", "")),
        }


def opt_int(value: Any) -> int | None:
    return int(value) if value is not None else None


def opt_float(value: Any) -> float | None:
    return float(value) if value is not None else None
