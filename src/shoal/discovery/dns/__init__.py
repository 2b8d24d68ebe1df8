"""shoal's DNS interface to the catalog: Consul's names (``web.service.consul``, SRV,
``NODE.node.consul``, ``HEXIP.addr.consul``) and Kubernetes' (``NAME.NAMESPACE.svc.cluster.local``:
a Service's cluster IP and its ports' SRV records, or a headless Service's Ready pods).

:func:`build_table` renders every answer of a :class:`~shoal.discovery.Catalog` snapshot
into an :class:`AnswerTable` (the cold path); :class:`DNSServer` serves one over UDP and TCP,
doing a cache lookup and a copy per repeated query, and keeps it current incrementally as
:meth:`DNSServer.update` hands it new snapshots.
"""

from shoal.discovery.dns._answers import AnswerTable, build_table
from shoal.discovery.dns._config import DNSConfig
from shoal.discovery.dns._server import DNSServer

__all__ = [
    "AnswerTable",
    "DNSConfig",
    "DNSServer",
    "build_table",
]
