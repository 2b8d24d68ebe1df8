"""What the discovery client hands to callers: :class:`ServiceInstance`, built from the
``api.ServiceEntry`` list of ``/v1/health/service/NAME``.

Parsing is pure and separate from the watch that fetches, so the rules (an empty service
address means the node's address, as Consul's DNS and clients do; an instance's health is
its worst check) are tested without a server, and a malformed answer from a registry becomes
one :class:`DiscoveryError` naming the field at fault instead of a ``KeyError`` that would
kill the watch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from shoal.errors import ShoalError

Status = Literal["passing", "warning", "critical"]
_SEVERITY: dict[str, int] = {"passing": 0, "warning": 1, "critical": 2}


class DiscoveryError(ShoalError):
    """A service could not be resolved: the registry was unreachable or answered an error on
    the first lookup, it answered something that is not a Consul health list, or the service
    has no healthy instance. The message names the service and the cause; retry later, or
    check the registry address (``Discovery(address=...)`` / ``CONSUL_HTTP_ADDR``)."""


@dataclass(frozen=True)
class ServiceInstance:
    """One healthy (or, with ``passing_only=False``, not critical) instance of a service."""

    id: str
    service: str
    address: str
    """The service's address, or its node's when the registration left it empty."""
    port: int
    node: str = ""
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    status: Status = "passing"
    """The worst of the instance's checks (node checks included), as Consul rates it."""

    @property
    def key(self) -> str:
        """``node/id``: Consul service IDs are unique per agent only, so two nodes may each
        run a ``web-1``; in-flight counts and pick strategies key instances by this."""
        return f"{self.node}/{self.id}"

    @property
    def hostport(self) -> str:
        """``host:port``, with an IPv6 address in brackets."""
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


def _worst(checks: list[Any], where: str) -> Status:
    worst: Status = "passing"
    for n, check in enumerate(checks):
        status = check.get("Status") if isinstance(check, dict) else None
        if status not in _SEVERITY:
            raise DiscoveryError(f"{where}.Checks[{n}].Status: expected passing, warning or "
                                 f"critical, got {status!r}")  # fmt: skip
        if _SEVERITY[status] > _SEVERITY[worst]:
            worst = status
    return worst


def _instance(entry: Any, where: str) -> ServiceInstance:
    if not isinstance(entry, dict):
        raise DiscoveryError(f"{where}: expected an object, got {type(entry).__name__}")
    svc = entry.get("Service")
    if not isinstance(svc, dict):
        raise DiscoveryError(f"{where}.Service: expected an object, got {svc!r}")
    node = entry.get("Node") or {}
    if not isinstance(node, dict):
        raise DiscoveryError(f"{where}.Node: expected an object, got {node!r}")
    checks = entry.get("Checks") or []
    if not isinstance(checks, list):
        raise DiscoveryError(f"{where}.Checks: expected a list, got {checks!r}")
    sid, name, port = svc.get("ID"), svc.get("Service"), svc.get("Port", 0)
    if not isinstance(sid, str) or not sid:
        raise DiscoveryError(f"{where}.Service.ID: expected a non-empty string, got {sid!r}")
    if not isinstance(name, str):
        raise DiscoveryError(f"{where}.Service.Service: expected a string, got {name!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise DiscoveryError(f"{where}.Service.Port: expected a port number, got {port!r}")
    tags = svc.get("Tags") or []
    meta = svc.get("Meta") or {}
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DiscoveryError(f"{where}.Service.Tags: expected a list of strings, got {tags!r}")
    if not isinstance(meta, dict):
        raise DiscoveryError(f"{where}.Service.Meta: expected an object, got {meta!r}")
    return ServiceInstance(
        id=sid,
        service=name,
        address=str(svc.get("Address") or node.get("Address") or ""),
        port=port,
        node=str(node.get("Node") or ""),
        tags=tuple(tags),
        meta=MappingProxyType({str(k): str(v) for k, v in meta.items()}),
        status=_worst(checks, where),
    )


def parse_health_entries(
    body: Any, service: str, *, passing_only: bool = True
) -> list[ServiceInstance]:
    """Instances from a ``/v1/health/service/NAME`` body, sorted by (node, id) so round robin
    stays fair while the list changes.

    ``passing_only`` keeps only instances whose every check passes (what ``?passing`` asks the
    server for); otherwise critical ones are dropped and warning ones kept, as Consul's DNS
    does by default."""
    where = f'the health list of "{service}"'
    if not isinstance(body, list):
        raise DiscoveryError(f"{where}: expected a JSON list, got {type(body).__name__}")
    found = [_instance(e, f"{where}[{n}]") for n, e in enumerate(body)]
    allowed = ("passing",) if passing_only else ("passing", "warning")
    return sorted((i for i in found if i.status in allowed), key=lambda i: (i.node, i.id))
