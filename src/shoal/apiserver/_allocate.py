"""Allocation at admission, as Kubernetes' API server does for Services: a ClusterIP from the
service range, NodePorts from 30000-32767, and (shoal's own) a subnet for a Network that
names none.

The stored objects are the only record of what is taken, so nothing can leak or be handed
out twice across restarts. One lock serialises "read what is taken, then write": two
concurrent creates can never pick the same address.
"""

from __future__ import annotations

import asyncio
from typing import Any

from shoal.api import DEFAULT_NETWORK, DEFAULT_NETWORK_SUBNET, KindInfo
from shoal.errors import FieldError, InvalidError
from shoal.network._ipam import (
    SERVICE_CIDR,
    ExhaustedError,
    cluster_ip,
    dns_vip,
    in_range,
    network_subnet,
    node_port,
    overlapping,
)
from shoal.store import JSONObject, Store

ALLOCATING_KINDS = frozenset({"Service", "Network"})


def _invalid(
    info: KindInfo, obj: JSONObject, field: str, value: object, message: str
) -> InvalidError:
    name = str((obj.get("metadata") or {}).get("name") or "")
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    cause = FieldError(field, "FieldValueInvalid", f"Invalid value: {shown}: {message}")
    return InvalidError(
        f'{info.kind} "{name}" is invalid: {cause}',
        kind=info.kind,
        name=name or None,
        causes=[cause],
    )


class Allocator:
    def __init__(self, store: Store, service_cidr: str = SERVICE_CIDR) -> None:
        self.store = store
        self.service_cidr = service_cidr
        self.lock = asyncio.Lock()
        """Held by the caller from :meth:`allocate` until the object is stored."""

    async def allocate(self, info: KindInfo, obj: JSONObject, stored: JSONObject | None) -> None:
        """Fill in and check allocations of ``obj`` in place (``stored``: its previous version
        on update). Call with :attr:`lock` held. Raises InvalidError naming the field."""
        if info.kind == "Service":
            await self._service(info, obj, stored)
        elif info.kind == "Network":
            await self._network(info, obj, stored)

    # --- Services ----------------------------------------------------------------------------

    async def _taken_by_services(self, obj: JSONObject) -> tuple[set[str], set[int]]:
        meta = obj.get("metadata") or {}
        me = (meta.get("namespace"), meta.get("name"))
        ips: set[str] = set()
        ports: set[int] = set()
        for other in (await self.store.list("services", None)).items:
            om = other.get("metadata") or {}
            if (om.get("namespace"), om.get("name")) == me:
                continue
            spec = other.get("spec") or {}
            if spec.get("clusterIP") not in (None, "", "None"):
                ips.add(str(spec["clusterIP"]))
            for p in spec.get("ports") or []:
                if isinstance(p, dict) and p.get("nodePort"):
                    ports.add(int(p["nodePort"]))
        return ips, ports

    async def _service(self, info: KindInfo, obj: JSONObject, stored: JSONObject | None) -> None:
        spec: dict[str, Any] = obj.setdefault("spec", {})
        old: dict[str, Any] = (stored or {}).get("spec") or {}
        if spec.get("type") == "ExternalName":
            return
        ips, node_ports = await self._taken_by_services(obj)
        wanted = spec.get("clusterIP")
        if stored is not None and wanted in (None, ""):
            wanted = old.get("clusterIP")
            spec["clusterIP"] = wanted
        if stored is not None and wanted != old.get("clusterIP") and old.get("clusterIP"):
            raise _invalid(info, obj, "spec.clusterIP", wanted, "field is immutable")
        try:
            if wanted in (None, ""):
                spec["clusterIP"] = cluster_ip(ips, self.service_cidr)
            elif wanted != "None" and (stored is None or wanted != old.get("clusterIP")):
                if not in_range(str(wanted), self.service_cidr):
                    raise _invalid(
                        info, obj, "spec.clusterIP", wanted,
                        f"provided IP is not in the valid range. The range of valid IPs is {self.service_cidr}",
                    )  # fmt: skip
                if wanted in ips or wanted == dns_vip(self.service_cidr):
                    raise _invalid(
                        info, obj, "spec.clusterIP", wanted, "provided IP is already allocated"
                    )
            if spec.get("type") in ("NodePort", "LoadBalancer"):
                self._node_ports(info, obj, spec, old, node_ports)
        except ExhaustedError as exc:
            raise _invalid(info, obj, "spec.clusterIP", wanted or "", str(exc)) from None

    def _node_ports(
        self,
        info: KindInfo,
        obj: JSONObject,
        spec: dict[str, Any],
        old: dict[str, Any],
        taken: set[int],
    ) -> None:
        previous = {
            (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
            for p in old.get("ports") or []
            if isinstance(p, dict) and p.get("nodePort")
        }
        mine: set[int] = set()
        for i, p in enumerate(spec.get("ports") or []):
            if not isinstance(p, dict):
                continue
            given = p.get("nodePort")
            if given:
                if given in taken or given in mine:
                    raise _invalid(
                        info, obj, f"spec.ports[{i}].nodePort", given,
                        "provided port is already allocated",
                    )  # fmt: skip
                mine.add(int(given))
        for p in spec.get("ports") or []:
            if isinstance(p, dict) and not p.get("nodePort"):
                keep = previous.get((p.get("port"), p.get("protocol", "TCP")))
                port = keep if keep and keep not in taken and keep not in mine else None
                if port is None:
                    port = node_port(taken | mine)
                p["nodePort"] = port
                mine.add(int(port))

    # --- Networks ----------------------------------------------------------------------------

    async def _network(self, info: KindInfo, obj: JSONObject, stored: JSONObject | None) -> None:
        spec: dict[str, Any] = obj.setdefault("spec", {})
        old: dict[str, Any] = (stored or {}).get("spec") or {}
        name = str((obj.get("metadata") or {}).get("name") or "")
        if stored is not None:
            for field in ("subnet", "nodePrefixLength"):
                if spec.get(field) in (None, "") and old.get(field) is not None:
                    spec[field] = old[field]
                elif spec.get(field) != old.get(field):
                    raise _invalid(
                        info, obj, f"spec.{field}", spec.get(field), "field is immutable"
                    )
            return
        others: dict[str, str] = {}
        for other in (await self.store.list("networks", None)).items:
            oname = str((other.get("metadata") or {}).get("name") or "")
            subnet = (other.get("spec") or {}).get("subnet")
            if oname != name and subnet:
                others[oname] = str(subnet)
        others["(the service range)"] = self.service_cidr
        if not spec.get("subnet"):
            if name == DEFAULT_NETWORK and overlapping(DEFAULT_NETWORK_SUBNET, others) is None:
                spec["subnet"] = DEFAULT_NETWORK_SUBNET
            else:
                try:
                    spec["subnet"] = network_subnet(others.values())
                except ExhaustedError as exc:
                    raise _invalid(info, obj, "spec.subnet", "", str(exc)) from None
            return
        clash = overlapping(str(spec["subnet"]), others)
        if clash is not None:
            what = clash if clash.startswith("(") else f'network "{clash}"'
            raise _invalid(
                info, obj, "spec.subnet", spec["subnet"], f"overlaps the subnet of {what}"
            )
