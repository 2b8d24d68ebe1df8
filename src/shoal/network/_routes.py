"""Installing the routes the routing core planned, in a node's network namespace, and
checking the node's own links.

Every route shoal installs carries its own routing protocol number, :data:`ROUTE_PROTO`, as
routing daemons mark theirs (bird 12, babel 42, ospf 188...). That tag is how shoal lists and
removes its routes without ever touching a route someone else made: the kernel keeps it on
the route, ``ip route show proto N`` filters on it, and ``ip route del ... proto N`` only
deletes a route with that tag.

All commands go through :mod:`shoal.network._exec`, so a node that is a network namespace
(tests, demos) runs the same commands as a real machine, prefixed by ``ip netns exec``. Only
the main routing table is used.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.errors import NetworkError
from shoal.network._exec import arun
from shoal.network._routing import Link, Route

__all__ = [
    "ROUTE_PROTO",
    "RouteChange",
    "diff_routes",
    "enable_forwarding",
    "installed_routes",
    "link_up",
    "live_links",
    "remove_all_routes",
    "sync_routes",
]

ROUTE_PROTO = 183
"""The routing protocol number (0xb7) on every route shoal installs. Not listed in iproute2's
``/etc/iproute2/rt_protos`` nor among the kernel's ``RTPROT_*`` values (bgp 186, isis 187, ospf
188, rip 189, eigrp 192 are the nearest), so no known daemon uses it; ``ip route`` shows it as
``proto 183``. To name it, an operator may add ``183 shoal`` to
``/etc/iproute2/rt_protos.d/shoal.conf``; shoal always passes the number."""

_FAMILIES = ("-4", "-6")


@dataclass(frozen=True, slots=True)
class RouteChange:
    """What one :func:`sync_routes` did, for logging."""

    added: int = 0
    changed: int = 0
    removed: int = 0

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def __str__(self) -> str:
        return f"+{self.added} ~{self.changed} -{self.removed}"


def _parse_json(text: str) -> list[dict[str, Any]]:
    """``ip -j`` output: a JSON array of objects (empty output reads as no entries)."""
    if not text.strip():
        return []
    data = json.loads(text)
    return [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []


def _destination(dst: str, family: str) -> str:
    """``ip`` prints host routes without their prefix length; :func:`plan_routes` writes
    CIDRs. Bring both to the CIDR form."""
    if "/" in dst:
        return dst
    return f"{dst}/32" if family == "-4" else f"{dst}/128"


async def installed_routes(netns: str | None) -> dict[str, str]:
    """shoal's routes in the namespace's main table (IPv4 and IPv6): destination CIDR -> via
    address (empty for a route without a gateway, which shoal never installs, so a sync
    replaces it)."""
    outputs = await asyncio.gather(
        *(
            arun(["ip", family, "-j", "route", "show", "proto", str(ROUTE_PROTO)], netns=netns)
            for family in _FAMILIES
        )
    )
    routes: dict[str, str] = {}
    for family, output in zip(_FAMILIES, outputs, strict=True):
        for entry in _parse_json(output):
            dst = entry.get("dst")
            if isinstance(dst, str):
                routes[_destination(dst, family)] = str(entry.get("gateway", ""))
    return routes


def diff_routes(
    installed: Mapping[str, str], wanted: Sequence[Route]
) -> tuple[list[str], RouteChange]:
    """The ``ip -batch`` lines that turn ``installed`` (shoal's routes now) into ``wanted``,
    and what they change.

    New destinations use ``route add``, not ``replace``: the kernel identifies a route by
    destination, TOS and metric, not by protocol, so ``replace`` on a destination that
    someone else already routes would silently take their route over. ``add`` fails there
    instead, loudly. Destinations shoal already routes elsewhere use ``replace`` (the route
    it replaces is shoal's own); stale ones are deleted with ``proto`` in the selector, so
    only a route carrying shoal's tag can go. If ``wanted`` repeats a destination, the last
    one wins.
    """
    want = {route.destination: route.via for route in wanted}
    proto = str(ROUTE_PROTO)
    lines: list[str] = []
    added = changed = 0
    for dst, via in want.items():
        current = installed.get(dst)
        if current == via:
            continue
        verb = "add" if current is None else "replace"
        lines.append(f"route {verb} {dst} via {via} proto {proto}")
        if current is None:
            added += 1
        else:
            changed += 1
    stale = [dst for dst in installed if dst not in want]
    lines.extend(f"route del {dst} proto {proto}" for dst in stale)
    return lines, RouteChange(added, changed, len(stale))


async def sync_routes(netns: str | None, wanted: Sequence[Route]) -> RouteChange:
    """Make shoal's routes in ``netns`` exactly ``wanted``, applying only the difference, in
    one ``ip -batch`` run (one process, however many routes change).

    The batch runs with ``-force``, so one refused line (a destination someone else already
    routes, a next hop whose link just went down) does not keep the other routes from being
    installed; the refusal is still raised afterwards as a NetworkError naming the line, and
    the next sync tries again."""
    lines, change = diff_routes(await installed_routes(netns), wanted)
    if lines:
        try:
            await arun(["ip", "-force", "-batch", "-"], netns=netns, input="\n".join(lines) + "\n")
        except NetworkError as exc:
            raise NetworkError(_name_failed_lines(str(exc), lines)) from exc
    return change


def _name_failed_lines(message: str, lines: Sequence[str]) -> str:
    """``ip -batch`` reports a refused line by number only (``Command failed -:3``): add the
    line itself, so the error says which route was refused."""
    failed = []
    for match in re.finditer(r"Command failed -:(\d+)", message):
        index = int(match.group(1)) - 1
        if 0 <= index < len(lines):
            failed.append(lines[index])
    return f"{message} [refused: {'; '.join(failed)}]" if failed else message


async def remove_all_routes(netns: str | None) -> None:
    """Delete every route shoal installed in the namespace's main table (IPv4 and IPv6),
    and nothing else: a node leaving routing, or an agent shutting down for good."""
    for family in _FAMILIES:
        await arun(["ip", family, "route", "flush", "proto", str(ROUTE_PROTO)], netns=netns)


# --- link liveness ------------------------------------------------------------------------


def _direct_device(route_get_output: str) -> str | None:
    """The device ``ip -j route get ADDR`` sends ``ADDR`` out of, when ``ADDR`` is directly
    connected; None otherwise (no route, or a route through a gateway: a neighbour's address
    on a shared link is on-link by definition, so reaching it through a gateway means the
    link itself is gone and some other route, a default route say, answered instead)."""
    try:
        entries = _parse_json(route_get_output)
    except json.JSONDecodeError:
        return None
    if not entries:
        return None
    entry = entries[0]
    if "gateway" in entry or "linkdown" in entry.get("flags", ()):
        return None
    dev = entry.get("dev")
    return dev if isinstance(dev, str) else None


def _carrier_up(link: Mapping[str, Any]) -> bool:
    """A device from ``ip -j link show`` is usable: administratively up (flag ``UP``), with
    carrier (flag ``LOWER_UP``; a veth whose peer is down loses it and shows ``NO-CARRIER``),
    and an RFC 2863 operstate of ``UP`` (or ``UNKNOWN``, which drivers without operstate
    support such as tun and dummy report while working)."""
    flags = link.get("flags", ())
    return (
        "UP" in flags
        and "LOWER_UP" in flags
        and "NO-CARRIER" not in flags
        and link.get("operstate") in ("UP", "UNKNOWN")
    )


async def _route_device(netns: str | None, address: str) -> str | None:
    # Unreachable ("Network is unreachable") exits non-zero: that is a dead link, not an error.
    output = await arun(["ip", "-j", "route", "get", address], netns=netns, check=False)
    return _direct_device(output)


async def link_up(netns: str | None, address: str) -> bool:
    """Whether the node's link to a neighbour at ``address`` can carry traffic now.

    Checked in two steps, both as the kernel sees them: ``ip route get ADDR`` must send the
    address straight out of a device (a connected route, no gateway: when our end is set
    down the kernel drops that route, so the lookup fails or falls through to a gateway),
    and that device must be up with carrier (``ip link show``: ``UP`` and ``LOWER_UP``,
    operstate ``UP``): when the far end of a veth is set down or deleted, our end keeps its
    route but loses carrier. Neighbour reachability (ARP) is not probed: it would cost a
    packet and a timeout per link, and a silent peer shows up as NotReady instead.
    """
    dev = await _route_device(netns, address)
    if dev is None:
        return False
    output = await arun(["ip", "-j", "link", "show", "dev", dev], netns=netns, check=False)
    try:
        links = _parse_json(output)
    except json.JSONDecodeError:
        return False
    return bool(links) and _carrier_up(links[0])


async def live_links(netns: str | None, links: Sequence[Link]) -> list[Link]:
    """The subset of ``links`` (in their order) that :func:`link_up` would call up, with one
    ``ip route get`` per link (run concurrently) and one ``ip link show`` for all devices."""
    if not links:
        return []
    devices = await asyncio.gather(*(_route_device(netns, link.address) for link in links))
    states = {
        str(entry.get("ifname")): _carrier_up(entry)
        for entry in _parse_json(await arun(["ip", "-j", "link", "show"], netns=netns))
    }
    return [
        link
        for link, dev in zip(links, devices, strict=True)
        if dev is not None and states.get(dev, False)
    ]


async def enable_forwarding(netns: str | None) -> None:
    """Let the node forward traffic between its links (it is a router for the nodes behind
    it): ``net.ipv4.ip_forward=1``, and reverse-path filtering loose (2) on ``all`` and
    ``default``. Shortest paths are computed per direction and ties are broken by name, so
    a reply may come back over a different link than the request left by, which strict
    filtering (1) drops. Loose rather than off: the kernel applies the larger of ``all`` and
    the device's own value, so ``all=2`` makes every existing device at least loose, where
    ``all=0`` would leave a device set to strict still strict, and loose still drops packets
    from sources with no route at all. Both settings are per network namespace."""
    await arun(
        [
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=2",
            "net.ipv4.conf.default.rp_filter=2",
        ],
        netns=netns,
    )
