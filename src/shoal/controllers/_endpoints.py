"""The Endpoints controller: for every Service with a selector, an Endpoints object of the
same name listing the pods behind it — Ready ones in ``addresses``, the others in
``notReadyAddresses`` — with the port each pod actually listens on.

Follows Kubernetes' ``pkg/controller/endpoint``. One shoal twist: the process driver maps a
container's ports to free host ports and reports them in
``status.containerStatuses[].ports[].hostPort`` (``podIP`` is then the host's IP), so two pods
of one Service may listen on different ports. Subsets are therefore packed as Kubernetes'
``RepackSubsets`` does: each subset is a set of addresses sharing one set of ports.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shoal._util import Clock
from shoal.api import (
    ADDRESSES_ANNOTATION,
    ENDPOINT_ADDRESSES_ANNOTATION,
    WEIGHT_ANNOTATION,
    WEIGHTS_ANNOTATION,
    EndpointAddress,
    EndpointPort,
    Endpoints,
    EndpointSubset,
    ObjectMeta,
    ObjectReference,
    Pod,
    Selector,
    Service,
    ServicePort,
    parse_addresses,
    pod_networks,
)
from shoal.client import Client
from shoal.controllers._base import Controller, SharedInformers
from shoal.controllers._pods import is_ready, is_terminal
from shoal.errors import AlreadyExistsError, NotFoundError

log = logging.getLogger("shoal.controllers.endpoints")

MANAGED_BY = "shoal.dev/managed-by"
"""Annotation on the Endpoints this controller writes. Only those are deleted when their
Service is gone: Endpoints a user wrote for a selector-less Service (perhaps before the
Service itself) are not ours to remove."""


# --- pure part ---------------------------------------------------------------------------------


def container_port_for(pod: Pod, port: ServicePort) -> int | None:
    """The containerPort a Service port targets on ``pod`` (``FindPort``): a number as is,
    a name looked up among the pod's declared container ports (same protocol)."""
    target = port.target_port if port.target_port is not None else port.port
    if isinstance(target, int):
        return target
    if target.isdigit():
        return int(target)
    for container in pod.spec.containers:
        for cp in container.ports:
            if cp.name == target and cp.protocol == port.protocol:
                return cp.container_port
    return None


def listening_port(pod: Pod, container_port: int, protocol: str) -> int:
    """Where the pod really accepts ``container_port``: the hostPort the runtime reported
    for it, else the container port itself."""
    for status in pod.status.container_statuses:
        for cp in status.ports:
            if cp.container_port == container_port and cp.protocol == protocol and cp.host_port:
                return cp.host_port
    return container_port


def belongs_in_endpoints(pod: Pod) -> bool:
    """Has an IP, is not finished and is not terminating (``ShouldPodBeInEndpoints``)."""
    return (
        bool(pod.status.pod_ip) and not is_terminal(pod) and pod.metadata.deletion_timestamp is None
    )


@dataclass(frozen=True)
class PodEndpoint:
    """One pod's contribution: its address, readiness and the ports it serves."""

    address: EndpointAddress
    ready: bool
    ports: tuple[EndpointPort, ...]


def pod_endpoint(pod: Pod, service: Service) -> PodEndpoint | None:
    if not belongs_in_endpoints(pod):
        return None
    assert pod.status.pod_ip is not None
    address = EndpointAddress(
        ip=pod.status.pod_ip,
        node_name=pod.spec.node_name,
        target_ref=ObjectReference(
            kind="Pod",
            namespace=pod.namespace,
            name=pod.metadata.name,
            uid=pod.metadata.uid,
        ),
    )
    ports: list[EndpointPort] = []
    for sp in service.spec.ports:
        cport = container_port_for(pod, sp)
        if cport is None:
            continue  # this pod does not serve this port (Kubernetes skips it too)
        ports.append(
            EndpointPort(
                name=sp.name, port=listening_port(pod, cport, sp.protocol), protocol=sp.protocol
            )
        )
    if service.spec.ports and not ports:
        return None
    return PodEndpoint(address, is_ready(pod), tuple(ports))


def _port_key(p: EndpointPort) -> tuple[str, int, str]:
    return (p.name or "", p.port, p.protocol)


def _addr_key(a: EndpointAddress) -> tuple[str, str]:
    return (a.ip, (a.target_ref.uid or "") if a.target_ref else "")


def repack_subsets(entries: Iterable[PodEndpoint]) -> list[EndpointSubset]:
    """Kubernetes' ``RepackSubsets``: map each port to the addresses offering it, then group
    ports offered by exactly the same addresses into one subset. The result is canonical
    (sorted), so comparing it with what is stored tells whether a write is needed."""
    addresses: dict[tuple[str, str, bool], tuple[EndpointAddress, bool]] = {}
    by_port: dict[tuple[str, int, str] | None, set[tuple[str, str, bool]]] = {}
    ports: dict[tuple[str, int, str], EndpointPort] = {}
    for e in entries:
        akey = (*_addr_key(e.address), e.ready)
        addresses[akey] = (e.address, e.ready)
        if not e.ports:
            by_port.setdefault(None, set()).add(akey)
        for p in e.ports:
            pkey = _port_key(p)
            ports[pkey] = p
            by_port.setdefault(pkey, set()).add(akey)
    groups: dict[frozenset[tuple[str, str, bool]], list[tuple[str, int, str]]] = {}
    for port_or_none, offered_by in by_port.items():
        group = groups.setdefault(frozenset(offered_by), [])
        if port_or_none is not None:
            group.append(port_or_none)
    subsets: list[EndpointSubset] = []
    for akeys, pkeys in groups.items():
        ready = sorted((k for k in akeys if k[2]), key=lambda k: k[:2])
        not_ready = sorted((k for k in akeys if not k[2]), key=lambda k: k[:2])
        subsets.append(
            EndpointSubset(
                addresses=[addresses[k][0] for k in ready],
                not_ready_addresses=[addresses[k][0] for k in not_ready],
                ports=[ports[k] for k in sorted(pkeys)],
            )
        )

    def order(s: EndpointSubset) -> tuple[object, ...]:
        first = (s.addresses or s.not_ready_addresses)[0]
        return (tuple(_port_key(p) for p in s.ports), _addr_key(first))

    return sorted(subsets, key=order)


_OURS = (WEIGHTS_ANNOTATION, ENDPOINT_ADDRESSES_ANNOTATION)
"""Endpoints annotations this controller derives from the pods."""


def endpoint_weights(service: Service, pods: Sequence[Pod]) -> str:
    """The weights annotation for ``service``'s Endpoints ("" when no pod sets a weight)."""
    selector = Selector.from_labels(service.spec.selector)
    weights: dict[str, int] = {}
    for pod in pods:
        raw = pod.metadata.annotations.get(WEIGHT_ANNOTATION)
        if raw is None or not pod.status.pod_ip or not selector.matches(pod.metadata.labels):
            continue
        try:
            weight = int(raw)
        except ValueError:
            continue  # the API server does not check annotations; a bad one weighs 1
        if weight >= 1 and weight != 1:
            weights[pod.status.pod_ip] = weight
    return json.dumps(weights, sort_keys=True) if weights else ""


def endpoint_addresses(service: Service, pods: Sequence[Pod]) -> str:
    """The other-network addresses annotation ("" when no selected pod has any): for each
    selected pod on several networks, its address on every network but the first."""
    selector = Selector.from_labels(service.spec.selector)
    found: dict[str, dict[str, str]] = {}
    for pod in pods:
        if not pod.status.pod_ip or not selector.matches(pod.metadata.labels):
            continue
        got = parse_addresses(pod.metadata.annotations.get(ADDRESSES_ANNOTATION))
        others = {
            net: got[net].split("/", 1)[0]
            for net in pod_networks(pod.spec.networks)[1:]
            if net in got
        }
        if others:
            found[pod.status.pod_ip] = others
    return json.dumps(found, sort_keys=True) if found else ""


def build_subsets(service: Service, pods: Sequence[Pod]) -> list[EndpointSubset]:
    """The subsets ``service``'s Endpoints should hold, given the pods of its namespace."""
    selector = Selector.from_labels(service.spec.selector)
    entries = [
        e
        for pod in pods
        if selector.matches(pod.metadata.labels) and (e := pod_endpoint(pod, service)) is not None
    ]
    return repack_subsets(entries)


# --- the controller ----------------------------------------------------------------------------


class EndpointsController(Controller):
    name = "endpoints-controller"

    def __init__(
        self,
        client: Client,
        informers: SharedInformers,
        *,
        workers: int = 2,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(client, workers=workers, clock=clock)
        self.informers = informers
        self.svc_informer = informers.services
        self.pod_informer = informers.pods
        self.ep_informer = informers.endpoints
        self.svc_informer.add_handler(self._on_service)
        self.pod_informer.add_handler(self._on_pod)
        self.ep_informer.add_handler(self._on_endpoints)

    def _on_service(self, _kind: str, old: Service | None, new: Service | None) -> None:
        svc = new or old
        assert svc is not None
        self.enqueue(svc.key)

    def _on_endpoints(self, kind: str, old: Endpoints | None, new: Endpoints | None) -> None:
        # Someone else changed or deleted an Endpoints we manage (or one whose Service is
        # gone): reconcile puts it right.
        ep = new or old
        assert ep is not None
        self.enqueue(ep.key)

    def _on_pod(self, _kind: str, old: Pod | None, new: Pod | None) -> None:
        pod = new or old
        assert pod is not None
        labels = [p.metadata.labels for p in (old, new) if p is not None]
        for svc in self.informers.in_namespace(self.svc_informer, pod.namespace):
            if not svc.spec.selector:
                continue
            sel = Selector.from_labels(svc.spec.selector)
            if any(sel.matches(lab) for lab in labels):
                self.enqueue(svc.key)

    async def reconcile(self, key: str) -> None:
        svc = self.svc_informer.get(key)
        current = self.ep_informer.get(key)
        if svc is None:
            if current is not None and current.metadata.annotations.get(MANAGED_BY) == self.name:
                namespace, _, name = key.partition("/")
                with contextlib.suppress(NotFoundError):
                    await self.client.endpoints.delete(name, namespace, uid=current.metadata.uid)
            return
        if not svc.spec.selector:
            return  # a Service without a selector: its Endpoints are the user's to write
        pods = self.informers.in_namespace(self.pod_informer, svc.namespace)
        subsets = build_subsets(svc, pods)
        labels = dict(svc.metadata.labels)
        annotations = {MANAGED_BY: self.name}
        weights = endpoint_weights(svc, pods)
        if weights:
            annotations[WEIGHTS_ANNOTATION] = weights
        others = endpoint_addresses(svc, pods)
        if others:
            annotations[ENDPOINT_ADDRESSES_ANNOTATION] = others
        if current is None:
            ep = Endpoints(
                metadata=ObjectMeta(
                    name=svc.name,
                    namespace=svc.namespace,
                    labels=labels,
                    annotations=annotations,
                ),
                subsets=subsets,
            )
            try:
                await self.client.endpoints.create(ep)
            except AlreadyExistsError:
                # Our cache has not seen it yet; its ADDED event re-queues this key.
                return
            return
        theirs = current.metadata.annotations
        if (
            current.metadata.labels == labels
            and theirs.get(MANAGED_BY) == self.name
            and all(theirs.get(k) == annotations.get(k) for k in _OURS)
            and [s.to_dict() for s in current.subsets] == [s.to_dict() for s in subsets]
        ):
            return
        updated = current.model_copy(deep=True)
        updated.metadata.labels = labels
        for key in _OURS:
            updated.metadata.annotations.pop(key, None)
        updated.metadata.annotations.update(annotations)
        updated.subsets = subsets
        await self.client.endpoints.update(updated)
