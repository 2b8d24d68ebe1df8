"""Container networking: IPAM, bridges/veth/netns through the CNI plugins, nftables service
rules and isolation, and link-state routing between nodes (shortest paths).

Pure cores (address allocation, rule rendering, shortest paths) have no I/O; the shells run
``ip``, ``nft``, ``tc`` and the CNI plugins through :mod:`shoal.network._exec`, optionally
inside a node's network namespace.
"""

from __future__ import annotations

from shoal.network._dial import NetnsDialer
from shoal.network._exec import arun, in_netns, run
from shoal.network._linkwatch import RouteKeeper
from shoal.network._nft import NftTable
from shoal.network._nftrules import (
    Backend,
    DNSRule,
    HostPort,
    NetworkRule,
    RuleSet,
    ServiceRule,
    render_delta,
    render_full,
)
from shoal.network._podnet import Bandwidth, Interface, PodAttachment, PodNetworker, parse_bandwidth
from shoal.network._routing import Link, NextHop, Route, build_graph, plan_routes, shortest_paths

__all__ = [
    "Backend",
    "Bandwidth",
    "DNSRule",
    "HostPort",
    "Interface",
    "Link",
    "NetnsDialer",
    "NetworkRule",
    "NextHop",
    "NftTable",
    "PodAttachment",
    "PodNetworker",
    "Route",
    "RouteKeeper",
    "RuleSet",
    "ServiceRule",
    "arun",
    "build_graph",
    "in_netns",
    "parse_bandwidth",
    "plan_routes",
    "render_delta",
    "render_full",
    "run",
    "shortest_paths",
]
