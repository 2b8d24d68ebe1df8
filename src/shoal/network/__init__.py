"""Container networking: IPAM, bridges/veth/netns through the CNI plugins, nftables service
rules and isolation, and link-state routing between nodes (shortest paths).

Pure cores (address allocation, rule rendering, shortest paths) have no I/O; the shells run
``ip``, ``nft``, ``tc`` and the CNI plugins through :mod:`shoal.network._exec`, optionally
inside a node's network namespace.
"""

from __future__ import annotations

from shoal.network._exec import arun, in_netns, run

__all__ = ["arun", "in_netns", "run"]
