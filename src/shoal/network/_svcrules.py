"""From API objects to the node's nftables rule set, pure: which service ports exist, which
Ready endpoints back each one, how they are balanced, which host ports are published, and
which networks exist (for isolation and masquerading)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shoal.api import (
    ADDRESSES_ANNOTATION,
    BALANCE_ANNOTATION,
    ENDPOINT_ADDRESSES_ANNOTATION,
    WEIGHTS_ANNOTATION,
    Endpoints,
    Network,
    Pod,
    Service,
    ServicePort,
    parse_addresses,
    pod_networks,
)
from shoal.network._nftrules import (
    DEFAULT_AFFINITY_TIMEOUT,
    Backend,
    Balance,
    HostPort,
    NetworkRule,
    Protocol,
    ServiceRule,
)

log = logging.getLogger("shoal.network")

_BALANCE: dict[str, Balance] = {
    "round-robin": "roundrobin",
    "random": "random",
    "weighted": "weighted",
}


def _protocol(p: str) -> Protocol | None:
    low = p.lower()
    return "tcp" if low == "tcp" else "udp" if low == "udp" else None


def _json_annotation(ep: Endpoints, key: str) -> dict[str, Any]:
    """A JSON object annotation of ``ep``; anything else (absent, malformed) reads as empty."""
    try:
        raw = json.loads(ep.metadata.annotations.get(key) or "{}")
    except ValueError:
        return {}
    return raw if isinstance(raw, dict) else {}


def _weights(ep: Endpoints | None) -> dict[str, int]:
    if ep is None:
        return {}
    raw = _json_annotation(ep, WEIGHTS_ANNOTATION)
    return {str(k): v for k, v in raw.items() if isinstance(v, int) and v >= 1}


def _alternates(
    ep: Endpoints, subnets: Mapping[str, str]
) -> dict[str, tuple[tuple[str, str], ...]]:
    raw = _json_annotation(ep, ENDPOINT_ADDRESSES_ANNOTATION)
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for ip, others in raw.items():
        if isinstance(others, dict):
            out[str(ip)] = tuple(
                sorted((subnets[n], str(a)) for n, a in others.items() if n in subnets)
            )
    return out


def backends_for(
    port: ServicePort,
    single: bool,
    ep: Endpoints | None,
    subnets: Mapping[str, str] | None = None,
) -> tuple[Backend, ...]:
    """Ready addresses of ``ep`` serving ``port`` (matched by name, as kube-proxy does; an
    unnamed port of a one-port Service takes the subsets' only port)."""
    if ep is None:
        return ()
    weights = _weights(ep)
    alternates = _alternates(ep, subnets or {})
    seen: dict[tuple[str, int], Backend] = {}
    for subset in ep.subsets:
        match = [
            p
            for p in subset.ports
            if (p.name or "") == (port.name or "") or (single and len(subset.ports) == 1)
        ]
        for ep_port in match[:1]:
            if ep_port.protocol != port.protocol:
                continue
            for addr in subset.addresses:
                key = (addr.ip, ep_port.port)
                if key not in seen:
                    seen[key] = Backend(
                        addr.ip,
                        ep_port.port,
                        weights.get(addr.ip, 1),
                        alternates.get(addr.ip, ()),
                    )
    return tuple(sorted(seen.values(), key=lambda b: (b.ip, b.port)))


def service_rules(
    services: Iterable[Service],
    endpoints: Mapping[str, Endpoints],
    subnets: Mapping[str, str] | None = None,
) -> tuple[ServiceRule, ...]:
    """One rule per (Service, port) with a ClusterIP or a NodePort. ``endpoints`` is keyed
    ``namespace/name``; ``subnets`` maps network names to their ranges (for pods on several
    networks). Headless and ExternalName Services have no virtual IP: skipped."""
    rules: list[ServiceRule] = []
    for svc in services:
        spec = svc.spec
        vip = spec.cluster_ip if spec.cluster_ip not in (None, "", "None") else None
        nodeport_type = spec.type in ("NodePort", "LoadBalancer")
        if spec.type == "ExternalName" or (vip is None and not nodeport_type):
            continue
        balance = _BALANCE.get(svc.metadata.annotations.get(BALANCE_ANNOTATION, ""), "roundrobin")
        affinity: int | None = None
        if spec.session_affinity == "ClientIP":
            cfg = spec.session_affinity_config
            affinity = (
                cfg.client_ip.timeout_seconds
                if cfg is not None and cfg.client_ip is not None
                else DEFAULT_AFFINITY_TIMEOUT
            )
        ep = endpoints.get(svc.key)
        for port in spec.ports:
            proto = _protocol(port.protocol)
            if proto is None:
                continue
            try:
                rules.append(
                    ServiceRule(
                        key=f"{svc.key}:{port.name or port.port}",
                        cluster_ip=vip,
                        port=port.port,
                        protocol=proto,
                        backends=backends_for(port, len(spec.ports) == 1, ep, subnets),
                        balance=balance,
                        affinity_timeout=affinity,
                        node_port=port.node_port if nodeport_type else None,
                    )
                )
            except ValueError as exc:  # bad stored data must not stop every other service
                log.warning("service %s port %s left out: %s", svc.key, port.port, exc)
    return tuple(sorted(rules, key=lambda r: (r.key, r.protocol)))


def host_ports(pods: Iterable[Pod]) -> tuple[HostPort, ...]:
    """Every ``hostPort`` of the given pods (this node's), to the pod's primary address."""
    out: dict[tuple[str, int], HostPort] = {}
    for pod in pods:
        ip = pod.status.pod_ip
        if not ip or pod.spec.host_network or pod.metadata.deletion_timestamp is not None:
            continue
        for c in pod.spec.containers:
            for p in c.ports:
                proto = _protocol(p.protocol)
                if p.host_port and proto is not None and (proto, p.host_port) not in out:
                    out[(proto, p.host_port)] = HostPort(p.host_port, proto, ip, p.container_port)
    return tuple(sorted(out.values(), key=lambda h: (h.protocol, h.host_port)))


def network_rules(
    networks: Iterable[Network], bridge_name: Callable[[str], str]
) -> tuple[NetworkRule, ...]:
    return tuple(
        NetworkRule(n.name, n.spec.subnet, bridge_name(n.name), bool(n.spec.internal))
        for n in sorted(networks, key=lambda n: n.name)
        if n.spec.subnet
    )


def primary_address(pod: Pod) -> str | None:
    """The pod's address on its first network (its ``podIP``), without the prefix."""
    got = parse_addresses(pod.metadata.annotations.get(ADDRESSES_ANNOTATION))
    first = pod_networks(pod.spec.networks)[0]
    return got[first].split("/", 1)[0] if first in got else None
