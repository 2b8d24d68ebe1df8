"""ControllerManager: builds every controller over one set of shared informers and runs them
together, as kube-controller-manager does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from shoal._util import Clock, SystemClock
from shoal.client import Client
from shoal.controllers._base import Controller, SharedInformers
from shoal.controllers._deployment import DeploymentController
from shoal.controllers._endpoints import EndpointsController
from shoal.controllers._gc import DEFAULT_EVENT_TTL, GarbageCollector
from shoal.controllers._ipam import IPAMController
from shoal.controllers._nodelifecycle import NodeLifecycleController
from shoal.controllers._replicaset import ReplicaSetController

log = logging.getLogger("shoal.controllers")

ALL_CONTROLLERS = (
    "replicaset",
    "deployment",
    "endpoints",
    "garbagecollector",
    "nodelifecycle",
    "ipam",
)


class ControllerManager:
    """All of shoal's controllers in one object.

    ``run()`` starts one informer per kind (shared by every controller), waits for their
    caches to fill, then runs every controller until cancelled. Cancelling ``run()`` stops the
    workers and the informers and returns nothing pending.

    ``controllers`` picks a subset by name (see ``ALL_CONTROLLERS``); ``workers`` is the number
    of concurrent reconciles per controller.
    """

    def __init__(
        self,
        client: Client,
        *,
        clock: Clock | None = None,
        node_monitor_grace: float = 10.0,
        pod_eviction_timeout: float = 20.0,
        node_monitor_period: float | None = None,
        workers: int = 4,
        event_ttl: float = DEFAULT_EVENT_TTL,
        controllers: Collection[str] = ALL_CONTROLLERS,
    ) -> None:
        unknown = set(controllers) - set(ALL_CONTROLLERS)
        if unknown:
            raise ValueError(
                f"unknown controller(s) {sorted(unknown)}; choose from {list(ALL_CONTROLLERS)}"
            )
        self.client = client
        self.clock: Clock = clock or SystemClock()
        self.informers = SharedInformers(client)
        self._synced = asyncio.Event()
        self.controllers: dict[str, Controller] = {}
        if "replicaset" in controllers:
            self.controllers["replicaset"] = ReplicaSetController(
                client, self.informers, workers=workers, clock=self.clock
            )
        if "deployment" in controllers:
            self.controllers["deployment"] = DeploymentController(
                client, self.informers, workers=workers, clock=self.clock
            )
        if "endpoints" in controllers:
            self.controllers["endpoints"] = EndpointsController(
                client, self.informers, workers=workers, clock=self.clock
            )
        if "garbagecollector" in controllers:
            self.controllers["garbagecollector"] = GarbageCollector(
                client, self.informers, workers=workers, clock=self.clock, event_ttl=event_ttl
            )
        if "nodelifecycle" in controllers:
            self.controllers["nodelifecycle"] = NodeLifecycleController(
                client,
                self.informers,
                clock=self.clock,
                node_monitor_grace=node_monitor_grace,
                pod_eviction_timeout=pod_eviction_timeout,
                node_monitor_period=node_monitor_period,
            )

        if "ipam" in controllers:
            self.controllers["ipam"] = IPAMController(client, self.informers, clock=self.clock)

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Return once the informer caches are filled and the controllers are running."""
        await asyncio.wait_for(self._synced.wait(), timeout)

    async def run(self) -> None:
        """Run until cancelled."""
        try:
            await self.informers.start()
            await self.informers.wait_synced()
            async with asyncio.TaskGroup() as tg:
                for name, controller in self.controllers.items():
                    tg.create_task(controller.run(), name=f"controller-{name}")
                self._synced.set()
                log.info("controllers running: %s", ", ".join(self.controllers))
        finally:
            self._synced.clear()
            await self.informers.stop()
