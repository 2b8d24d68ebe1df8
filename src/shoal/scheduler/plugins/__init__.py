"""The built-in scheduler plugins (an extension API: write your own against the
``FilterPlugin`` / ``ScorePlugin`` protocols in ``shoal.scheduler.framework``).

Each plugin is named and worded after its Kubernetes counterpart, so the reasons users see in
``FailedScheduling`` events read the same as on a Kubernetes cluster.
"""

from shoal.scheduler.plugins._node import NodeName, NodeSelector, NodeUnschedulable
from shoal.scheduler.plugins._resources import (
    LeastAllocated,
    NodeResourcesFit,
    least_requested_score,
)
from shoal.scheduler.plugins._taints import (
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    NodeReady,
    TaintToleration,
    tolerates,
)

__all__ = [
    "TAINT_NOT_READY",
    "TAINT_UNREACHABLE",
    "LeastAllocated",
    "NodeName",
    "NodeReady",
    "NodeResourcesFit",
    "NodeSelector",
    "NodeUnschedulable",
    "TaintToleration",
    "least_requested_score",
    "tolerates",
]
