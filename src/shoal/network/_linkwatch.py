"""Keeping a node's routes in step with the cluster's links: the loop an agent runs.

:class:`RouteKeeper` recomputes the node's shortest paths and syncs its routes whenever it is
poked (the agent pokes it from its Node informer: a node's links changed, a node went
NotReady, a Network's node subnets moved) and every ``interval`` anyway, which also notices a
local link losing carrier within that interval. Pokes that arrive while a sync runs coalesce
into one more sync, so a burst of Node events costs two syncs, not one per event.

It knows nothing of the API: the agent hands it a callable returning the current inputs, and
a callback to publish the node's live links (``Node.status.links``) when they change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import NamedTuple

from shoal.errors import NetworkError
from shoal.network._routes import RouteChange, live_links, sync_routes
from shoal.network._routing import Link, build_graph, plan_routes, shortest_paths

__all__ = ["RouteKeeper", "RoutingInputs"]

log = logging.getLogger("shoal.network.routing")


class RoutingInputs(NamedTuple):
    """What routing is computed from, as the agent's informers last saw it."""

    links: Mapping[str, Sequence[Link]]
    """Every node's published links (``Node.status.links``), by node name."""
    down: Collection[str]
    """Nodes that are NotReady or gone: routed around."""
    subnets: Mapping[str, Sequence[str]]
    """Every node's pod subnets across all networks, by node name."""


InputsTuple = tuple[Mapping[str, Sequence[Link]], Collection[str], Mapping[str, Sequence[str]]]


class RouteKeeper:
    """Routes of node ``self_name`` in ``netns``, kept equal to the shortest paths over
    ``inputs()``.

    With ``own_links`` (the node's links as configured, whether up or not), every sync first
    checks which of them are live (:func:`live_links`) and routes with those as the node's
    own links, instead of what the node last published: a link that just lost carrier stops
    being used here at once, without waiting for the round trip through the API. When the
    live set changes, ``on_live_links`` gets it, for the agent to publish; the neighbours,
    seeing the link from one end only, stop using it too (the two-way check).
    """

    def __init__(
        self,
        netns: str | None,
        self_name: str,
        inputs: Callable[[], InputsTuple],
        *,
        own_links: Sequence[Link] | None = None,
        on_live_links: Callable[[list[Link]], None] | None = None,
        interval: float = 0.5,
    ) -> None:
        self.netns = netns
        self.self_name = self_name
        self._inputs = inputs
        self._own_links = list(own_links) if own_links is not None else None
        self._on_live_links = on_live_links
        self.interval = interval
        self._wake = asyncio.Event()
        self.live: list[Link] | None = None
        """The node's own links found live by the last sync (None before it, or without
        ``own_links``)."""
        self.syncs = 0
        """Syncs done so far (successful or not), for tests and metrics."""
        self.last_change = RouteChange()

    def poke(self) -> None:
        """Ask for a sync soon; pokes made while one runs coalesce into a single next sync."""
        self._wake.set()

    async def sync_once(self) -> RouteChange:
        """Check own links, recompute, and sync the routes once."""
        links, down, subnets = self._inputs()
        if self._own_links is not None:
            live = await live_links(self.netns, self._own_links)
            if live != self.live:
                self.live = live
                if self._on_live_links is not None:
                    self._on_live_links(list(live))
            links = {**links, self.self_name: live}
        hops = shortest_paths(build_graph(links, down), self.self_name)
        change = await sync_routes(self.netns, plan_routes(hops, subnets))
        self.last_change = change
        if change:
            log.info("routes of %s: %s", self.self_name, change)
        return change

    async def run(self) -> None:
        """Sync now, then on every poke and every ``interval``, until cancelled. A failed
        sync is logged and retried at the next one: routing must outlive a refused route."""
        self._wake.set()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.sync_once()
            except NetworkError as exc:
                log.warning("routes of %s: %s", self.self_name, exc)
            finally:
                self.syncs += 1
