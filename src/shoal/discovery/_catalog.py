"""The pure catalog core: an immutable snapshot of nodes, service instances and their checks.

Everything that answers "which instances of X are healthy" — the Consul-compatible HTTP API,
the DNS server, the client library — reads one of these snapshots. Building it does no I/O, so
the rules (an instance's health is its worst check, Consul's tag and passing filters) are
tested here once, without a server, and every reader agrees on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from shoal.errors import ConfigError

HealthStatus = Literal["passing", "warning", "critical"]

_SEVERITY: dict[str, int] = {"passing": 0, "warning": 1, "critical": 2}


def worst_status(statuses: Iterable[HealthStatus]) -> HealthStatus:
    """The most severe of ``statuses``; ``passing`` for none, as Consul treats a check-less
    service as healthy."""
    worst: HealthStatus = "passing"
    for status in statuses:
        if _SEVERITY[status] > _SEVERITY[worst]:
            worst = status
    return worst


@dataclass(frozen=True)
class Check:
    """One health check's latest result. ``service_id`` is empty for a node-level check."""

    check_id: str
    name: str
    status: HealthStatus
    output: str = ""
    service_id: str = ""
    notes: str = ""
    type: str = ""
    """``ttl``, ``http``, ``tcp``, ``script``; empty for checks shoal derives (pod readiness,
    node health)."""
    node: str = ""
    create_index: int = 0
    modify_index: int = 0
    definition: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.status not in _SEVERITY:
            raise ConfigError(
                f"check {self.check_id!r}: status {self.status!r} is not one of "
                "passing, warning, critical"
            )


@dataclass(frozen=True)
class Node:
    """A machine that runs instances; ``address`` is what ``NODE.node.consul`` resolves to."""

    name: str
    address: str
    id: str = ""
    meta: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    create_index: int = 0
    modify_index: int = 0


@dataclass(frozen=True)
class Instance:
    """One running copy of a service, as Consul's catalog entry for it.

    ``address`` may be empty: the instance then uses its node's address, as in Consul.
    ``checks`` holds the node's checks as well as the service's own, as a Consul health entry
    does, so a failing node makes its instances unhealthy.
    ``namespace`` is set for instances derived from a shoal Service (pods behind it) and makes
    them answer ``NAME.NAMESPACE.svc.cluster.local`` in DNS; instances registered through the
    Consul API have none. It is a field rather than a ``meta`` key so that user meta can never
    collide with it.
    """

    id: str
    service: str
    node: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    checks: tuple[Check, ...] = ()
    namespace: str | None = None
    create_index: int = 0
    modify_index: int = 0
    weights: tuple[int, int] = (1, 1)
    """(passing, warning) weights, as Consul's ``Weights``."""
    enable_tag_override: bool = False

    @property
    def status(self) -> HealthStatus:
        """The worst of this instance's checks (``passing`` when it has none)."""
        return worst_status(c.status for c in self.checks)

    def is_healthy(self, *, include_warning: bool = True) -> bool:
        """Passing, or warning when ``include_warning`` (Consul DNS's default)."""
        status = self.status
        return status == "passing" or (include_warning and status == "warning")


@dataclass(frozen=True)
class Catalog:
    """An immutable snapshot. Build it with :meth:`build`; readers never see it change."""

    _nodes: Mapping[str, Node]
    _by_service: Mapping[str, tuple[Instance, ...]]
    _node_checks: Mapping[str, tuple[Check, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @classmethod
    def build(
        cls,
        nodes: Iterable[Node],
        instances: Iterable[Instance],
        node_checks: Iterable[Check] = (),
    ) -> Catalog:
        """Index ``nodes`` and ``instances``; instances of a service are ordered by id.

        Raises :class:`~shoal.errors.ConfigError` naming the duplicate when two nodes share a
        name or two instances share an id, since either would make answers ambiguous.
        """
        node_map: dict[str, Node] = {}
        for node in nodes:
            if node.name in node_map:
                raise ConfigError(f"duplicate node name {node.name!r} in catalog")
            node_map[node.name] = node
        seen: set[str] = set()
        grouped: dict[str, list[Instance]] = {}
        for inst in instances:
            if inst.id in seen:
                raise ConfigError(f"duplicate service instance id {inst.id!r} in catalog")
            if not 0 <= inst.port <= 65535:
                raise ConfigError(f"instance {inst.id!r}: port {inst.port} is not in 0-65535")
            seen.add(inst.id)
            grouped.setdefault(inst.service, []).append(inst)
        by_service = {
            name: tuple(sorted(group, key=lambda i: i.id)) for name, group in grouped.items()
        }
        return cls(
            MappingProxyType(node_map), MappingProxyType(by_service), _group_checks(node_checks)
        )

    def replace(
        self,
        services: Mapping[str, Iterable[Instance]] | None = None,
        *,
        nodes: Iterable[Node] | None = None,
        node_checks: Iterable[Check] | None = None,
    ) -> Catalog:
        """A new snapshot with the instances of the services in ``services`` replaced (an
        empty group removes the service) and, when given, all nodes or all node checks.

        Unchanged services share their tuples with this snapshot, so a change costs the size
        of the change plus one dict copy, not a rebuild. Instance ids are trusted to be unique
        across services here; :meth:`build` is the checking constructor.
        """
        by_service = self._by_service
        if services:
            merged = dict(by_service)
            for name, group in services.items():
                ordered = tuple(sorted(group, key=lambda i: i.id))
                for inst in ordered:
                    if inst.service != name:
                        raise ConfigError(
                            f"instance {inst.id!r} is of service {inst.service!r}, not {name!r}"
                        )
                if ordered:
                    merged[name] = ordered
                else:
                    merged.pop(name, None)
            by_service = MappingProxyType(merged)
        node_map = self._nodes
        if nodes is not None:
            node_map = MappingProxyType({n.name: n for n in nodes})
        checks = self._node_checks if node_checks is None else _group_checks(node_checks)
        return Catalog(node_map, by_service, checks)

    def node_checks(self, node: str) -> tuple[Check, ...]:
        """The node-level checks of ``node`` (those with no service)."""
        return self._node_checks.get(node, ())

    def all_node_checks(self) -> list[Check]:
        """Every node-level check, ordered by node then check id."""
        return [c for _, group in sorted(self._node_checks.items()) for c in group]

    def has_service(self, name: str) -> bool:
        return name in self._by_service

    def services(self) -> dict[str, list[str]]:
        """Service name -> the sorted union of its instances' tags (``/v1/catalog/services``)."""
        return {
            name: sorted({tag for inst in group for tag in inst.tags})
            for name, group in sorted(self._by_service.items())
        }

    def instances(
        self,
        service: str,
        *,
        tag: str | None = None,
        passing_only: bool = False,
        include_warning: bool = True,
    ) -> list[Instance]:
        """Instances of ``service`` carrying ``tag`` (exact match, as Consul's HTTP API).

        With ``passing_only`` only healthy ones are kept; ``include_warning`` decides whether
        a warning counts as healthy (it does in Consul DNS by default, not in
        ``/v1/health/service?passing``, whose caller passes ``include_warning=False``).
        """
        result = []
        for inst in self._by_service.get(service, ()):
            if tag is not None and tag not in inst.tags:
                continue
            if passing_only and not inst.is_healthy(include_warning=include_warning):
                continue
            result.append(inst)
        return result

    def all_instances(self) -> list[Instance]:
        """Every instance, ordered by service then id."""
        return [inst for _, group in sorted(self._by_service.items()) for inst in group]

    def node(self, name: str) -> Node | None:
        """The node called ``name``, or None."""
        return self._nodes.get(name)

    def nodes(self) -> list[Node]:
        """All nodes, ordered by name."""
        return [self._nodes[name] for name in sorted(self._nodes)]

    def instance_address(self, inst: Instance) -> str:
        """Where to reach ``inst``: its own address, else its node's (empty if neither)."""
        if inst.address:
            return inst.address
        node = self._nodes.get(inst.node)
        return node.address if node is not None else ""


def _group_checks(checks: Iterable[Check]) -> Mapping[str, tuple[Check, ...]]:
    grouped: dict[str, list[Check]] = {}
    for check in checks:
        grouped.setdefault(check.node, []).append(check)
    return MappingProxyType(
        {node: tuple(sorted(group, key=lambda c: c.check_id)) for node, group in grouped.items()}
    )
