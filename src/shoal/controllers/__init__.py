"""Reconcile loops: ReplicaSets, Deployments, Endpoints, garbage collection, node lifecycle.

Each controller is a client of the API server like any other: it lists and watches through
shared informers, reconciles one key at a time from a work queue, and writes back through the
client with compare-and-swap. ``ControllerManager`` runs them all; ``rollout`` holds the pure
rollout arithmetic.
"""

from shoal.controllers import rollout
from shoal.controllers._base import Controller, SharedInformers, WorkQueue
from shoal.controllers._deployment import DeploymentController
from shoal.controllers._deployment_util import (
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    POD_TEMPLATE_HASH,
    REVISION,
    template_hash,
)
from shoal.controllers._endpoints import EndpointsController, build_subsets
from shoal.controllers._gc import GarbageCollector
from shoal.controllers._manager import ALL_CONTROLLERS, ControllerManager
from shoal.controllers._nodelifecycle import NodeLifecycleController
from shoal.controllers._replicaset import ReplicaSetController

__all__ = [
    "ALL_CONTROLLERS",
    "DESIRED_REPLICAS",
    "MAX_REPLICAS",
    "POD_TEMPLATE_HASH",
    "REVISION",
    "Controller",
    "ControllerManager",
    "DeploymentController",
    "EndpointsController",
    "GarbageCollector",
    "NodeLifecycleController",
    "ReplicaSetController",
    "SharedInformers",
    "WorkQueue",
    "build_subsets",
    "rollout",
    "template_hash",
]
