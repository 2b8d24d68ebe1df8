"""What the runc driver remembers about one container, in memory and in ``meta.json``.

The metadata file sits in the container's bundle directory next to ``config.json``; a
restarted agent reads it back (``recover``) and matches it against ``runc list``. Anything in
runc's state, on a mount or in a cgroup without a metadata file is an orphan and is swept.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.runtime._protocol import ContainerState, ContainerStatus

STATE_VERSION = 1
META_FILE = "meta.json"


def runc_id_for(container_id: str) -> str:
    """A short, stable runc id (and bundle directory name) for a container id.

    Pod UIDs plus container names run past 100 characters; overlay mount options and unix
    socket paths under the bundle have tight length limits, so paths stay short.
    """
    return hashlib.sha256(container_id.encode()).hexdigest()[:16]


@dataclass
class Container:
    """One container (its latest attempt)."""

    container_id: str
    pod_uid: str
    name: str
    pod_name: str
    namespace: str
    attempt: int
    runc_id: str
    log_path: Path
    cgroup_path: str
    image: str
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
        return {
            "version": STATE_VERSION,
            "container_id": self.container_id,
            "pod_uid": self.pod_uid,
            "name": self.name,
            "pod_name": self.pod_name,
            "namespace": self.namespace,
            "attempt": self.attempt,
            "runc_id": self.runc_id,
            "log_path": str(self.log_path),
            "cgroup_path": self.cgroup_path,
            "image": self.image,
            "host_ports": {str(k): v for k, v in self.host_ports.items()},
            "state": self.state,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "exit_code": self.exit_code,
            "reason": self.reason,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Container:
        """Rebuild from ``meta.json``; raises KeyError/TypeError/ValueError when malformed."""
        state = str(data["state"])
        if state not in ("created", "running", "exited", "unknown"):
            raise ValueError(f"bad state {state!r}")
        return cls(
            container_id=str(data["container_id"]),
            pod_uid=str(data["pod_uid"]),
            name=str(data["name"]),
            pod_name=str(data.get("pod_name", "")),
            namespace=str(data.get("namespace", "")),
            attempt=int(data["attempt"]),
            runc_id=str(data["runc_id"]),
            log_path=Path(str(data["log_path"])),
            cgroup_path=str(data["cgroup_path"]),
            image=str(data.get("image", "")),
            host_ports={int(k): int(v) for k, v in dict(data.get("host_ports", {})).items()},
            state=state,  # type: ignore[arg-type]  # checked against the Literal above
            pid=_opt_int(data.get("pid")),
            start_ticks=_opt_int(data.get("start_ticks")),
            started_at=_opt_float(data.get("started_at")),
            finished_at=_opt_float(data.get("finished_at")),
            exit_code=_opt_int(data.get("exit_code")),
            reason=str(data.get("reason", "")),
        )


def _opt_int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _opt_float(value: Any) -> float | None:
    return float(value) if value is not None else None
