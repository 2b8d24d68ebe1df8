"""The table of kinds: names, REST paths, scope and model class, shared by the API server,
the client and the CLI so that all three agree on how a kind is addressed."""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal.api._apps import Deployment, ReplicaSet
from shoal.api._consul import HealthCheck, KVPair, ServiceRegistration
from shoal.api._core import Endpoints, Event, Namespace, Node, Pod, Service
from shoal.api._meta import Resource
from shoal.api._networking import Network


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    singular: str
    group: str
    """"" for the core group, else e.g. "apps"."""
    version: str
    namespaced: bool
    model: type[Resource]
    short_names: tuple[str, ...] = ()
    subresources: frozenset[str] = field(default_factory=frozenset)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        """ "/api/v1" or "/apis/apps/v1"."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def collection_path(self, namespace: str | None = None) -> str:
        """The list/create path; namespace None on a namespaced kind lists all namespaces."""
        if self.namespaced and namespace:
            return f"{self.prefix}/namespaces/{namespace}/{self.plural}"
        return f"{self.prefix}/{self.plural}"

    def object_path(self, name: str, namespace: str | None = None) -> str:
        return f"{self.collection_path(namespace)}/{name}"


KINDS: tuple[KindInfo, ...] = (
    KindInfo("Namespace", "namespaces", "namespace", "", "v1", False, Namespace, ("ns",),
             frozenset({"status"})),
    KindInfo("Node", "nodes", "node", "", "v1", False, Node, ("no",), frozenset({"status"})),
    KindInfo("Pod", "pods", "pod", "", "v1", True, Pod, ("po",),
             frozenset({"status", "binding", "log"})),
    KindInfo("Service", "services", "service", "", "v1", True, Service, ("svc",),
             frozenset({"status"})),
    KindInfo("Endpoints", "endpoints", "endpoints", "", "v1", True, Endpoints, ("ep",)),
    KindInfo("Event", "events", "event", "", "v1", True, Event, ("ev",)),
    KindInfo("Deployment", "deployments", "deployment", "apps", "v1", True, Deployment,
             ("deploy",), frozenset({"status", "scale"})),
    KindInfo("ReplicaSet", "replicasets", "replicaset", "apps", "v1", True, ReplicaSet,
             ("rs",), frozenset({"status", "scale"})),
    KindInfo("ServiceRegistration", "serviceregistrations", "serviceregistration",
             "consul.shoal.dev", "v1", False, ServiceRegistration, ("sreg",),
             frozenset({"status"})),
    KindInfo("HealthCheck", "healthchecks", "healthcheck", "consul.shoal.dev", "v1", False,
             HealthCheck, ("hc",), frozenset({"status"})),
    KindInfo("KVPair", "kvpairs", "kvpair", "consul.shoal.dev", "v1", False, KVPair, ("kv",)),
    KindInfo("Network", "networks", "network", "networking.shoal.dev", "v1", False, Network,
             ("net",), frozenset({"status"})),
)  # fmt: skip

_BY_KIND = {k.kind: k for k in KINDS}
_BY_PLURAL = {k.plural: k for k in KINDS}
_BY_ANY: dict[str, KindInfo] = {}
for _k in KINDS:
    for _n in (_k.kind.lower(), _k.plural, _k.singular, *_k.short_names):
        _BY_ANY[_n] = _k


def kind_info(kind: str) -> KindInfo:
    """By exact Kind ("Pod"). Raises KeyError."""
    return _BY_KIND[kind]


def kind_by_plural(plural: str) -> KindInfo | None:
    return _BY_PLURAL.get(plural)


def resolve_kind(name: str) -> KindInfo | None:
    """What a user may type: "pods", "pod", "po", "Pod", "deploy", "deployments.apps"."""
    key = name.lower().split(".", 1)[0]
    return _BY_ANY.get(key)
