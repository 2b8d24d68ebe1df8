"""shoal's DNS interface to the catalog: Consul's names (``web.service.consul``, SRV,
``NODE.node.consul``) and Kubernetes' (``NAME.NAMESPACE.svc.cluster.local``).

:func:`build_table` renders every answer from a :class:`~shoal.discovery.Catalog` snapshot
(the cold path); :class:`DNSServer` serves them over UDP and TCP, doing only a lookup and a
byte splice per query.
"""

from shoal.discovery.dns._records import (
    AnswerTable,
    DNSConfig,
    build_table,
    merge_tables,
    service_table,
)
from shoal.discovery.dns._server import DNSServer

__all__ = [
    "AnswerTable",
    "DNSConfig",
    "DNSServer",
    "build_table",
    "merge_tables",
    "service_table",
]
