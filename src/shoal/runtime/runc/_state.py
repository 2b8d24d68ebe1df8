"""What the runc driver remembers about one container, in memory and in ``meta.json``.

The metadata file sits in the container's bundle directory next to ``config.json``; a
restarted agent reads it back (``recover``) and matches it against ``runc list``. Anything in
runc's state, on a mount or in a cgroup without a metadata file is an orphan and is swept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from shoal.runtime._record import ContainerRecord

STATE_VERSION = 1
META_FILE = "meta.json"


def runc_id_for(container_id: str) -> str:
    """A short, stable runc id (and bundle directory name) for a container id.

    Pod UIDs plus container names run past 100 characters; overlay mount options and unix
    socket paths under the bundle have tight length limits, so paths stay short.
    """
    return hashlib.sha256(container_id.encode()).hexdigest()[:16]


@dataclass(kw_only=True)
class Container(ContainerRecord):
    """One container (its latest attempt)."""

    runc_id: str
    cgroup_path: str
    image: str

    def to_state(self) -> dict[str, Any]:
        return {
            **super().to_state(),
            "version": STATE_VERSION,
            "runc_id": self.runc_id,
            "cgroup_path": self.cgroup_path,
            "image": self.image,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Container:
        """Rebuild from ``meta.json``; raises KeyError/TypeError/ValueError when malformed."""
        return cls(
            **cls.fields_from_state(data, default_state=None),
            runc_id=str(data["runc_id"]),
            cgroup_path=str(data["cgroup_path"]),
            image=str(data.get("image", "")),
        )
