"""Catalog entries in the JSON shapes of Consul's HTTP API (field names as Consul's Go
structs: ``api.AgentService``, ``api.CatalogService``, ``api.HealthCheck``,
``api.ServiceEntry``, ``api.Node``)."""

from __future__ import annotations

from typing import Any

from shoal.discovery._catalog import Catalog, Check, Instance, Node

JSON = dict[str, Any]

_DEFINITION_KEYS = {
    "http": "HTTP",
    "tcp": "TCP",
    "method": "Method",
    "header": "Header",
    "body": "Body",
    "tlsSkipVerify": "TLSSkipVerify",
    "interval": "Interval",
    "timeout": "Timeout",
    "ttl": "TTL",
    "args": "ScriptArgs",
    "deregisterCriticalServiceAfter": "DeregisterCriticalServiceAfter",
}


def node_json(node: Node, datacenter: str) -> JSON:
    return {
        "ID": node.id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": datacenter,
        "TaggedAddresses": {"lan": node.address, "wan": node.address},
        "Meta": dict(node.meta),
        "CreateIndex": node.create_index,
        "ModifyIndex": node.modify_index,
    }


def _weights(inst: Instance) -> JSON:
    return {"Passing": inst.weights[0], "Warning": inst.weights[1]}


def agent_service_json(inst: Instance, datacenter: str) -> JSON:
    """``api.AgentService``: what ``/v1/agent/services`` maps each ID to."""
    return {
        "Kind": "",
        "ID": inst.id,
        "Service": inst.service,
        "Tags": list(inst.tags),
        "Meta": dict(inst.meta),
        "Port": inst.port,
        "Address": inst.address,
        "TaggedAddresses": {},
        "Weights": _weights(inst),
        "EnableTagOverride": inst.enable_tag_override,
        "CreateIndex": inst.create_index,
        "ModifyIndex": inst.modify_index,
        "Datacenter": datacenter,
    }


def catalog_service_json(inst: Instance, catalog: Catalog, datacenter: str) -> JSON:
    """``api.CatalogService``: one entry of ``/v1/catalog/service/NAME``."""
    node = catalog.node(inst.node) or Node(inst.node, "")
    return {
        "ID": node.id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": datacenter,
        "TaggedAddresses": {"lan": node.address, "wan": node.address},
        "NodeMeta": dict(node.meta),
        "ServiceKind": "",
        "ServiceID": inst.id,
        "ServiceName": inst.service,
        "ServiceTags": list(inst.tags),
        "ServiceAddress": inst.address,
        "ServiceTaggedAddresses": {},
        "ServiceWeights": _weights(inst),
        "ServiceMeta": dict(inst.meta),
        "ServicePort": inst.port,
        "ServiceEnableTagOverride": inst.enable_tag_override,
        "CreateIndex": inst.create_index,
        "ModifyIndex": inst.modify_index,
    }


def check_json(check: Check, inst: Instance | None = None) -> JSON:
    """``api.HealthCheck``."""
    definition = {
        out: check.definition[key]
        for key, out in _DEFINITION_KEYS.items()
        if check.definition.get(key) not in (None, "", [], {}, False)
    }
    return {
        "Node": check.node,
        "CheckID": check.check_id,
        "Name": check.name,
        "Status": check.status,
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": check.service_id,
        "ServiceName": inst.service if inst is not None and check.service_id else "",
        "ServiceTags": list(inst.tags) if inst is not None and check.service_id else [],
        "Type": check.type,
        "Definition": definition,
        "CreateIndex": check.create_index,
        "ModifyIndex": check.modify_index,
    }


def service_entry_json(inst: Instance, catalog: Catalog, datacenter: str) -> JSON:
    """``api.ServiceEntry``: node, service and all checks (node's and service's)."""
    node = catalog.node(inst.node) or Node(inst.node, "")
    return {
        "Node": node_json(node, datacenter),
        "Service": agent_service_json(inst, datacenter),
        "Checks": [check_json(c, inst) for c in inst.checks],
    }


def service_checks(catalog: Catalog) -> list[tuple[Check, Instance]]:
    """Every service-level check with its instance (node checks excluded)."""
    return [(c, inst) for inst in catalog.all_instances() for c in inst.checks if c.service_id]


def all_checks_json(catalog: Catalog) -> list[JSON]:
    """Every check: node-level, then service-level."""
    return [check_json(c) for c in catalog.all_node_checks()] + [
        check_json(c, inst) for c, inst in service_checks(catalog)
    ]
