"""Pod network namespaces: one named netns per pod, wired to its networks' bridges by the CNI
plugins, with optional bandwidth limits, saved so that an agent restart keeps them.

Per network the node has a Linux bridge (``{prefix}`` + a short hash of the network name);
each pod interface is a veth pair from that bridge into the pod's namespace, addressed with
what shoal's IPAM allocated (this module never allocates). The node is either the root
namespace or a network namespace (``node_netns``, how tests build several nodes on one
machine): bridges, veth host ends, ifb devices and sysctls then live in ``node_netns`` and the
plugins run there, while the pod namespaces stay named namespaces in ``/var/run/netns`` (created
from the root namespace) so the runtime can join them by path.

Crash safety rests on one rule: the exact CNI configuration lists are written to
``state_dir/<pod_uid>.json`` *before* anything is created, and each ADD result is added as
it arrives. DEL, a restarted agent and garbage collection therefore always replay the very
configurations that were used, and every netns this class creates has a state file
(ownership: several node agents sharing one machine and prefix never touch each other's pods).

Bandwidth (``kubernetes.io/ingress-bandwidth`` / ``egress-bandwidth``) is applied by the
``bandwidth`` plugin on the pod's default-route interface (the first interface when none has
the default route): ingress is what the node sends into the pod through that interface,
egress what the pod sends out through it, whatever the destination (other pods on the same
node included). Traffic over the pod's other interfaces and over its loopback is not shaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import ROUND_CEILING
from pathlib import Path
from typing import Any

from shoal.api import parse_quantity
from shoal.errors import NetworkError
from shoal.network._cni import (
    CniRunner,
    Target,
    bandwidth_plugin,
    bridge_conflist,
    check_name,
    loopback_conflist,
    removable_tables,
)
from shoal.network._exec import NETNS_DIR, arun, arun_completed
from shoal.network._orphans import delete_devices, host_ends

__all__ = [
    "Bandwidth",
    "Interface",
    "PodAttachment",
    "PodNetworker",
    "bridge_name",
    "parse_bandwidth",
    "plan_chains",
]

_STATE_VERSION = 1
_MIN_BPS = 1_000  # the kubelet refuses limits below 1k and above 1P
_MAX_BPS = 10**15


@dataclass(frozen=True, slots=True)
class Interface:
    """One pod interface on one network, as the control plane decided it.

    ``address`` carries the node's subnet prefix for the network (``10.244.1.5/24``);
    ``gateway`` is the bridge's address on this node; ``network_cidr`` is the whole network,
    routed via the gateway so same-network pods on other nodes are reachable through this
    interface; at most one interface of a pod has ``default_route`` (internal networks
    never)."""

    network: str
    ifname: str
    bridge: str
    address: str
    gateway: str
    network_cidr: str
    default_route: bool = False
    extra_routes: tuple[str, ...] = ()
    """More destinations routed via the gateway: the service range, for a pod without a
    default route (on internal networks only), so it still reaches Services and DNS."""


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """Limits in bit/s for traffic into (``ingress_bps``) and out of (``egress_bps``) the pod;
    None: unlimited."""

    ingress_bps: int | None = None
    egress_bps: int | None = None


@dataclass(frozen=True, slots=True)
class PodAttachment:
    """A pod's network as attached: its namespace (a name in ``/var/run/netns``), its
    interfaces and its limits."""

    pod_uid: str
    netns: str
    interfaces: tuple[Interface, ...]
    bandwidth: Bandwidth | None = None

    @property
    def netns_path(self) -> str:
        """The path a runtime joins (runc's ``network`` namespace ``path``)."""
        return f"{NETNS_DIR}/{self.netns}"


@dataclass(frozen=True, slots=True)
class Chain:
    """One CNI configuration list to ADD for a pod, on interface ``ifname``."""

    network: str
    ifname: str
    conflist: Mapping[str, Any]
    bridge: str | None = None


# --- pure core ---------------------------------------------------------------------------


def parse_bandwidth(value: str | int) -> int:
    """A Kubernetes bandwidth quantity in bit/s, read the way the kubelet reads the
    ``kubernetes.io/ingress-bandwidth`` annotation: "10M" is 10 Mbit/s = 10_000_000,
    "1Mi" is 1_048_576, "500k" is 500_000, a plain number is bit/s. Fractions round up.
    Raises ValueError naming the value when it is not a quantity or not within 1k..1P."""
    try:
        amount = parse_quantity(value)
    except ValueError:
        raise ValueError(
            f"bandwidth {value!r} is not a quantity (e.g. 10M = 10 Mbit/s, 512k, 1Gi, 100000)"
        ) from None
    bps = int(amount.to_integral_value(rounding=ROUND_CEILING))
    if bps < _MIN_BPS:
        raise ValueError(f"bandwidth {value!r} is unreasonably small (< 1k bit/s)")
    if bps > _MAX_BPS:
        raise ValueError(f"bandwidth {value!r} is unreasonably large (> 1P bit/s)")
    return bps


def bridge_name(prefix: str, network: str) -> str:
    """The node's bridge for ``network``: ``prefix`` + a stable hash of the name, at most 15
    characters (the kernel's limit). The hash, not the name, so any network name fits."""
    width = min(8, 15 - len(prefix))
    if width < 6:
        raise ValueError(f"prefix {prefix!r} is too long for bridge names (at most 9 characters)")
    return prefix + hashlib.sha256(network.encode()).hexdigest()[:width]


def netns_name(prefix: str, pod_uid: str) -> str:
    """The pod's namespace name: ``{prefix}-{pod_uid[:12]}``."""
    return f"{prefix}-{pod_uid[:12]}"


def validate_interfaces(interfaces: Sequence[Interface]) -> None:
    """Reject a plan the plugins would half-apply: duplicate interface names or networks,
    more than one default route, a gateway outside the address's subnet, an address outside
    its network."""
    if not interfaces:
        raise ValueError("a pod needs at least one interface")
    if any(i.ifname == "lo" for i in interfaces):
        raise ValueError("interface name 'lo' is the pod's loopback")
    for what, values in (
        ("interface name", [i.ifname for i in interfaces]),
        ("network", [i.network for i in interfaces]),
    ):
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise ValueError(f"{what} {dupes[0]!r} appears twice")
    if sum(i.default_route for i in interfaces) > 1:
        raise ValueError("at most one interface may carry the default route")
    for i in interfaces:
        try:
            addr = ipaddress.ip_interface(i.address)
            gw = ipaddress.ip_address(i.gateway)
            net = ipaddress.ip_network(i.network_cidr, strict=False)
        except ValueError as exc:
            raise ValueError(f"interface {i.ifname} on {i.network}: {exc}") from None
        if "/" not in i.address:
            raise ValueError(f"interface {i.ifname}: address {i.address} needs a prefix length")
        if gw not in addr.network or gw == addr.ip:
            raise ValueError(
                f"interface {i.ifname}: gateway {i.gateway} must be another address of "
                f"{addr.network}"
            )
        if not addr.network.subnet_of(net):  # type: ignore[arg-type]
            raise ValueError(
                f"interface {i.ifname}: subnet {addr.network} is not inside network {net}"
            )


def shaped_interface(interfaces: Sequence[Interface]) -> Interface:
    """The interface bandwidth limits apply to: the default-route one, else the first."""
    return next((i for i in interfaces if i.default_route), interfaces[0])


def plan_chains(
    prefix: str, interfaces: Sequence[Interface], bandwidth: Bandwidth | None
) -> list[Chain]:
    """The configuration lists to ADD, in order: loopback, then one bridge chain per
    interface (routes: the network via the gateway, plus the default route where asked),
    the bandwidth plugin chained after the shaped interface's bridge."""
    validate_interfaces(interfaces)
    shaped = shaped_interface(interfaces).ifname
    chains = [
        Chain(network=f"{prefix}-lo", ifname="lo", conflist=loopback_conflist(f"{prefix}-lo"))
    ]
    for i in interfaces:
        routes = [str(ipaddress.ip_network(i.network_cidr, strict=False))]
        if i.default_route:
            routes.append("0.0.0.0/0")
        routes += [str(ipaddress.ip_network(r, strict=False)) for r in i.extra_routes]
        bw = None
        if bandwidth is not None and i.ifname == shaped:
            bw = bandwidth_plugin(bandwidth.ingress_bps, bandwidth.egress_bps)
        conflist = bridge_conflist(
            network=i.network,
            bridge=i.bridge,
            address=i.address,
            gateway=i.gateway,
            routes=routes,
            bandwidth=bw,
        )
        chains.append(Chain(network=i.network, ifname=i.ifname, conflist=conflist, bridge=i.bridge))
    return chains


def bridge_sysctls(bridges: Collection[str]) -> list[str]:
    """``sysctl -w`` arguments for a node with these bridges: forwarding on, bridged traffic
    through the netfilter hooks (isolation rules see same-bridge traffic), and
    ``route_localnet`` on each bridge (the DNS VIP is DNAT-ed to a loopback address)."""
    args = ["net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"]
    args += [f"net.ipv4.conf.{b}.route_localnet=1" for b in sorted(bridges)]
    return args


BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


async def ensure_br_netfilter(sysctl: Path = BRIDGE_NF) -> None:
    """Bridged traffic reaches the isolation rules only through ``br_netfilter``: load it
    when its sysctl is missing (as dockerd does), or say exactly what is wrong."""
    if await asyncio.to_thread(sysctl.exists):
        return
    why = "modprobe is not installed"
    if shutil.which("modprobe"):
        done = await arun_completed(["modprobe", "br_netfilter"])
        if await asyncio.to_thread(sysctl.exists):
            return
        why = f"modprobe br_netfilter: {done.stderr.strip() or f'exit status {done.returncode}'}"
    raise NetworkError(
        f"the br_netfilter kernel module is not loaded ({sysctl} is missing; {why}): "
        "run 'modprobe br_netfilter' on the host. Network isolation needs bridged traffic "
        "to pass the netfilter hooks"
    )


def _state_to_json(state: _State) -> str:
    return json.dumps(
        {
            "version": _STATE_VERSION,
            "podUid": state.pod_uid,
            "netns": state.netns,
            "complete": state.complete,
            "interfaces": [asdict(i) for i in state.interfaces],
            "bandwidth": asdict(state.bandwidth) if state.bandwidth else None,
            "chains": [
                {
                    "network": c.network,
                    "ifname": c.ifname,
                    "bridge": c.bridge,
                    "config": c.conflist,
                    "result": state.results.get(c.ifname),
                }
                for c in state.chains
            ],
        },
        indent=1,
    )


def _state_from_json(text: str) -> _State:
    data = json.loads(text)
    if data.get("version") != _STATE_VERSION:
        raise ValueError(f"unknown state version {data.get('version')!r}")
    bw = data.get("bandwidth")
    chains = [
        Chain(network=c["network"], ifname=c["ifname"], conflist=c["config"], bridge=c["bridge"])
        for c in data["chains"]
    ]
    return _State(
        pod_uid=data["podUid"],
        netns=data["netns"],
        interfaces=tuple(
            Interface(**{**i, "extra_routes": tuple(i.get("extra_routes") or ())})
            for i in data["interfaces"]
        ),
        bandwidth=Bandwidth(**bw) if bw else None,
        chains=chains,
        results={c["ifname"]: c["result"] for c in data["chains"] if c.get("result")},
        complete=bool(data.get("complete")),
    )


@dataclass
class _State:
    """What was (or is being) done for one pod; mutable only while attaching."""

    pod_uid: str
    netns: str
    interfaces: tuple[Interface, ...]
    bandwidth: Bandwidth | None
    chains: list[Chain]
    results: dict[str, Any] = field(default_factory=dict)
    complete: bool = False

    def attachment(self) -> PodAttachment:
        return PodAttachment(self.pod_uid, self.netns, self.interfaces, self.bandwidth)


# --- shell -------------------------------------------------------------------------------


class PodNetworker:
    """Attaches and detaches pod network namespaces on one node. Every method is idempotent
    and safe to call again after a crash; attach/detach of one pod are serialised."""

    def __init__(
        self,
        *,
        node_netns: str | None,
        state_dir: Path,
        prefix: str = "shoal",
        cni_path: str = "/usr/lib/cni",
    ) -> None:
        bridge_name(prefix, "x")  # validates the prefix length early
        self.node_netns = node_netns
        self.state_dir = Path(state_dir)
        self.prefix = prefix
        self.cni = CniRunner(cni_path=cni_path, node_netns=node_netns)
        # Per-pod locks, gone once no coroutine holds or awaits them.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def bridge_name(self, network: str) -> str:
        """This node's bridge for ``network`` (see :func:`bridge_name`)."""
        return bridge_name(self.prefix, network)

    def netns_name(self, pod_uid: str) -> str:
        return netns_name(self.prefix, pod_uid)

    # -- state files

    def _state_path(self, pod_uid: str) -> Path:
        if "/" in pod_uid or pod_uid.startswith("."):
            raise ValueError(f"pod uid {pod_uid!r} cannot name a state file")
        return self.state_dir / f"{pod_uid}.json"

    def _save(self, state: _State) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self._state_path(state.pod_uid)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(_state_to_json(state))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _load(self, pod_uid: str) -> _State | None:
        try:
            return _state_from_json(self._state_path(pod_uid).read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise NetworkError(f"pod {pod_uid}: unreadable network state: {exc}") from None

    def _saved_uids(self) -> list[str]:
        if not self.state_dir.is_dir():
            return []
        return sorted(p.stem for p in self.state_dir.glob("*.json"))

    def _lock(self, pod_uid: str) -> asyncio.Lock:
        lock = self._locks.get(pod_uid)
        if lock is None:
            lock = self._locks[pod_uid] = asyncio.Lock()
        return lock

    # -- namespaces

    @staticmethod
    def _netns_exists(name: str) -> bool:
        return os.path.exists(f"{NETNS_DIR}/{name}")

    @staticmethod
    def _netns_names() -> list[str]:
        return sorted(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else []

    async def _delete_netns(self, name: str) -> None:
        if self._netns_exists(name):
            await arun(["ip", "netns", "delete", name])

    def _target(self, state: _State, chain: Chain) -> Target:
        path = f"{NETNS_DIR}/{state.netns}"
        return Target(
            container_id=state.pod_uid,
            netns_path=path if self._netns_exists(state.netns) else "",
            ifname=chain.ifname,
            pod=state.pod_uid,
        )

    # -- attach / detach

    async def attach(
        self,
        pod_uid: str,
        interfaces: Sequence[Interface],
        bandwidth: Bandwidth | None = None,
    ) -> PodAttachment:
        """Create (or reuse) the pod's namespace and ADD its interfaces. Returns at once when
        the pod is already attached exactly so; an attachment that differs or was cut short
        by a crash is torn down and redone. On failure everything done is rolled back and
        NetworkError raised; a bad plan raises ValueError before anything is touched."""
        check_name("pod uid", pod_uid)
        chains = plan_chains(self.prefix, interfaces, bandwidth)
        async with self._lock(pod_uid):
            old = self._load(pod_uid)
            if old is not None:
                same = (
                    old.complete
                    and old.interfaces == tuple(interfaces)
                    and old.bandwidth == bandwidth
                    and [c.conflist for c in old.chains] == [c.conflist for c in chains]
                )
                if same and self._netns_exists(old.netns):
                    return old.attachment()
                await self._teardown(old)
            state = _State(
                pod_uid=pod_uid,
                netns=self.netns_name(pod_uid),
                interfaces=tuple(interfaces),
                bandwidth=bandwidth,
                chains=chains,
            )
            self._save(state)  # before anything exists: DEL and GC can always replay it
            try:
                await self._add(state)
            except BaseException as exc:
                try:
                    await self._teardown(state)
                except NetworkError as cleanup:
                    if isinstance(exc, NetworkError):
                        raise NetworkError(f"{exc} (rollback also failed: {cleanup})") from exc
                raise
            return state.attachment()

    async def _add(self, state: _State) -> None:
        if not self._netns_exists(state.netns):
            await arun(["ip", "netns", "add", state.netns])
        for chain in state.chains:
            result = await self.cni.add(chain.conflist, self._target(state, chain))
            state.results[chain.ifname] = result
            self._save(state)
        bridges = {c.bridge for c in state.chains if c.bridge}
        await ensure_br_netfilter()
        await arun(["sysctl", "-q", "-w", *bridge_sysctls(bridges)], netns=self.node_netns)
        state.complete = True
        self._save(state)

    async def _teardown(self, state: _State) -> None:
        """DEL every chain in reverse order (every one, even those whose ADD never finished:
        a plugin may have created part of its work), delete the namespace, then forget the
        pod. When a DEL fails the state file stays, so calling again retries."""
        first: NetworkError | None = None
        for chain in reversed(state.chains):
            try:
                await self.cni.delete(
                    chain.conflist, self._target(state, chain), state.results.get(chain.ifname)
                )
            except NetworkError as exc:
                first = first or exc
        try:
            await self._delete_netns(state.netns)
        except NetworkError as exc:
            first = first or exc
        if first is not None:
            raise first
        with contextlib.suppress(FileNotFoundError):
            self._state_path(state.pod_uid).unlink()

    async def detach(self, pod_uid: str) -> None:
        """Undo :meth:`attach` from the saved configurations. A pod never attached (or
        already detached) is fine; its namespace is deleted if it is somehow still there."""
        async with self._lock(pod_uid):
            state = self._load(pod_uid)
            if state is None:
                await self._delete_netns(self.netns_name(pod_uid))
                return
            await self._teardown(state)

    # -- restart and garbage collection

    def recover(self) -> list[PodAttachment]:
        """After an agent restart: the saved, complete attachments whose namespace still
        exists. Nothing is torn down here: running pods keep their network."""
        found = []
        for uid in self._saved_uids():
            state = self._load(uid)
            if state is not None and state.complete and self._netns_exists(state.netns):
                found.append(state.attachment())
        return found

    async def _orphan_netns(self, keep: Collection[str]) -> list[str]:
        """Namespaces named like this node's pods but with no state file (the state directory
        was lost), whose pod is not in ``keep``. With a node namespace shared by several
        agents on one machine, only those whose veth peers sit in *this* node's namespace."""
        saved = {self.netns_name(u) for u in self._saved_uids()}
        kept = {self.netns_name(u) for u in keep}
        pattern = re.compile(rf"^{re.escape(self.prefix)}-[A-Za-z0-9_.\-]{{1,12}}$")
        names = self._netns_names()
        bridges = set(await self._bridges())
        found = []
        for name in names:
            if name in saved or name in kept or name == self.node_netns:
                continue
            if not pattern.match(name):
                continue
            if self.node_netns is None or await host_ends(name, self.node_netns, bridges):
                found.append(name)
        return found

    async def _delete_orphan(self, netns: str) -> None:
        await delete_devices(netns, self.node_netns, await self._bridges())
        await self._delete_netns(netns)

    async def collect(self, keep: Collection[str]) -> list[str]:
        """Remove attachments of pods not in ``keep`` (leaked by a crash or a missed
        delete) and namespaces left without state; returns the pod uids (or, for orphaned
        namespaces, the namespace names) removed."""
        removed = []
        keep = set(keep)
        for uid in self._saved_uids():
            if uid not in keep:
                await self.detach(uid)
                removed.append(uid)
        for name in await self._orphan_netns(keep):
            await self._delete_orphan(name)
            removed.append(name)
        return removed

    async def _bridges(self) -> list[str]:
        out = await arun(["ip", "-j", "link", "show", "type", "bridge"], netns=self.node_netns)
        width = len(bridge_name(self.prefix, "")) - len(self.prefix)
        pattern = re.compile(rf"^{re.escape(self.prefix)}[0-9a-f]{{{width}}}$")
        return sorted(
            str(b["ifname"]) for b in json.loads(out or "[]") if pattern.match(b["ifname"])
        )

    async def remove_bridges(self, keep: Collection[str] = ()) -> list[str]:
        """Delete this prefix's bridges that are not in ``keep`` and have no ports left;
        returns the bridges deleted."""
        removed = []
        for br in await self._bridges():
            if br in keep:
                continue
            ports = await arun(["ip", "-j", "link", "show", "master", br], netns=self.node_netns)
            if json.loads(ports or "[]"):
                continue
            await arun(["ip", "link", "delete", br, "type", "bridge"], netns=self.node_netns)
            removed.append(br)
        return removed

    async def cleanup_all(self) -> None:
        """Tear down everything this node's networker made: every saved attachment, orphaned
        pod namespaces, every bridge with this prefix (ports or not), and empty iptables-nft
        table skeletons in the node namespace (see :func:`removable_tables`)."""
        for uid in self._saved_uids():
            await self.detach(uid)
        for name in await self._orphan_netns(()):
            await self._delete_orphan(name)
        for br in await self._bridges():
            await arun(["ip", "link", "delete", br, "type", "bridge"], netns=self.node_netns)
        ruleset = json.loads(
            await arun(["nft", "-j", "list", "ruleset"], netns=self.node_netns) or "{}"
        )
        for family, table in removable_tables(ruleset):
            await arun(["nft", "delete", "table", family, table], netns=self.node_netns)
