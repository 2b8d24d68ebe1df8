"""What the API does to objects, independent of HTTP: admission (defaults, validation,
server-owned metadata), compare-and-swap updates, the status/scale/binding subresources,
graceful deletion and finalizers. The HTTP layer (``_app``) only parses and routes."""

from __future__ import annotations

import contextlib
import copy
import logging
import secrets
import string
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from shoal._util import Clock, SystemClock, format_time
from shoal.api import (
    DEFAULT_NETWORK,
    KindInfo,
    LabelSelector,
    Selector,
    apply_defaults,
    kind_info,
    parse_field_selector,
    validate_object,
)
from shoal.apiserver._allocate import ALLOCATING_KINDS, Allocator
from shoal.errors import (
    BadRequestError,
    ConflictError,
    FieldError,
    InvalidError,
    NotFoundError,
)
from shoal.store import JSONObject, ListResult, Store, WatchEvent

log = logging.getLogger(__name__)

_SYSTEM_NAMESPACES = ("default", "shoal-system")
# Kinds whose status in a create/update body is ignored: status belongs to the subresource.
_STATUS_OWNED_BY_SUBRESOURCE = {"Pod", "Deployment", "ReplicaSet", "Service", "Namespace"}
_GENERATION_KINDS = {"Pod", "Deployment", "ReplicaSet", "Service"}


def _lookup(obj: Any, path: str) -> str:
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def make_predicate(
    label_selector: str | None, field_selector: str | None
) -> Callable[[JSONObject], bool] | None:
    """A store predicate from ``labelSelector``/``fieldSelector`` strings. Raises
    BadRequestError for syntax errors."""
    try:
        sel = Selector.parse(label_selector)
        fields = parse_field_selector(field_selector)
    except ValueError as exc:
        raise BadRequestError(f"unable to parse requirement: {exc}") from None
    if sel.empty and not fields:
        return None

    def predicate(obj: JSONObject) -> bool:
        if not sel.empty and not sel.matches((obj.get("metadata") or {}).get("labels") or {}):
            return False
        return all((_lookup(obj, f) == v) == eq for f, eq, v in fields)

    return predicate


def body_meta(body: JSONObject, kind: str = "object") -> JSONObject:
    """``body["metadata"]`` as a dict ({} when absent). Raises InvalidError for anything
    else, so a malformed body is a 422 naming the field, never a 500."""
    meta = body.get("metadata")
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise InvalidError(
            f"{kind} is invalid: metadata: Invalid value: must be an object",
            kind=kind,
            causes=[
                FieldError("metadata", "FieldValueInvalid", "Invalid value: must be an object")
            ],
        )
    return meta


def _rv(obj: JSONObject) -> int | None:
    rv = body_meta(obj).get("resourceVersion")
    if rv in (None, ""):
        return None
    try:
        return int(rv)
    except (TypeError, ValueError):
        raise BadRequestError(f'invalid resourceVersion "{rv}": must be an integer') from None


def _store_ns(info: KindInfo, namespace: str | None) -> str:
    return (namespace or "") if info.namespaced else ""


class Registry:
    """The object logic of the API server over a Store."""

    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.allocator = Allocator(store)

    def now(self) -> str:
        return format_time(self.clock.now())

    async def bootstrap(self) -> None:
        """What every cluster has: the system namespaces, the default Network, and a
        ClusterIP (and NodePorts) for each Service stored by a shoal that allocated none."""
        info = kind_info("Namespace")
        for ns in _SYSTEM_NAMESPACES:
            try:
                await self.store.get("namespaces", "", ns)
            except NotFoundError:
                await self.create(
                    info, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                )
        # The network pods join when they name none, like Docker's default bridge.
        net = kind_info("Network")
        try:
            await self.store.get("networks", "", DEFAULT_NETWORK)
        except NotFoundError:
            body = {"apiVersion": net.api_version, "kind": "Network"}
            await self.create(net, None, {**body, "metadata": {"name": DEFAULT_NETWORK}})
        svc = kind_info("Service")
        for obj in (await self.store.list("services", None)).items:
            spec = obj.get("spec") or {}
            if spec.get("type") == "ExternalName" or spec.get("clusterIP") not in (None, ""):
                continue
            meta = obj["metadata"]
            try:  # an update allocates what the stored object lacks
                await self.update(svc, meta["namespace"], meta["name"], obj)
            except (ConflictError, NotFoundError, InvalidError) as exc:
                log.warning("service %s/%s: no ClusterIP: %s", meta["namespace"], meta["name"], exc)

    # --- admission ---------------------------------------------------------------------------

    def _admit(
        self, info: KindInfo, body: Any, namespace: str | None, drop_status: bool = False
    ) -> JSONObject:
        if not isinstance(body, dict):
            raise BadRequestError(f"the body of a {info.kind} must be a JSON object")
        body = dict(body)
        if drop_status:
            body.pop("status", None)
        body.setdefault("apiVersion", info.api_version)
        body.setdefault("kind", info.kind)
        if body["kind"] != info.kind:
            raise BadRequestError(
                f'the body is a "{body["kind"]}" but the path is for {info.plural}'
            )
        if body["apiVersion"] != info.api_version:
            raise BadRequestError(
                f'apiVersion "{body["apiVersion"]}" is not served for {info.kind}; use "{info.api_version}"'
            )
        meta = body.get("metadata")
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise InvalidError(
                f"{info.kind} is invalid: metadata: must be an object",
                kind=info.kind,
                causes=[pydantic_field("metadata", "must be an object")],
            )
        meta = dict(meta)
        if info.namespaced:
            body_ns = meta.get("namespace")
            if namespace and body_ns and body_ns != namespace:
                raise BadRequestError(
                    f"the namespace of the object ({body_ns}) does not match the namespace on the request ({namespace})"
                )
            meta["namespace"] = namespace or body_ns or "default"
        else:
            meta.pop("namespace", None)
        body["metadata"] = meta
        obj = validate_object(info, body)
        apply_defaults(obj)
        return obj.to_dict()

    async def _check_namespace(self, info: KindInfo, obj: JSONObject) -> None:
        if not info.namespaced:
            return
        ns = obj["metadata"]["namespace"]
        try:
            got = await self.store.get("namespaces", "", ns)
        except NotFoundError:
            raise NotFoundError(
                f'namespaces "{ns}" not found', kind="namespaces", name=ns
            ) from None
        if (got.get("metadata") or {}).get("deletionTimestamp"):
            raise ConflictError(f'namespace "{ns}" is being terminated', kind="namespaces", name=ns)

    # --- CRUD --------------------------------------------------------------------------------

    async def create(self, info: KindInfo, namespace: str | None, body: Any) -> JSONObject:
        obj = self._admit(
            info, body, namespace, drop_status=info.kind in _STATUS_OWNED_BY_SUBRESOURCE
        )
        meta = obj["metadata"]
        if not meta.get("name"):
            alphabet = string.ascii_lowercase + string.digits
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice(alphabet) for _ in range(5)
            )
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self.now()
        if info.kind in _GENERATION_KINDS:
            meta["generation"] = 1
        await self._check_namespace(info, obj)
        if info.kind in ALLOCATING_KINDS:
            async with self.allocator.lock:
                await self.allocator.allocate(info, obj, None)
                return await self.store.create(info.plural, obj)
        return await self.store.create(info.plural, obj)

    async def get(self, info: KindInfo, namespace: str | None, name: str) -> JSONObject:
        return await self.store.get(info.plural, _store_ns(info, namespace), name)

    async def list(
        self,
        info: KindInfo,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> ListResult:
        pred = make_predicate(label_selector, field_selector)
        ns = namespace if info.namespaced else None
        return await self.store.list(info.plural, ns or None, pred)

    def watch(
        self,
        info: KindInfo,
        namespace: str | None,
        since: int,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[WatchEvent]:
        pred = make_predicate(label_selector, field_selector)
        ns = namespace if info.namespaced else None
        return self.store.watch(info.plural, ns or None, since, pred)

    async def update(
        self,
        info: KindInfo,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str | None = None,
    ) -> JSONObject:
        if not isinstance(body, dict):
            raise BadRequestError(f"the body of a {info.kind} must be a JSON object")
        body_name = body_meta(body, info.kind).get("name")
        if body_name and body_name != name:
            raise BadRequestError(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        stored = await self.get(info, namespace, name)
        expected = _rv(body)
        if subresource == "status":
            merged = copy.deepcopy(stored)
            if "status" in body:
                merged["status"] = body["status"]
            merged["metadata"].pop("resourceVersion", None)
            new = self._admit(info, merged, namespace)
        else:
            body = dict(body)
            body["metadata"] = {**body_meta(body, info.kind), "name": name}
            new = self._admit(info, body, namespace)
            if info.kind in _STATUS_OWNED_BY_SUBRESOURCE or "status" not in body:
                if "status" in stored:
                    new["status"] = stored["status"]
                else:
                    new.pop("status", None)
        meta, old_meta = new["metadata"], stored["metadata"]
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta.pop("resourceVersion", None)
        if info.kind in _GENERATION_KINDS and new.get("spec") != stored.get("spec"):
            meta["generation"] = int(old_meta.get("generation") or 0) + 1
        if (
            old_meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and old_meta.get("finalizers")
        ):
            return await self.store.delete(
                info.plural, _store_ns(info, namespace), name, expected_revision=expected
            )
        if info.kind in ALLOCATING_KINDS and subresource != "status":
            async with self.allocator.lock:
                await self.allocator.allocate(info, new, stored)
                return await self.store.update(info.plural, new, expected_revision=expected)
        return await self.store.update(info.plural, new, expected_revision=expected)

    async def patch(
        self,
        info: KindInfo,
        namespace: str | None,
        name: str,
        apply: Callable[[JSONObject], Any],
        subresource: str | None = None,
    ) -> JSONObject:
        """Apply a patch function to the stored object and update it, retrying a few times when
        another writer got in between (patches carry no resourceVersion of their own unless the
        patch sets one, in which case a conflict is reported)."""
        for _attempt in range(5):
            stored = await self.get(info, namespace, name)
            patched = apply(copy.deepcopy(stored))
            if not isinstance(patched, dict):
                raise BadRequestError("the patched object is not a JSON object")
            pinned = body_meta(patched, info.kind).get("resourceVersion")
            if pinned in (None, "", stored["metadata"].get("resourceVersion")):
                patched.setdefault("metadata", {})["resourceVersion"] = stored["metadata"][
                    "resourceVersion"
                ]
            try:
                return await self.update(info, namespace, name, patched, subresource)
            except ConflictError:
                if pinned not in (None, "", stored["metadata"].get("resourceVersion")):
                    raise
        raise ConflictError(
            f'{info.plural} "{name}" kept changing; try the patch again',
            kind=info.plural,
            name=name,
        )

    async def delete(
        self,
        info: KindInfo,
        namespace: str | None,
        name: str,
        grace_period: int | None = None,
        precondition_rv: int | None = None,
        precondition_uid: str | None = None,
    ) -> JSONObject:
        ns = _store_ns(info, namespace)
        stored = await self.store.get(info.plural, ns, name)
        meta = stored["metadata"]
        if precondition_uid and meta.get("uid") != precondition_uid:
            raise ConflictError(
                f"Precondition failed: UID in precondition: {precondition_uid}, UID in object meta: {meta.get('uid')}",
                kind=info.plural,
                name=name,
            )
        if info.kind == "Namespace":
            if name in _SYSTEM_NAMESPACES:
                raise BadRequestError(
                    f'namespace "{name}" is a system namespace and cannot be deleted'
                )
            await self._delete_namespace_contents(name)
        graceful = (
            info.kind == "Pod"
            and (stored.get("spec") or {}).get("nodeName")
            and grace_period != 0
            and (stored.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        )
        if meta.get("finalizers") or graceful:
            if meta.get("deletionTimestamp"):
                return stored
            grace = grace_period
            if grace is None:
                grace = int((stored.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            new = copy.deepcopy(stored)
            new["metadata"]["deletionTimestamp"] = self.now()
            new["metadata"]["deletionGracePeriodSeconds"] = grace
            return await self.store.update(
                info.plural, new, expected_revision=precondition_rv or int(meta["resourceVersion"])
            )
        return await self.store.delete(info.plural, ns, name, expected_revision=precondition_rv)

    async def _delete_namespace_contents(self, namespace: str) -> None:
        from shoal.api import KINDS

        for k in KINDS:
            if not k.namespaced:
                continue
            for obj in (await self.store.list(k.plural, namespace)).items:
                with contextlib.suppress(NotFoundError):
                    await self.store.delete(k.plural, namespace, obj["metadata"]["name"])

    # --- subresources -----------------------------------------------------------------------

    async def bind(self, namespace: str, name: str, body: Any) -> JSONObject:
        if not isinstance(body, dict) or not isinstance(body.get("target"), dict):
            raise InvalidError(
                "Binding is invalid: target: Required value",
                kind="Binding",
                causes=[pydantic_field("target", "Required value", "FieldValueRequired")],
            )
        node = body["target"].get("name")
        if not node:
            raise InvalidError(
                "Binding is invalid: target.name: Required value",
                kind="Binding",
                causes=[pydantic_field("target.name", "Required value", "FieldValueRequired")],
            )
        pod = await self.store.get("pods", namespace, name)
        uid = body_meta(body, "Binding").get("uid")
        if uid and pod["metadata"].get("uid") != uid:
            raise ConflictError(f'pods "{name}" has a different uid', kind="pods", name=name)
        spec = pod.setdefault("spec", {})
        if spec.get("nodeName"):
            raise ConflictError(
                f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is already assigned to node "{spec["nodeName"]}"',
                kind="pods",
                name=name,
            )
        if pod["metadata"].get("deletionTimestamp"):
            raise ConflictError(f'pods "{name}" is being deleted', kind="pods", name=name)
        spec["nodeName"] = node
        status = pod.setdefault("status", {})
        conds = [c for c in status.get("conditions", []) if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": self.now()})
        status["conditions"] = conds
        await self.store.update(
            "pods", pod, expected_revision=int(pod["metadata"]["resourceVersion"])
        )
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }

    async def get_scale(self, info: KindInfo, namespace: str, name: str) -> JSONObject:
        obj = await self.get(info, namespace, name)
        return self._scale_of(info, obj)

    def _scale_of(self, info: KindInfo, obj: JSONObject) -> JSONObject:
        meta = obj["metadata"]
        selector = (obj.get("spec") or {}).get("selector") or {}
        sel = LabelSelector.model_validate(selector).to_string()
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
                "creationTimestamp": meta.get("creationTimestamp"),
            },
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": sel},
        }

    async def update_scale(
        self, info: KindInfo, namespace: str, name: str, scale: Any
    ) -> JSONObject:
        if not isinstance(scale, dict):
            raise BadRequestError("the body of a Scale must be a JSON object")
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise InvalidError(
                f'Scale "{name}" is invalid: spec.replicas: Invalid value: {replicas!r}: must be greater than or equal to 0',
                kind="Scale",
                name=name,
                causes=[
                    pydantic_field(
                        "spec.replicas",
                        f"Invalid value: {replicas!r}: must be greater than or equal to 0",
                    )
                ],
            )
        expected = _rv(scale)
        obj = await self.get(info, namespace, name)
        if expected is not None and str(expected) != obj["metadata"]["resourceVersion"]:
            raise ConflictError(
                f'Operation cannot be fulfilled on {info.plural} "{name}": the object has been modified; please apply your changes to the latest version and try again',
                kind=info.plural,
                name=name,
            )
        obj["spec"]["replicas"] = replicas
        updated = await self.update(info, namespace, name, obj)
        return self._scale_of(info, updated)


def pydantic_field(field: str, message: str, reason: str = "FieldValueInvalid") -> Any:
    from shoal.errors import FieldError

    return FieldError(field, reason, message)
