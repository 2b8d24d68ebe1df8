"""Pure translation of API objects into catalog entries.

Three sources make up the catalog, as in a Kubernetes cluster synced to Consul:

* shoal Nodes become catalog nodes, each with a ``serfHealth`` check that follows the node's
  Ready condition (Consul's own node-liveness check has that ID);
* ServiceRegistration and HealthCheck objects, written by the Consul API, become instances
  and checks exactly as registered;
* a Service with Endpoints becomes one instance per endpoint address, named after the
  Service, with a readiness check that passes exactly when the pod is Ready (the Endpoints
  controller files Ready pods under ``addresses`` and the others under
  ``notReadyAddresses``). Tags come from the ``consul.hashicorp.com/service-tags``
  annotation (comma-separated, as consul-k8s reads it); meta is the Service's labels plus
  ``consul.hashicorp.com/service-meta-KEY`` annotations.

A Service with a cluster IP is also a :class:`ClusterIPService`: DNS answers its
``NAME.NAMESPACE.svc`` name with that virtual IP, as kube-dns does, rather than with the pods
behind it (which ``NAME.service.consul`` keeps answering); a headless Service has none.

Functions here take the objects' JSON dicts: the registry applies thousands of events per
second and does not need a pydantic round trip for each.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

from shoal.discovery._catalog import Check, HealthStatus, Instance, Node
from shoal.discovery._source import revision

JSONObject = dict[str, Any]

TAGS_ANNOTATION = "consul.hashicorp.com/service-tags"
META_ANNOTATION_PREFIX = "consul.hashicorp.com/service-meta-"
POD_CHECK_NAME = "Kubernetes Health Check"
NODE_CHECK_ID = "serfHealth"

_STATUSES = ("passing", "warning", "critical")


def node_address(obj: JSONObject) -> str:
    """The InternalIP of a shoal Node (else its first address, else 127.0.0.1)."""
    addresses = (obj.get("status") or {}).get("addresses") or []
    for addr in addresses:
        if addr.get("type") == "InternalIP" and addr.get("address"):
            return str(addr["address"])
    for addr in addresses:
        if addr.get("address"):
            return str(addr["address"])
    return "127.0.0.1"


def node_entry(obj: JSONObject) -> tuple[Node, Check]:
    """A shoal Node as a catalog node and its ``serfHealth`` check."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    rv = revision(obj)
    node = Node(
        name=name,
        address=node_address(obj),
        id=str(meta.get("uid", "")),
        meta=MappingProxyType(dict(meta.get("labels") or {})),
        create_index=rv,
        modify_index=rv,
    )
    ready = next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"),
        None,
    )
    healthy = ready is not None and ready.get("status") == "True"
    check = Check(
        check_id=NODE_CHECK_ID,
        name="Serf Health Status",
        status="passing" if healthy else "critical",
        output="Agent alive and reachable"
        if healthy
        else f"Node {name} is not ready: {(ready or {}).get('message') or 'no heartbeat'}",
        node=name,
        create_index=rv,
        modify_index=rv,
    )
    return node, check


def local_node(name: str, address: str = "127.0.0.1") -> tuple[Node, Check]:
    """The control plane's own catalog node, for when it is not also a shoal Node."""
    return Node(name=name, address=address, id=name), Check(
        check_id=NODE_CHECK_ID,
        name="Serf Health Status",
        status="passing",
        output="Agent alive and reachable",
        node=name,
    )


def _state_map(obj: JSONObject) -> dict[str, JSONObject]:
    status = obj.get("status") or {}
    return {str(s.get("checkID")): s for s in status.get("checks") or []}


def _status_of(state: JSONObject | None) -> HealthStatus:
    value = (state or {}).get("status", "critical")
    return cast(HealthStatus, value if value in _STATUSES else "critical")


def check_from_definition(
    definition: Mapping[str, Any],
    state: Mapping[str, Any] | None,
    *,
    node: str,
    service_id: str,
    rv: int,
) -> Check:
    """A registered check with its latest state (critical with no output until first run,
    which is Consul's default initial status)."""
    return Check(
        check_id=str(definition.get("checkID", "")),
        name=str(definition.get("name", "")),
        status=_status_of(dict(state) if state else None),
        output=str((state or {}).get("output", "")),
        service_id=service_id,
        notes=str(definition.get("notes", "")),
        type=str(definition.get("type", "")),
        node=node,
        create_index=rv,
        modify_index=rv,
        definition=MappingProxyType(dict(definition)),
    )


def registration_instance(
    obj: JSONObject,
    default_node: str,
    extra_checks: Iterable[Check] = (),
    node_checks: Sequence[Check] = (),
) -> Instance:
    """A ServiceRegistration as an instance; ``extra_checks`` are HealthCheck objects that
    name its service ID, ``node_checks`` its node's checks."""
    spec = obj.get("spec") or {}
    rv = revision(obj)
    node = str(spec.get("node") or default_node)
    sid = str(spec.get("id", ""))
    states = _state_map(obj)
    own = [
        check_from_definition(
            d, states.get(str(d.get("checkID"))), node=node, service_id=sid, rv=rv
        )
        for d in spec.get("checks") or []
    ]
    weights = spec.get("weights") or {}
    return Instance(
        id=sid,
        service=str(spec.get("service", "")),
        node=node,
        address=str(spec.get("address", "")),
        port=int(spec.get("port") or 0),
        tags=tuple(spec.get("tags") or ()),
        meta=MappingProxyType(dict(spec.get("meta") or {})),
        checks=(*node_checks, *own, *extra_checks),
        create_index=rv,
        modify_index=rv,
        weights=(int(weights.get("passing", 1)), int(weights.get("warning", 1))),
        enable_tag_override=bool(spec.get("enableTagOverride", False)),
    )


def healthcheck_entry(obj: JSONObject, default_node: str) -> Check:
    """A HealthCheck object as a check (its service ID may be empty: a node check)."""
    spec = obj.get("spec") or {}
    return check_from_definition(
        spec,
        obj.get("status"),
        node=str(spec.get("node") or default_node),
        service_id=str(spec.get("serviceID", "")),
        rv=revision(obj),
    )


def _service_tags(annotations: Mapping[str, str]) -> tuple[str, ...]:
    raw = annotations.get(TAGS_ANNOTATION, "")
    return tuple(t.strip() for t in raw.split(",") if t.strip())


def _service_meta(service: JSONObject) -> dict[str, str]:
    meta = service.get("metadata") or {}
    result = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    for key, value in (meta.get("annotations") or {}).items():
        if key.startswith(META_ANNOTATION_PREFIX):
            result[key[len(META_ANNOTATION_PREFIX) :]] = str(value)
    return result


def instance_id(namespace: str, pod: str, service: str) -> str:
    """The catalog ID of a pod behind a Service: unique per (namespace, pod, service)."""
    return f"{namespace}-{pod}-{service}"


def _subset_port(subset: JSONObject, wanted: str | None) -> int:
    ports = subset.get("ports") or []
    for port in ports:
        if wanted is not None and port.get("name") == wanted:
            return int(port.get("port") or 0)
    return int(ports[0].get("port") or 0) if ports else 0


def endpoint_instances(
    service: JSONObject,
    endpoints: JSONObject | None,
    node_checks: Mapping[str, Sequence[Check]] = MappingProxyType({}),
) -> list[Instance]:
    """The instances of a shoal Service: one per endpoint address (Ready or not), at the
    Service's first port, healthy exactly when the pod is Ready."""
    if endpoints is None:
        return []
    meta = service.get("metadata") or {}
    name = str(meta.get("name", ""))
    namespace = str(meta.get("namespace", "default"))
    ports = (service.get("spec") or {}).get("ports") or []
    wanted = ports[0].get("name") if ports else None
    tags = _service_tags(meta.get("annotations") or {})
    svc_meta = MappingProxyType(_service_meta(service))
    rv = max(revision(service), revision(endpoints))
    result: list[Instance] = []
    seen: set[str] = set()
    for subset in endpoints.get("subsets") or []:
        port = _subset_port(subset, wanted)
        for ready, key in ((True, "addresses"), (False, "notReadyAddresses")):
            for addr in subset.get(key) or []:
                ref = addr.get("targetRef") or {}
                pod = str(ref.get("name") or addr.get("ip", ""))
                iid = instance_id(namespace, pod, name)
                if iid in seen:
                    continue
                seen.add(iid)
                node = str(addr.get("nodeName") or "")
                check = Check(
                    check_id=f"{iid}/kubernetes-health-check",
                    name=POD_CHECK_NAME,
                    status="passing" if ready else "critical",
                    output="Kubernetes health checks passing"
                    if ready
                    else f'Pod "{namespace}/{pod}" is not ready',
                    service_id=iid,
                    node=node,
                    create_index=rv,
                    modify_index=rv,
                )
                result.append(
                    Instance(
                        id=iid,
                        service=name,
                        node=node,
                        address=str(addr.get("ip", "")),
                        port=port,
                        tags=tags,
                        meta=svc_meta,
                        checks=(*node_checks.get(node, ()), check),
                        namespace=namespace,
                        create_index=rv,
                        modify_index=rv,
                    )
                )
    return result


@dataclass(frozen=True)
class ServicePortEntry:
    """One port of a Service, as DNS needs it for kube-dns' SRV records."""

    name: str
    """The port's name; empty for an unnamed port (it has no ``_NAME._PROTO`` record)."""
    protocol: str
    """``tcp``, ``udp`` or ``sctp``: lowercased, as it appears in ``_NAME._PROTO``."""
    port: int
    """The Service's port (what clients connect to on the cluster IP), not the target port."""


@dataclass(frozen=True)
class ClusterIPService:
    """A Service reached through a virtual IP: ``NAME.NAMESPACE.svc.<cluster domain>``
    resolves to ``address`` whether or not pods are Ready behind it (kube-dns' rule)."""

    namespace: str
    name: str
    address: str
    """The Service's ``spec.clusterIP``, a valid IPv4 or IPv6 address."""
    ports: tuple[ServicePortEntry, ...] = ()


def cluster_ip_service(service: JSONObject) -> ClusterIPService | None:
    """``service`` (a Service's JSON) as a :class:`ClusterIPService`, or None when DNS
    should answer its pods instead: headless (``clusterIP`` ``None``), no cluster IP yet
    (absent or empty), ``ExternalName``, or a value that is not an IP address."""
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    address = spec.get("clusterIP")
    if spec.get("type") == "ExternalName" or not isinstance(address, str):
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None  # "None" (headless), "" or garbage
    ports = tuple(
        ServicePortEntry(
            str(p.get("name") or ""), str(p.get("protocol") or "TCP").lower(), int(p["port"])
        )
        for p in spec.get("ports") or []
        if isinstance(p, dict) and isinstance(p.get("port"), int)
    )
    return ClusterIPService(
        str(meta.get("namespace") or "default"), str(meta.get("name", "")), str(ip), ports
    )
