"""Invoking CNI plugins (spec 1.0.0) and building the plugin configurations shoal uses.

The CNI contract, as far as shoal relies on it: a plugin is an executable in ``CNI_PATH``;
the runtime passes the operation and the target in the environment (``CNI_COMMAND``,
``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_PATH``) and the plugin's own
configuration as JSON on stdin. A *network configuration list* (``{"cniVersion", "name",
"plugins": [...]}``) is run as a chain: ADD runs the plugins in order, each receiving the
previous plugin's result as ``prevResult``, and the last result is the attachment's result;
DEL runs them in reverse order, each receiving the final ADD result as ``prevResult`` (so a
runtime must keep that result: shoal saves it with the configurations). A plugin that fails
prints ``{"code", "msg", "details"}`` on stdout and exits non-zero.

Only the plugins shoal needs are built here (``loopback``, ``bridge`` with ``static`` IPAM,
``bandwidth``): none of them creates iptables tables (``portmap``, ``firewall`` and the
bridge's ``ipMasq`` would; shoal does masquerading and isolation with its own nftables
rules).

The config builders and result/error parsers are pure; :class:`CniRunner` is the shell that
executes plugins through :func:`shoal.network._exec.arun`, inside the node's network
namespace when the node is one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.errors import NetworkError
from shoal.network._exec import arun_completed

__all__ = [
    "CNI_VERSION",
    "CniRunner",
    "Target",
    "bandwidth_plugin",
    "bridge_conflist",
    "burst_bits",
    "check_name",
    "host_interfaces",
    "loopback_conflist",
    "parse_result",
    "plugin_config",
    "plugin_env",
    "plugin_error",
]

CNI_VERSION = "1.0.0"

# The spec's pattern for container IDs and network names.
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")

JSON = dict[str, Any]
_IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")


@dataclass(frozen=True, slots=True)
class Target:
    """What a plugin call acts on: the container (shoal passes the pod uid as container ID),
    its network namespace path (``""`` once the namespace is gone, which the spec allows for
    DEL), the interface name inside it, and the pod uid for error messages."""

    container_id: str
    netns_path: str
    ifname: str
    pod: str


# --- pure: configurations --------------------------------------------------------------


def loopback_conflist(name: str) -> JSON:
    """The chain that brings ``lo`` up in a new namespace (it starts DOWN)."""
    check_name("network name", name)
    return {"cniVersion": CNI_VERSION, "name": name, "plugins": [{"type": "loopback"}]}


def burst_bits(rate_bps: int) -> int:
    """The token-bucket burst shoal gives a rate: 50 ms worth of traffic, at least 32 KiB.

    The bandwidth plugin needs an explicit burst. Kubernetes runtimes pass ``MaxInt32`` bits,
    which lets the first 256 MiB through unshaped; a burst this small keeps the limit honest
    over seconds while staying above a few full-size (and GSO-sized) packets, which tbf must
    fit in its bucket."""
    return max(rate_bps // 20, 8 * 32 * 1024)


def bandwidth_plugin(ingress_bps: int | None, egress_bps: int | None) -> JSON | None:
    """The ``bandwidth`` plugin's entry for a chain, or None when nothing is limited.

    In the plugin's (and Kubernetes') terms ``ingress`` is traffic *into* the pod and
    ``egress`` traffic *out of* it; both are shaped on the host end of the chain's veth:
    ingress by a tbf qdisc on that veth's transmit side, egress by redirecting what the veth
    receives from the pod to an ifb device (``bwp...`` in the node's namespace) with a tbf."""
    entry: JSON = {"type": "bandwidth"}
    if ingress_bps:
        entry["ingressRate"] = ingress_bps
        entry["ingressBurst"] = burst_bits(ingress_bps)
    if egress_bps:
        entry["egressRate"] = egress_bps
        entry["egressBurst"] = burst_bits(egress_bps)
    return entry if len(entry) > 1 else None


def bridge_conflist(
    *,
    network: str,
    bridge: str,
    address: str,
    gateway: str,
    routes: Sequence[str],
    bandwidth: JSON | None = None,
) -> JSON:
    """The chain attaching one pod interface to a network's bridge.

    ``bridge`` with ``isGateway`` (the bridge holds ``gateway`` so it is the pods' next hop),
    no ``ipMasq`` (shoal's nftables masquerades) and ``hairpinMode`` (a pod reaching a
    service VIP that load-balances back to itself gets its packets reflected on the same
    port); ``static`` IPAM hands out exactly the address the control plane allocated, and
    ``routes`` (destination CIDRs) go via the gateway. ``bandwidth``, when given, follows in
    the chain and shapes this interface only."""
    check_name("network name", network)
    ipam: JSON = {
        "type": "static",
        "addresses": [{"address": address, "gateway": gateway}],
        "routes": [{"dst": dst, "gw": gateway} for dst in routes],
    }
    plugins: list[JSON] = [
        {
            "type": "bridge",
            "bridge": bridge,
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": ipam,
        }
    ]
    if bandwidth is not None:
        plugins.append(bandwidth)
    return {"cniVersion": CNI_VERSION, "name": network, "plugins": plugins}


def plugin_config(conflist: Mapping[str, Any], index: int, prev_result: Any = None) -> JSON:
    """The stdin of the ``index``-th plugin of a list: its own keys plus the list's ``name``
    and ``cniVersion``, and ``prevResult`` when there is one (the spec's derivation)."""
    conf: JSON = dict(conflist["plugins"][index])
    conf["cniVersion"] = conflist["cniVersion"]
    conf["name"] = conflist["name"]
    if prev_result is not None:
        conf["prevResult"] = prev_result
    return conf


def plugin_env(command: str, target: Target, cni_path: str, path: str) -> dict[str, str]:
    """The whole environment of a plugin call (nothing else leaks in from the agent).
    ``PATH`` is kept so the plugins, and ``ip netns exec`` in front of them, find their
    helpers."""
    check_name("container ID", target.container_id)
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": target.container_id,
        "CNI_NETNS": target.netns_path,
        "CNI_IFNAME": target.ifname,
        "CNI_PATH": cni_path,
        "PATH": path,
    }


# --- pure: results and errors ------------------------------------------------------------


def plugin_error(
    *, plugin: str, command: str, network: str, target: Target, stdout: str
) -> NetworkError:
    """The NetworkError for a failed plugin call, naming the plugin, the network and the pod,
    with the plugin's ``msg``, ``details`` and ``code`` when it printed the spec's error."""
    where = f"CNI {plugin} {command} on network {network!r} for pod {target.pod} ({target.ifname})"
    text = stdout.strip()
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, dict) and "msg" in body:
        detail = str(body["msg"])
        if body.get("details"):
            detail += f": {body['details']}"
        if "code" in body:
            detail += f" (CNI error code {body['code']})"
    elif text:
        detail = text[:500]
    else:
        detail = "failed without printing an error"
    return NetworkError(f"{where}: {detail}")


def parse_result(
    stdout: str, *, plugin: str, command: str, network: str, target: Target
) -> JSON | None:
    """What a plugin printed: its result for ADD, None for an empty (successful) DEL.

    Raises the :func:`plugin_error` when the output is the spec's error object, or when an
    ADD printed no result (a plugin must print one; a crash prints nothing on stdout)."""
    text = stdout.strip()
    if not text:
        if command == "ADD":
            raise plugin_error(
                plugin=plugin, command=command, network=network, target=target, stdout=""
            )
        return None
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict) or "code" in body or "cniVersion" not in body:
        raise plugin_error(
            plugin=plugin, command=command, network=network, target=target, stdout=stdout
        )
    return body


def host_interfaces(result: Mapping[str, Any] | None) -> list[str]:
    """Names of the interfaces a result created outside the pod (no ``sandbox``): the host
    end of the veth and, with bandwidth shaping, the ifb device."""
    if not result:
        return []
    return [
        str(i["name"])
        for i in result.get("interfaces", [])
        if isinstance(i, dict) and not i.get("sandbox") and "name" in i
    ]


def removable_tables(ruleset: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(family, table) of iptables-nft tables that are safe to delete from ``nft -j list
    ruleset`` output: ip/ip6 tables with an iptables table name whose chains hold no rule and
    either are ``CNI-`` chains (left by CNI plugins) or base chains with an accept policy.

    The plugins shoal runs create none of these. ``portmap`` and ``firewall`` (or ``ipMasq``)
    do, and their DEL leaves the table behind with empty ``CNI-`` chains; such a skeleton
    does nothing and is safe to remove. A table holding any rule, a chain of another name, or
    a base chain with a drop policy is someone's configuration and is kept."""
    items = ruleset.get("nftables", [])
    tables: dict[tuple[Any, Any], bool] = {}
    for item in items:
        if "table" in item:
            t = item["table"]
            if t.get("family") in ("ip", "ip6") and t.get("name") in _IPTABLES_TABLES:
                tables[(t["family"], t["name"])] = True
    for item in items:
        kind = next(iter(item), "")
        body = item.get(kind, {})
        if not isinstance(body, dict):
            continue
        key = (body.get("family"), body.get("table"))
        if key not in tables:
            continue
        if kind in ("rule", "set", "map", "flowtable", "element", "counter", "quota", "limit"):
            tables[key] = False
        elif kind == "chain":
            name = str(body.get("name", ""))
            base = "hook" in body
            custom = not base and not name.startswith("CNI-")
            if custom or (base and body.get("policy", "accept") != "accept"):
                tables[key] = False
    return sorted(k for k, ok in tables.items() if ok)


def check_name(what: str, value: str) -> None:
    """Raise ValueError unless ``value`` is a valid CNI container ID / network name."""
    if not _NAME_RE.match(value):
        raise ValueError(
            f"{what} {value!r} is not valid for CNI (letters, digits, '_', '.', '-'; "
            "starting with a letter or digit)"
        )


# --- shell -------------------------------------------------------------------------------


class CniRunner:
    """Runs configuration lists through the plugins in ``cni_path``, inside ``node_netns``
    when the node is a network namespace (the bridge, the veth host ends and the ifb devices
    then live there)."""

    def __init__(self, *, cni_path: str = "/usr/lib/cni", node_netns: str | None = None) -> None:
        self.cni_path = cni_path
        self.node_netns = node_netns
        self._path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")

    async def _invoke(
        self, command: str, conflist: Mapping[str, Any], index: int, prev: Any, target: Target
    ) -> JSON | None:
        conf = plugin_config(conflist, index, prev)
        plugin = str(conf["type"])
        network = str(conflist["name"])
        binary = os.path.join(self.cni_path, plugin)
        # A failing plugin explains itself on stdout (the spec's error object), else on
        # stderr (a crash). An ADD must print a result; DEL prints nothing.
        done = await arun_completed(
            [binary],
            netns=self.node_netns,
            input=json.dumps(conf),
            env=plugin_env(command, target, self.cni_path, self._path),
        )
        if done.returncode != 0:
            raise plugin_error(
                plugin=plugin, command=command, network=network, target=target,
                stdout=done.stdout.strip() or done.stderr.strip() or f"exit status {done.returncode}",
            )  # fmt: skip
        return parse_result(
            done.stdout, plugin=plugin, command=command, network=network, target=target
        )

    async def add(self, conflist: Mapping[str, Any], target: Target) -> JSON:
        """ADD the whole chain; returns the final result. On failure raises the plugin's
        NetworkError; the caller must DEL the list (the spec's rule after a failed ADD)."""
        prev: JSON | None = None
        for index in range(len(conflist["plugins"])):
            prev = await self._invoke("ADD", conflist, index, prev, target)
        assert prev is not None  # parse_result never returns None for ADD
        return prev

    async def delete(
        self, conflist: Mapping[str, Any], target: Target, result: Mapping[str, Any] | None
    ) -> None:
        """DEL the chain in reverse order with the saved ADD ``result`` as ``prevResult``.
        Every plugin is called even when one fails (so as much as possible is released);
        the first failure is raised at the end."""
        first: NetworkError | None = None
        for index in reversed(range(len(conflist["plugins"]))):
            try:
                await self._invoke("DEL", conflist, index, result, target)
            except NetworkError as exc:
                first = first or exc
        if first is not None:
            raise first
