"""The scheduler: a pure placement core and the process that runs it against the API server.

``framework`` and ``plugins`` are pure (no I/O, no client): they decide where a pod goes given
a ``Snapshot``. ``Scheduler`` (in ``_runner``) feeds them from informers and binds the answer.

``Scheduler`` is loaded on first use so that importing the pure core does not pull in the
HTTP client; benchmarks and plugin tests run without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shoal.scheduler.framework import (
    Code,
    CycleState,
    FilterPlugin,
    Framework,
    NodeInfo,
    Resources,
    ScheduleResult,
    ScorePlugin,
    Snapshot,
    Status,
    default_framework,
)
from shoal.scheduler.plugins import (
    LeastAllocated,
    NodeName,
    NodeReady,
    NodeResourcesFit,
    NodeSelector,
    NodeUnschedulable,
    TaintToleration,
)

if TYPE_CHECKING:
    from shoal.scheduler._runner import Scheduler

__all__ = [
    "Code",
    "CycleState",
    "FilterPlugin",
    "Framework",
    "LeastAllocated",
    "NodeInfo",
    "NodeName",
    "NodeReady",
    "NodeResourcesFit",
    "NodeSelector",
    "NodeUnschedulable",
    "Resources",
    "ScheduleResult",
    "Scheduler",
    "ScorePlugin",
    "Snapshot",
    "Status",
    "TaintToleration",
    "default_framework",
]


def __getattr__(name: str) -> Any:
    if name == "Scheduler":
        from shoal.scheduler._runner import Scheduler

        return Scheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
