"""The live registry: API objects in, catalog snapshots and change indexes out.

One :class:`RegistryState` lists and watches the objects the catalog is made of (see
:mod:`._derive`), keeps the latest version of each, and after every batch of changes
publishes a new immutable :class:`~shoal.discovery.Catalog` in which only the services that
changed were recomputed. Readers (the Consul API, DNS, the client library) take
``state.catalog`` and never see it change under them.

Blocking queries wait on *topics*: ``service:NAME`` (its instances and their checks),
``catalog`` (the set of services and their tags), ``nodes``, ``checks`` (any check) and
``kv``. A topic's index is the store revision of the last change that touched it, so
indexes are the API server's own revisions: monotonic across restarts, and comparable with
the ``resourceVersion`` a write returned. Every topic starts at the revision the registry
was listed at, so an index a client got before a restart never runs ahead of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shoal.api import object_name
from shoal.discovery._catalog import Catalog, Check, Instance, Node
from shoal.discovery._derive import (
    endpoint_instances,
    healthcheck_entry,
    local_node,
    node_entry,
    registration_instance,
)
from shoal.discovery._source import JSONObject, ObjectSource, SourceEvent
from shoal.errors import GoneError

log = logging.getLogger("shoal.discovery")

RESOURCES = ("nodes", "serviceregistrations", "healthchecks", "services", "endpoints", "kvpairs")

Listener = Callable[[Catalog, "set[str] | None", bool], None]
"""Called after each published change: (catalog, changed services or None for all,
nodes changed)."""
ObjectListener = Callable[[str, "JSONObject | None", "JSONObject | None"], None]
"""Called for each object change: (resource, old object or None, new object or None)."""


def _key(obj: JSONObject) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


class _Topic:
    __slots__ = ("event", "index")

    def __init__(self, index: int) -> None:
        self.index = index
        self.event = asyncio.Event()

    def bump(self, index: int) -> None:
        self.index = max(self.index, index)
        event, self.event = self.event, asyncio.Event()
        event.set()


@dataclass
class _Raw:
    """The latest object of every watched resource, by key."""

    objects: dict[str, dict[str, JSONObject]] = field(
        default_factory=lambda: {r: {} for r in RESOURCES}
    )
    reg_by_service: dict[str, set[str]] = field(default_factory=dict)
    checks_by_service_id: dict[str, set[str]] = field(default_factory=dict)
    k8s_by_name: dict[str, set[str]] = field(default_factory=dict)
    reg_by_check: dict[str, str] = field(default_factory=dict)
    """Check ID -> key of the ServiceRegistration that defines it."""


class RegistryState:
    """Watches the registry's objects and serves snapshots, indexes and change waits."""

    def __init__(
        self,
        source: ObjectSource,
        node_name: str,
        *,
        node_address: str = "127.0.0.1",
        datacenter: str = "dc1",
    ) -> None:
        self.source = source
        self.node_name = node_name
        self.node_address = node_address
        self.datacenter = datacenter
        self.catalog = Catalog.build([], [])
        self.kv_tombstones: dict[str, int] = {}
        """Key -> revision of its deletion, so a prefix's index moves when a key goes."""
        self._raw = _Raw()
        self._topics: dict[str, _Topic] = {}
        self._floor = 0
        self._applied: dict[str, int] = dict.fromkeys(RESOURCES, 0)
        self._applied_event = asyncio.Event()
        self._queue: asyncio.Queue[tuple[str, SourceEvent | None]] = asyncio.Queue()
        self._listeners: list[Listener] = []
        self._object_listeners: list[ObjectListener] = []
        self._synced = asyncio.Event()
        self._node_checks: dict[str, tuple[Check, ...]] = {}
        self._nodes: list[Node] = []
        self._closing = False
        self._derived: dict[str, dict[str, tuple[tuple[object, ...], Instance]]] = {}
        """Service -> registration key -> (the objects it was derived from, the instance):
        a change re-derives only the instances whose objects changed, not the whole service."""

    # --- reading ------------------------------------------------------------------------------

    def objects(self, resource: str) -> dict[str, JSONObject]:
        """The latest objects of ``resource`` by key (do not modify)."""
        return self._raw.objects[resource]

    def registration(self, service_id: str) -> JSONObject | None:
        """The ServiceRegistration with ``service_id``, if any (its name derives from it)."""
        obj = self._raw.objects["serviceregistrations"].get(object_name(service_id))
        if obj is not None and (obj.get("spec") or {}).get("id") == service_id:
            return obj
        return None

    def healthcheck(self, check_id: str) -> JSONObject | None:
        """The HealthCheck object with ``check_id``, if any."""
        obj = self._raw.objects["healthchecks"].get(object_name(check_id))
        if obj is not None and (obj.get("spec") or {}).get("checkID") == check_id:
            return obj
        return None

    def _service_of_id(self, service_id: str) -> str | None:
        obj = self.registration(service_id)
        return None if obj is None else str((obj.get("spec") or {}).get("service", ""))

    @property
    def listed_revision(self) -> int:
        """The store revision the registry was listed at when it started. Everything that
        happened before the start (deletions included, whose tombstones are not kept across
        restarts) is at or below it, so an index floored by it never goes backwards."""
        return self._floor

    def index(self, topic: str) -> int:
        t = self._topics.get(topic)
        return max(t.index if t is not None else self._floor, 1)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def add_object_listener(self, listener: ObjectListener) -> None:
        """Call ``listener(resource, old, new)`` for every object change from now on (and
        once per existing object right away, as ``(resource, None, obj)``)."""
        self._object_listeners.append(listener)
        for resource in RESOURCES:
            for obj in list(self._raw.objects[resource].values()):
                self._notify_object(listener, resource, None, obj)

    def _notify_object(
        self,
        listener: ObjectListener,
        resource: str,
        old: JSONObject | None,
        new: JSONObject | None,
    ) -> None:
        try:
            listener(resource, old, new)
        except Exception:
            log.exception("registry object listener failed")

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def wait_applied(self, resource: str, revision: int, timeout: float = 5.0) -> None:
        """Wait until the watch of ``resource`` has applied ``revision`` (read-your-writes
        for the API: a registration is visible in the catalog before the call returns)."""
        async with asyncio.timeout(timeout):
            while self._applied[resource] < revision:
                await self._applied_event.wait()

    @property
    def closing(self) -> bool:
        return self._closing

    def release_waiters(self) -> None:
        """End every blocking wait now and from now on (shutdown: held requests answer at
        once instead of keeping the HTTP server from stopping)."""
        self._closing = True
        for topic in self._topics.values():
            topic.event.set()

    async def wait_change(self, topic: str, index: int, timeout: float) -> None:
        """Return when ``topic``'s index moves past ``index``, or after ``timeout``."""
        if self._closing:
            return
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = _Topic(self._floor)
        if t.index > index:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while t.index <= index and not self._closing:
                    await t.event.wait()

    # --- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """List everything, publish the first catalog, then apply watch events forever."""
        for resource in RESOURCES:
            await self._relist(resource)
        self._floor = max(self._applied.values())
        self._rebuild_all()
        self._synced.set()
        async with asyncio.TaskGroup() as tg:
            for resource in RESOURCES:
                tg.create_task(self._watch(resource))
            tg.create_task(self._apply_loop())

    async def _relist(self, resource: str) -> None:
        items, revision = await self.source.list(resource)
        objects = {_key(o): o for o in items}
        self._raw.objects[resource] = objects
        self._reindex(resource)
        self._applied[resource] = max(self._applied[resource], revision)

    async def _watch(self, resource: str) -> None:
        while True:
            try:
                async for event in self.source.watch(resource, self._applied[resource]):
                    self._queue.put_nowait((resource, event))
            except GoneError:
                log.info("registry watch of %s fell behind; listing again", resource)
                self._queue.put_nowait((resource, None))
                await asyncio.sleep(0)
                continue
            except Exception:
                log.exception("registry watch of %s failed; retrying", resource)
            await asyncio.sleep(0.5)

    async def _apply_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._apply(batch)
            except Exception:  # a bad object must not stop the registry
                log.exception("registry update failed; rebuilding")
                self._rebuild_all()

    async def _apply(self, batch: list[tuple[str, SourceEvent | None]]) -> None:
        dirty: set[str] = set()
        full = False
        nodes_changed = False
        kv_changed = False
        top = 0
        for resource, event in batch:
            if event is None:
                await self._relist(resource)
                full = True
                continue
            top = max(top, event.revision)
            self._applied[resource] = max(self._applied[resource], event.revision)
            objects = self._raw.objects[resource]
            key = _key(event.object)
            old = objects.get(key)
            if event.type == "DELETED":
                objects.pop(key, None)
            else:
                objects[key] = event.object
            for listener in self._object_listeners:
                self._notify_object(
                    listener, resource, old, None if event.type == "DELETED" else event.object
                )
            if resource == "kvpairs":
                kv_changed = True
                spec_key = str((event.object.get("spec") or {}).get("key", ""))
                if event.type == "DELETED":
                    self.kv_tombstones[spec_key] = event.revision
                else:
                    self.kv_tombstones.pop(spec_key, None)
                continue
            if resource == "nodes":
                nodes_changed = True
                continue
            if resource == "healthchecks" and any(
                o is not None and not (o.get("spec") or {}).get("serviceID")
                for o in (old, event.object)
            ):
                nodes_changed = True  # a node-level check: it affects the node's instances
            dirty |= self._affected(resource, old)
            dirty |= self._affected(resource, None if event.type == "DELETED" else event.object)
            self._index_one(resource, key, old, None if event.type == "DELETED" else event.object)
        if full:
            self._rebuild_all()
            top = max(top, max(self._applied.values()))
            for topic in list(self._topics.values()):
                topic.bump(top)
            self._publish(None, True)
        else:
            nodes_really = nodes_changed and self._refresh_nodes(dirty)
            if dirty:
                self.catalog = self.catalog.replace(
                    {name: self._instances_of(name) for name in dirty}
                )
            if nodes_really:
                self.catalog = self.catalog.replace(
                    nodes=self._nodes, node_checks=self._all_node_checks()
                )
            for name in dirty:
                self._bump(f"service:{name}", top)
            if dirty or nodes_really:
                self._bump("catalog", top)
                self._bump("checks", top)
            if nodes_really:
                self._bump("nodes", top)
            if kv_changed:
                self._bump("kv", top)
            if dirty or nodes_really:
                self._publish(dirty, nodes_really)
        self._applied_event.set()
        self._applied_event = asyncio.Event()

    def _bump(self, topic: str, index: int) -> None:
        t = self._topics.get(topic)
        if t is None:
            self._topics[topic] = _Topic(max(self._floor, index))
        else:
            t.bump(index)

    def _publish(self, changed: set[str] | None, nodes_changed: bool) -> None:
        for listener in self._listeners:
            try:
                listener(self.catalog, changed, nodes_changed)
            except Exception:
                log.exception("registry listener failed")

    # --- derivation ---------------------------------------------------------------------------

    def _affected(self, resource: str, obj: JSONObject | None) -> set[str]:
        """The Consul service names ``obj`` contributes to."""
        if obj is None:
            return set()
        if resource == "serviceregistrations":
            return {str((obj.get("spec") or {}).get("service", ""))}
        if resource == "healthchecks":
            sid = str((obj.get("spec") or {}).get("serviceID", ""))
            if not sid:
                return set()
            name = self._service_of_id(sid)
            return {name} if name else set()
        if resource in ("services", "endpoints"):
            return {str((obj.get("metadata") or {}).get("name", ""))}
        return set()

    def healthchecks_of(self, service_id: str) -> list[JSONObject]:
        """HealthCheck objects attached to ``service_id``."""
        objects = self._raw.objects["healthchecks"]
        keys = self._raw.checks_by_service_id.get(service_id, ())
        return [objects[k] for k in sorted(keys) if k in objects]

    def check_owner(self, check_id: str) -> tuple[str, JSONObject] | None:
        """(resource, object) holding the check ``check_id``, if it exists."""
        obj = self.healthcheck(check_id)
        if obj is not None:
            return "healthchecks", obj
        key = self._raw.reg_by_check.get(check_id)
        reg = self._raw.objects["serviceregistrations"].get(key) if key else None
        return ("serviceregistrations", reg) if reg is not None else None

    def _index_checks(self, key: str, old: JSONObject | None, new: JSONObject | None) -> None:
        for obj, add in ((old, False), (new, True)):
            for check in ((obj or {}).get("spec") or {}).get("checks") or []:
                cid = str(check.get("checkID", ""))
                if add:
                    self._raw.reg_by_check[cid] = key
                elif self._raw.reg_by_check.get(cid) == key:
                    del self._raw.reg_by_check[cid]

    def _index_one(
        self, resource: str, key: str, old: JSONObject | None, new: JSONObject | None
    ) -> None:
        if resource == "serviceregistrations":
            self._index_checks(key, old, new)
        index = self._index_for(resource)
        if index is None:
            return
        for obj, add in ((old, False), (new, True)):
            if obj is None:
                continue
            group = self._group_of(resource, obj)
            if group is None:
                continue
            members = index.setdefault(group, set())
            if add:
                members.add(key)
            else:
                members.discard(key)
                if not members:
                    index.pop(group, None)

    def _index_for(self, resource: str) -> dict[str, set[str]] | None:
        return {
            "serviceregistrations": self._raw.reg_by_service,
            "healthchecks": self._raw.checks_by_service_id,
            "services": self._raw.k8s_by_name,
        }.get(resource)

    @staticmethod
    def _group_of(resource: str, obj: JSONObject) -> str | None:
        if resource == "serviceregistrations":
            return str((obj.get("spec") or {}).get("service", ""))
        if resource == "healthchecks":
            return str((obj.get("spec") or {}).get("serviceID", ""))
        return str((obj.get("metadata") or {}).get("name", ""))

    def _reindex(self, resource: str) -> None:
        if resource == "serviceregistrations":
            self._raw.reg_by_check.clear()
            for key, obj in self._raw.objects[resource].items():
                self._index_checks(key, None, obj)
        index = self._index_for(resource)
        if index is None:
            return
        index.clear()
        for key, obj in self._raw.objects[resource].items():
            group = self._group_of(resource, obj)
            if group is not None:
                index.setdefault(group, set()).add(key)

    def _node_entries(self) -> tuple[list[Node], dict[str, tuple[Check, ...]]]:
        nodes: list[Node] = []
        checks: dict[str, list[Check]] = {}
        for obj in self._raw.objects["nodes"].values():
            node, check = node_entry(obj)
            nodes.append(node)
            checks.setdefault(node.name, []).append(check)
        if not any(n.name == self.node_name for n in nodes):
            node, check = local_node(self.node_name, self.node_address)
            nodes.append(node)
            checks.setdefault(node.name, []).append(check)
        for obj in self._raw.objects["healthchecks"].values():
            if not (obj.get("spec") or {}).get("serviceID"):
                check = healthcheck_entry(obj, self.node_name)
                checks.setdefault(check.node, []).append(check)
        return nodes, {n: tuple(sorted(c, key=lambda x: x.check_id)) for n, c in checks.items()}

    def _all_node_checks(self) -> list[Check]:
        return [c for group in self._node_checks.values() for c in group]

    def _refresh_nodes(self, dirty: set[str]) -> bool:
        """Recompute nodes and node checks; mark services on nodes whose checks changed.
        Returns whether anything a reader can see changed (heartbeats alone do not)."""
        nodes, checks = self._node_entries()
        old_nodes = {n.name: (n.address, dict(n.meta)) for n in self.catalog.nodes()}
        new_nodes = {n.name: (n.address, dict(n.meta)) for n in nodes}

        def visible(group: Iterable[Check]) -> list[tuple[str, str, str]]:
            return [(c.check_id, c.status, c.output) for c in group]

        changed_nodes = {
            name
            for name in set(checks) | set(self._node_checks)
            if visible(checks.get(name, ())) != visible(self._node_checks.get(name, ()))
        }
        changed_nodes |= {
            n for n in set(old_nodes) | set(new_nodes) if old_nodes.get(n) != new_nodes.get(n)
        }
        self._nodes, self._node_checks = nodes, checks
        if not changed_nodes:
            return False
        for inst in self.catalog.all_instances():
            if inst.node in changed_nodes:
                dirty.add(inst.service)
        return True

    def _instances_of(self, name: str) -> list[Instance]:
        raw = self._raw
        result: list[Instance] = []
        checks_objs = raw.objects["healthchecks"]
        prev = self._derived.get(name, {})
        derived: dict[str, tuple[tuple[object, ...], Instance]] = {}
        for key in raw.reg_by_service.get(name, ()):
            obj = raw.objects["serviceregistrations"].get(key)
            if obj is None:
                continue
            sid = str((obj.get("spec") or {}).get("id", ""))
            extra = tuple(
                checks_objs[k]
                for k in sorted(raw.checks_by_service_id.get(sid, ()))
                if k in checks_objs
            )
            node = str((obj.get("spec") or {}).get("node") or self.node_name)
            node_checks = self._node_checks.get(node, ())
            # Every watch event stores a new dict, so identity means "unchanged".
            inputs = (obj, node_checks, *extra)
            hit = prev.get(key)
            if (
                hit is not None
                and len(hit[0]) == len(inputs)
                and all(a is b for a, b in zip(hit[0], inputs, strict=True))
            ):
                derived[key] = hit
                result.append(hit[1])
                continue
            entries = [healthcheck_entry(c, self.node_name) for c in extra]
            inst = registration_instance(obj, self.node_name, entries, node_checks)
            derived[key] = (inputs, inst)
            result.append(inst)
        if derived:
            self._derived[name] = derived
        else:
            self._derived.pop(name, None)
        for key in raw.k8s_by_name.get(name, ()):
            svc = raw.objects["services"].get(key)
            if svc is not None:
                result.extend(
                    endpoint_instances(svc, raw.objects["endpoints"].get(key), self._node_checks)
                )
        seen: set[str] = set()
        unique = []
        for inst in result:  # a k8s pod ID can never equal a registered one, but be safe
            if inst.id not in seen:
                seen.add(inst.id)
                unique.append(inst)
        return unique

    def _rebuild_all(self) -> None:
        nodes, self._node_checks = self._node_entries()
        self._nodes = nodes
        names = set(self._raw.reg_by_service) | set(self._raw.k8s_by_name)
        self._derived = {n: d for n, d in self._derived.items() if n in names}
        instances = [inst for name in sorted(names) for inst in self._instances_of(name)]
        self.catalog = Catalog.build(nodes, instances, self._all_node_checks())
