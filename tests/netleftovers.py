"""What shoal's data plane could leave behind in one network namespace (the root one when
``netns`` is None), by prefix: pod network namespaces, interfaces (bridges, veth ends), nft
tables (shoal's own, and the iptables-nft tables CNI plugins create), and routes shoal
installed (its routing protocol number). Used to assert "nothing left" and to clean up
after a failed test."""

from __future__ import annotations

import json
import subprocess

ROUTE_PROTO = "183"


def _run(argv: list[str], netns: str | None) -> str:
    full = ["ip", "netns", "exec", netns, *argv] if netns else argv
    res = subprocess.run(full, capture_output=True, text=True, check=False)
    return res.stdout


def network_leftovers(prefix: str, netns: str | None = None) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    names = [line.split()[0] for line in _run(["ip", "netns", "list"], None).splitlines() if line]
    found["netns"] = [n for n in names if n.startswith(f"{prefix}-") and n != netns]
    links = json.loads(_run(["ip", "-j", "link", "show"], netns) or "[]")
    found["links"] = [lk["ifname"] for lk in links if str(lk.get("ifname", "")).startswith(prefix)]
    tables = _run(["nft", "list", "tables"], netns).splitlines()
    table = prefix.replace("-", "_")
    found["nft"] = [t for t in tables if t.split()[-1:] == [table]]
    routes = json.loads(_run(["ip", "-j", "route", "show", "proto", ROUTE_PROTO], netns) or "[]")
    found["routes"] = [str(r.get("dst")) for r in routes]
    return found


def remove_network_leftovers(prefix: str, netns: str | None = None) -> None:
    """Best-effort removal of everything :func:`network_leftovers` finds."""
    left = network_leftovers(prefix, netns)
    for name in left["netns"]:
        _run(["ip", "netns", "delete", name], None)
    for link in network_leftovers(prefix, netns)["links"]:
        _run(["ip", "link", "delete", link], netns)
    for line in left["nft"]:
        family, name = line.split()[1], line.split()[2]
        _run(["nft", "delete", "table", family, name], netns)
    if left["routes"]:
        _run(["ip", "route", "flush", "proto", ROUTE_PROTO], netns)
