"""Carrying out a checked plan against the server: create what is missing, update what
differs, leave alone what is already as written -- and say which, like kubectl.

Updates are three-way merges, as ``kubectl apply`` does them: every applied object records
the manifest in the ``kubectl.kubernetes.io/last-applied-configuration`` annotation; the
next apply starts from the live object, sets what the manifest says, and removes only the
fields the previous apply set and the manifest no longer has. Fields others own (an
annotation a controller added, replicas set by ``shoal scale`` when the manifest leaves them
out, status, a pod's node, a service's cluster IP) are left as they are. Updates are PUTs
guarded by the live resourceVersion.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from typing import Any

from shoal.api import validate_object
from shoal.cli._manifest import PlannedObject, normalize
from shoal.cli._output import object_ref
from shoal.client import Client
from shoal.errors import APIStatusError, ConflictError, NotFoundError

_IGNORED_TOP_LEVEL = ("apiVersion", "kind", "metadata", "status")
_CARRIED_META = ("ownerReferences", "finalizers")
_CARRIED_SPEC: dict[str, tuple[str, ...]] = {"Pod": ("nodeName",), "Service": ("clusterIP",)}

Lines = Callable[[list[str]], None]

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def last_applied_of(body: dict[str, Any]) -> str:
    """The annotation value recording ``body`` (the manifest as written, minus the
    annotation itself), in a stable compact form."""
    doc = copy.deepcopy(body)
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    annotations.pop(LAST_APPLIED, None)
    if not annotations and isinstance(doc.get("metadata"), dict):
        doc["metadata"].pop("annotations", None)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def with_last_applied(body: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    meta = out.setdefault("metadata", {})
    meta["annotations"] = {**(meta.get("annotations") or {}), LAST_APPLIED: last_applied_of(body)}
    return out


def three_way(last: Any, desired: Any, live: Any) -> Any:
    """Merge ``desired`` into ``live``: maps merge key by key, keys that ``last`` had and
    ``desired`` dropped are removed, anything else (scalars, lists) takes ``desired``."""
    if not isinstance(desired, dict) or not isinstance(live, dict):
        return copy.deepcopy(desired)
    out = dict(live)
    previous = last if isinstance(last, dict) else {}
    for key, value in desired.items():
        out[key] = three_way(previous.get(key), value, live.get(key))
    for key in previous:
        if key not in desired:
            out.pop(key, None)
    return out


def merged_object(planned: PlannedObject, live: dict[str, Any]) -> dict[str, Any]:
    """The object to PUT: the live object with the manifest merged in three ways, then
    validated and defaulted locally exactly as the server would store it."""
    live_meta = live.get("metadata") or {}
    try:
        last = json.loads((live_meta.get("annotations") or {}).get(LAST_APPLIED) or "{}")
    except ValueError:
        last = {}
    body = with_last_applied(planned.body)
    base = {k: copy.deepcopy(v) for k, v in live.items() if k != "status"}
    merged: dict[str, Any] = three_way(last, body, base)
    meta = merged.setdefault("metadata", {})
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation"):
        meta.pop(key, None)
    try:
        merged = normalize(validate_object(planned.info, merged))
    except APIStatusError:
        merged = with_live_fields(planned, live)  # the manifest alone is valid; fall back
        merged["metadata"].setdefault("annotations", {})[LAST_APPLIED] = last_applied_of(
            planned.body
        )
        return merged
    merged["metadata"]["resourceVersion"] = live_meta.get("resourceVersion")
    if "status" in live:
        merged["status"] = copy.deepcopy(live["status"])
    return merged


def with_live_fields(planned: PlannedObject, live: dict[str, Any]) -> dict[str, Any]:
    """The object to PUT: the normalized manifest plus what the cluster owns on ``live``."""
    desired = copy.deepcopy(planned.normalized or planned.body)
    meta = desired.setdefault("metadata", {})
    live_meta = live.get("metadata") or {}
    for key in _CARRIED_META:
        if not meta.get(key) and live_meta.get(key):
            meta[key] = copy.deepcopy(live_meta[key])
    spec, live_spec = desired.get("spec"), live.get("spec")
    if isinstance(spec, dict) and isinstance(live_spec, dict):
        for key in _CARRIED_SPEC.get(planned.info.kind, ()):
            if spec.get(key) is None and live_spec.get(key) is not None:
                spec[key] = live_spec[key]
        if planned.info.kind == "Service":
            _carry_node_ports(spec, live_spec)
    meta["resourceVersion"] = live_meta.get("resourceVersion")
    if "status" in live:
        desired["status"] = copy.deepcopy(live["status"])
    else:
        desired.pop("status", None)
    return desired


def _carry_node_ports(spec: dict[str, Any], live_spec: dict[str, Any]) -> None:
    allocated = {
        (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
        for p in live_spec.get("ports") or []
        if p.get("nodePort")
    }
    for p in spec.get("ports") or []:
        key = (p.get("port"), p.get("protocol", "TCP"))
        if p.get("nodePort") is None and key in allocated:
            p["nodePort"] = allocated[key]


def differs(desired: dict[str, Any], live: dict[str, Any]) -> bool:
    """Whether applying ``desired`` would change ``live``: its labels, annotations or any
    top-level field but status (spec, subsets, an event's fields...)."""
    dm, lm = desired.get("metadata") or {}, live.get("metadata") or {}
    for key in ("labels", "annotations", *_CARRIED_META):
        if (dm.get(key) or {}) != (lm.get(key) or {}):
            return True
    keys = (set(desired) | set(live)) - set(_IGNORED_TOP_LEVEL)
    return any(desired.get(k) != live.get(k) for k in keys)


async def apply_one(client: Client, planned: PlannedObject, *, dry_run: bool = False) -> str:
    """Create or update one object; returns "created", "configured" or "unchanged".
    With ``dry_run`` the object is compared but nothing is written."""
    info = planned.info
    path = info.object_path(planned.name, planned.namespace)
    for attempt in range(2):
        try:
            live = await client.request("GET", path)
        except NotFoundError:
            if dry_run:
                return "created"
            await client.request(
                "POST",
                info.collection_path(planned.namespace),
                body=with_last_applied(planned.body),
            )
            return "created"
        desired = merged_object(planned, live)
        if not differs(desired, live):
            return "unchanged"
        if dry_run:
            return "configured"
        try:
            await client.request("PUT", path, body=desired)
        except ConflictError:
            if attempt:
                raise
            continue
        return "configured"
    raise AssertionError("unreachable")  # pragma: no cover


async def apply_plan(
    client: Client,
    plan: Sequence[PlannedObject],
    out: Callable[[str], None],
    err: Lines,
    *,
    dry_run: bool = False,
) -> int:
    """Apply every object in order, reporting each; a server-side refusal of one object is
    reported (with its field causes) and the rest still go ahead. Returns how many failed."""
    failures = 0
    for planned in plan:
        try:
            outcome = await apply_one(client, planned, dry_run=dry_run)
        except APIStatusError as exc:
            failures += 1
            err(api_error_lines(exc, planned.doc.where))
            continue
        out(f"{object_ref(planned.info, planned.name)} {outcome}")
    return failures


async def apply_paths(
    client: Client, paths: Sequence[str], namespace: str | None = None
) -> list[str]:
    """Apply manifest files for a caller other than ``shoal apply`` (``shoal up -f``):
    plan everything first, then apply; returns the outcome lines (``deployment.apps/web
    created``). Raises ManifestError for bad manifests (nothing is sent) and the first
    APIStatusError the server returns."""
    from shoal.cli._manifest import load_documents, plan_objects

    plan = plan_objects(load_documents(paths), namespace)
    lines = []
    for planned in plan:
        outcome = await apply_one(client, planned)
        lines.append(f"{object_ref(planned.info, planned.name)} {outcome}")
    return lines


def api_error_lines(exc: APIStatusError, where: str = "") -> list[str]:
    """An API error as the CLI prints it: ``error: <what>`` and, when the server listed
    field causes, each as ``  field: message`` on its own line."""
    head = exc.message
    if exc.causes:
        marker = " is invalid: "
        if marker in head:
            head = head.split(marker, 1)[0] + " is invalid:"
        elif not head.endswith(":"):
            head += ":"
    prefix = f"{where}: " if where else ""
    lines = [f"error: {prefix}{head}"]
    lines += [f"  {c.field}: {c.message}" if c.field else f"  {c.message}" for c in exc.causes]
    return lines
