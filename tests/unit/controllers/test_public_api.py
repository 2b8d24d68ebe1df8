"""The public surface of shoal.controllers, pinned so changes to it are deliberate."""

from __future__ import annotations

import pytest

import shoal.controllers
from shoal.client import Client
from shoal.controllers import ALL_CONTROLLERS, ControllerManager


def test_all_is_pinned() -> None:
    assert sorted(shoal.controllers.__all__) == [
        "ALL_CONTROLLERS",
        "Controller",
        "ControllerManager",
        "DESIRED_REPLICAS",
        "DeploymentController",
        "EndpointsController",
        "GarbageCollector",
        "MAX_REPLICAS",
        "NodeLifecycleController",
        "POD_TEMPLATE_HASH",
        "REVISION",
        "ReplicaSetController",
        "SharedInformers",
        "WorkQueue",
        "build_subsets",
        "rollout",
        "template_hash",
    ]
    for name in shoal.controllers.__all__:
        assert hasattr(shoal.controllers, name)


async def test_manager_builds_a_subset_and_rejects_unknown_names() -> None:
    async with Client("http://127.0.0.1:1") as client:
        m = ControllerManager(client, controllers=["replicaset", "endpoints"])
        assert sorted(m.controllers) == ["endpoints", "replicaset"]
        kinds = {i.rc.info.kind for i in m.informers.all()}
        assert kinds == {"Pod", "ReplicaSet", "Service", "Endpoints"}
        assert len(ControllerManager(client).controllers) == len(ALL_CONTROLLERS)
        with pytest.raises(ValueError, match="unknown controller"):
            ControllerManager(client, controllers=["replicaset", "cronjob"])
