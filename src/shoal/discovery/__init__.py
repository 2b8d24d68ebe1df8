"""Service discovery: the catalog of service instances and their health, and its DNS server.

Layering: imports ``client``, ``api``, ``_util`` and ``errors``; never ``store``,
``apiserver`` or ``runtime``. The catalog core (:class:`Catalog`) is pure: it answers from an
immutable snapshot, so the HTTP API, DNS and the client library share one set of rules.
"""

from shoal.discovery._catalog import Catalog, Check, HealthStatus, Instance, Node, worst_status

__all__ = ["Catalog", "Check", "HealthStatus", "Instance", "Node", "worst_status"]
