"""Pod network namespaces that lost their CNI state file, found and removed from what the
kernel still shows.

Without the state file, the only record of what a pod's attachment made is in the kernel:
the veths in the pod's namespace, their host ends on this node's bridges, and the ifb device
the bandwidth plugin redirects the host end's ingress to (egress shaping). Interface indexes
are per namespace (every node has an ifindex 3), so a host end is matched by both ends naming
each other's ifindex and, for a named node namespace, by the pod veth's ``link_netnsid``
resolving (``ip netns list-id``) to that node.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from shoal.network._exec import arun

_VETHS = ["ip", "-j", "link", "show", "type", "veth"]


async def _json(argv: list[str], netns: str | None) -> list[dict[str, Any]]:
    out = json.loads(await arun(argv, netns=netns, check=False) or "[]")
    return [x for x in out if isinstance(x, dict)] if isinstance(out, list) else []


async def host_ends(
    pod_netns: str, node_netns: str | None, bridges: Collection[str]
) -> list[dict[str, Any]]:
    """The veths in ``node_netns`` (None: this namespace) that are ports of ``bridges`` and
    paired with a veth in ``pod_netns``."""
    pod = await _json(_VETHS, pod_netns)
    names = {
        i.get("nsid"): i.get("name")
        for i in await _json(["ip", "-j", "netns", "list-id"], pod_netns)
    }
    pairs = {
        (p.get("link_index"), p.get("ifindex"))
        for p in pod
        if names.get(p.get("link_netnsid")) == node_netns
    }
    return [
        end
        for end in await _json(_VETHS, node_netns)
        if end.get("master") in bridges and (end.get("ifindex"), end.get("link_index")) in pairs
    ]


async def shaping_ifbs(ends: Collection[dict[str, Any]], node_netns: str | None) -> list[str]:
    """The bandwidth plugin's ``bwp…`` ifb devices that these host ends' ingress filters
    redirect to."""
    found = set()
    for end in ends:
        show = ["tc", "-j", "filter", "show", "dev", str(end["ifname"]), "ingress"]
        for flt in await _json(show, node_netns):
            options = flt.get("options")
            for action in options.get("actions", []) if isinstance(options, dict) else []:
                dev = str(action.get("to_dev", ""))
                if action.get("kind") == "mirred" and dev.startswith("bwp"):
                    found.add(dev)
    return sorted(found)


async def delete_devices(pod_netns: str, node_netns: str | None, bridges: Collection[str]) -> None:
    """Delete the devices of a pod namespace without CNI state, before the namespace itself
    goes: its veths (the kernel destroys a deleted namespace's devices asynchronously, and
    the host ends would otherwise linger on the bridge for a moment) and its ifb."""
    ifbs = await shaping_ifbs(await host_ends(pod_netns, node_netns, bridges), node_netns)
    for link in await _json(_VETHS, pod_netns):
        await arun(["ip", "link", "delete", str(link["ifname"])], netns=pod_netns, check=False)
    for ifb in ifbs:
        await arun(["ip", "link", "delete", ifb], netns=node_netns, check=False)
