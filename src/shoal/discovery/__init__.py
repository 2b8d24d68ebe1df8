"""Service discovery: the registry of service instances and their health, the
Consul-compatible HTTP API, the DNS server and the client library.

Layering: imports ``client``, ``api``, ``_util`` and ``errors``; never ``store``,
``apiserver`` or ``runtime``. The catalog core (:class:`Catalog`) is pure: it answers from an
immutable snapshot, so the HTTP API, DNS and the client library share one set of rules. The
live registry (:class:`RegistryState`) reads and writes objects through an
:class:`ObjectSource`, which the API server provides.
"""

from shoal.discovery._catalog import Catalog, Check, HealthStatus, Instance, Node, worst_status
from shoal.discovery._serve import RegistryConfig, RunningRegistry, serve_registry
from shoal.discovery._source import ObjectSource, SourceEvent
from shoal.discovery._state import RegistryState
from shoal.discovery.client import (
    Discovery,
    DiscoveryError,
    LeastRequests,
    Random,
    RoundRobin,
    ServiceInstance,
    Strategy,
)

__all__ = [
    "Catalog",
    "Check",
    "Discovery",
    "DiscoveryError",
    "HealthStatus",
    "Instance",
    "LeastRequests",
    "Node",
    "ObjectSource",
    "Random",
    "RegistryConfig",
    "RegistryState",
    "RoundRobin",
    "RunningRegistry",
    "ServiceInstance",
    "SourceEvent",
    "Strategy",
    "serve_registry",
    "worst_status",
]
