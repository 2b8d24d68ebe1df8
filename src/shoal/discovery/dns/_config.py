"""How shoal's DNS answers are shaped: :class:`DNSConfig`, Consul's ``dns_config`` in small."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from shoal.errors import ConfigError


@dataclass(frozen=True)
class DNSConfig:
    """DNS settings; the defaults are Consul's except ``enable_truncate`` (see there).

    Raises :class:`~shoal.errors.ConfigError` naming the field when a value is out of range.
    """

    domain: str = "consul"
    """The zone for ``.service``, ``.node`` and ``.addr`` names."""
    datacenter: str = "dc1"
    """Names are answered with and without this label (``web.service.dc1.consul``)."""
    cluster_domain: str = "cluster.local"
    """The zone for Kubernetes-style ``NAME.NAMESPACE.svc`` names."""
    ttl: int = 0
    """TTL in seconds of service records (A/AAAA/SRV and the SRV targets' addresses) for
    services ``service_ttl`` does not name, and of node records unless ``node_ttl`` is set.
    Consul's default 0 means: always ask again."""
    node_ttl: int | None = None
    """TTL of ``NODE.node.consul`` records (Consul's ``node_ttl``); None: ``ttl``."""
    service_ttl: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Per-service TTLs (Consul's ``service_ttl``): keys are service names, or prefixes ending
    in ``*`` (``"web*"``, ``"*"``); an exact name wins, then the longest prefix, then ``ttl``."""
    only_passing: bool = False
    """Answer only passing instances. By default warning counts as passing, as in Consul;
    critical instances are never answered."""
    rotations: int = 4
    """How many orders of a multi-record answer are handed out round robin: shoal's stand-in
    for Consul's per-answer shuffle, which would make every answer a cache miss. A truncated
    answer gets as many more orders (up to 64) as it takes for every record to be served."""
    max_udp_payload: int = 4096
    """The most this server sends over UDP to an EDNS client (and advertises in its OPT)."""
    enable_truncate: bool = True
    """Set the TC bit on a UDP answer that had to leave records out (too many for the client's
    size, or over ``udp_answer_limit``), so clients retry over TCP for the rest. Consul
    defaults to false (it trims silently); shoal defaults to true because its issue asks for
    the TCP fallback."""
    udp_answer_limit: int = 3
    """At most this many answers (capped at 8, as Consul does) go to a UDP client that did not
    offer more than 512 bytes with EDNS0; larger EDNS buffers are only limited by size."""
    a_record_limit: int = 0
    """At most this many A/AAAA records per answer over any transport, without TC (Consul's
    ``a_record_limit``); 0: no limit."""
    soa_mname: str = "ns"
    """SOA primary name server, relative to each zone."""
    soa_rname: str = "hostmaster"
    """SOA responsible mailbox, relative to each zone."""
    soa_serial: int = 1
    """SOA serial: constant, since nothing transfers these zones."""
    soa_refresh: int = 3600
    """SOA refresh, seconds."""
    soa_retry: int = 600
    """SOA retry, seconds."""
    soa_expire: int = 86400
    """SOA expire, seconds."""
    soa_minimum: int = 0
    """Negative-caching TTL (also the SOA record's own TTL), seconds (Consul's ``soa.min_ttl``)."""

    def __post_init__(self) -> None:
        u32 = (0, 2**32 - 1)
        ranges: dict[str, tuple[int, int]] = {
            "ttl": u32,
            "rotations": (1, 64),
            "max_udp_payload": (512, 65535),
            "udp_answer_limit": (1, 65535),
            "a_record_limit": (0, 65535),
            "soa_serial": u32,
            "soa_refresh": u32,
            "soa_retry": u32,
            "soa_expire": u32,
            "soa_minimum": u32,
        }
        for name, (low, high) in ranges.items():
            _check_int(f"dns.{name}", getattr(self, name), low, high)
        if self.node_ttl is not None:
            _check_int("dns.node_ttl", self.node_ttl, *u32)
        for key, value in self.service_ttl.items():
            if not isinstance(key, str) or not key or "*" in key[:-1]:
                raise ConfigError(
                    f"dns.service_ttl: key {key!r} must be a service name or a prefix ending in *"
                )
            _check_int(f"dns.service_ttl[{key!r}]", value, *u32)
        for name in ("domain", "cluster_domain"):
            value = getattr(self, name)
            labels = value.strip(".").split(".")
            if not value.strip(".") or not all(0 < len(x) <= 63 and x.isascii() for x in labels):
                raise ConfigError(f"dns.{name}: {value!r} is not a DNS name")
        object.__setattr__(self, "service_ttl", MappingProxyType(dict(self.service_ttl)))

    def ttl_for_service(self, service: str) -> int:
        """The TTL of ``service``'s records: exact ``service_ttl`` entry, else the longest
        matching ``prefix*`` entry, else ``ttl``."""
        table = self.service_ttl
        if not table:
            return self.ttl
        exact = table.get(service)
        if exact is not None:
            return exact
        best, best_len = self.ttl, -1
        for key, value in table.items():
            if key.endswith("*") and service.startswith(key[:-1]) and len(key) > best_len:
                best, best_len = value, len(key)
        return best

    @property
    def node_record_ttl(self) -> int:
        """The TTL of node records."""
        return self.ttl if self.node_ttl is None else self.node_ttl


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name}: {value!r} is not an integer in {low}..{high}")
