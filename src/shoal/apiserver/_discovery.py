"""API discovery documents (/api, /apis, /api/v1, /apis/apps/v1) and /version, in the shapes
kubectl and the official clients read."""

from __future__ import annotations

import platform
from typing import Any

from shoal import __version__
from shoal.api import KINDS

KUBE_COMPAT_MINOR = "31"

_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]

_RELAYED: dict[str, tuple[tuple[str, str, list[str]], ...]] = {
    "Pod": (("exec", "PodExecOptions", ["create", "get"]),),
    "Node": (("proxy", "NodeProxyOptions", ["create", "delete", "get", "patch", "update"]),),
}
"""Subresources served by relaying to a node agent (not kinds' stored subresources), listed
as Kubernetes lists them."""


def version_info() -> dict[str, str]:
    return {
        "major": "1",
        "minor": KUBE_COMPAT_MINOR,
        "gitVersion": f"v1.{KUBE_COMPAT_MINOR}.0-shoal.{__version__}",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "cpython",
        "platform": f"{platform.system().lower()}/{platform.machine()}",
        "shoalVersion": __version__,
    }


def core_versions() -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}


def groups() -> dict[str, Any]:
    names = sorted({k.group for k in KINDS if k.group})
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": g,
                "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"},
            }
            for g in names
        ],
    }


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    kinds = [k for k in KINDS if k.group == group and k.version == version]
    if not kinds:
        return None
    resources: list[dict[str, Any]] = []
    for k in kinds:
        resources.append(
            {
                "name": k.plural,
                "singularName": k.singular,
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": _VERBS,
                "shortNames": list(k.short_names),
            }
        )
        for sub in sorted(k.subresources):
            sub_kind = {"scale": "Scale", "binding": "Binding", "log": "Pod"}.get(sub, k.kind)
            verbs = {"binding": ["create"], "log": ["get"]}.get(sub, ["get", "patch", "update"])
            resources.append(
                {"name": f"{k.plural}/{sub}", "singularName": "", "namespaced": k.namespaced,
                 "kind": sub_kind, "verbs": verbs}
            )  # fmt: skip
        for sub, sub_kind, verbs in _RELAYED.get(k.kind, ()):
            resources.append(
                {"name": f"{k.plural}/{sub}", "singularName": "", "namespaced": k.namespaced,
                 "kind": sub_kind, "verbs": verbs}
            )  # fmt: skip
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
