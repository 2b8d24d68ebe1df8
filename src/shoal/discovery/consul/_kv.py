"""Consul's KV store (``/v1/kv/KEY``) over KVPair objects.

A key's ``ModifyIndex`` is its object's resourceVersion, so ``?cas=N`` is a compare-and-swap
on the stored revision; ``CreateIndex`` is the revision that created the key. Reads come
from the registry's watched copy, writes wait until that copy has applied them.
"""

from __future__ import annotations

import base64
from typing import Any

from shoal.api import object_name
from shoal.discovery._source import JSONObject, ObjectSource, revision
from shoal.discovery._state import RegistryState
from shoal.errors import AlreadyExistsError, BadRequestError, ConflictError, NotFoundError

API_VERSION = "consul.shoal.dev/v1"
MAX_VALUE = 512 * 1024
"""Consul's default ``kv_max_value_size``."""


def entry_json(obj: JSONObject) -> dict[str, Any]:
    """``api.KVPair``."""
    spec = obj.get("spec") or {}
    modify = revision(obj)
    return {
        "LockIndex": 0,
        "Key": spec.get("key", ""),
        "Flags": int(spec.get("flags") or 0),
        "Value": spec.get("value") or None,
        "CreateIndex": int(spec.get("createIndex") or 0) or modify,
        "ModifyIndex": modify,
    }


def raw_value(obj: JSONObject) -> bytes:
    return base64.b64decode((obj.get("spec") or {}).get("value") or "")


class KVStore:
    """KV reads from ``state``, writes through ``source``."""

    def __init__(self, source: ObjectSource, state: RegistryState) -> None:
        self.source = source
        self.state = state

    def _by_key(self) -> dict[str, JSONObject]:
        return {
            str((o.get("spec") or {}).get("key", "")): o
            for o in self.state.objects("kvpairs").values()
        }

    def get(self, key: str) -> JSONObject | None:
        obj = self.state.objects("kvpairs").get(object_name(key))
        if obj is not None and (obj.get("spec") or {}).get("key") == key:
            return obj
        return None

    def under(self, prefix: str) -> list[JSONObject]:
        """Entries whose key starts with ``prefix``, sorted by key."""
        items = [(k, o) for k, o in self._by_key().items() if k.startswith(prefix)]
        return [o for _, o in sorted(items, key=lambda kv: kv[0])]

    def index(self, prefix: str, exact: bool) -> int:
        """The X-Consul-Index of a key (``exact``) or prefix: the newest change under it,
        deletions included; the KV topic's index when nothing ever existed there."""
        best = 0
        if exact:
            obj = self.get(prefix)
            if obj is not None:
                best = revision(obj)
            best = max(best, self.state.kv_tombstones.get(prefix, 0))
        else:
            # Deletions before a restart left no tombstone, and one of them may be newer
            # than every key still under the prefix: floor by the revision the registry
            # started at, so the prefix's index never goes backwards across restarts.
            best = max((revision(o) for o in self.under(prefix)), default=0)
            best = max(
                [
                    best,
                    self.state.listed_revision,
                    *(rev for k, rev in self.state.kv_tombstones.items() if k.startswith(prefix)),
                ]
            )
        return best or self.state.index("kv")

    async def put(self, key: str, value: bytes, *, flags: int, cas: int | None) -> bool:
        if not key:
            raise BadRequestError("Missing key name")
        if len(value) > MAX_VALUE:
            raise BadRequestError(
                f"Value exceeds {MAX_VALUE} byte limit (kv_max_value_size): {len(value)} bytes"
            )
        if not 0 <= flags < 2**64:
            raise BadRequestError(f"Invalid flags: {flags}")
        current = self.get(key)
        spec = {
            "key": key,
            "value": base64.b64encode(value).decode() if value else "",
            "flags": flags,
        }
        obj: JSONObject = {
            "apiVersion": API_VERSION,
            "kind": "KVPair",
            "metadata": {"name": object_name(key)},
            "spec": spec,
        }
        try:
            if current is None or cas == 0:
                if cas not in (None, 0):
                    return False
                try:
                    stored = await self.source.create("kvpairs", obj)
                except AlreadyExistsError:
                    if cas == 0:
                        return False
                    current = await self.source.get("kvpairs", object_name(key))
                    return await self._update(obj, current, None)
            else:
                return await self._update(obj, current, cas)
        except (ConflictError, NotFoundError):
            return False
        await self.state.wait_applied("kvpairs", revision(stored))
        return True

    async def _update(self, obj: JSONObject, current: JSONObject, cas: int | None) -> bool:
        if cas is not None and cas != revision(current):
            return False
        obj["spec"]["createIndex"] = int(
            (current.get("spec") or {}).get("createIndex") or 0
        ) or revision(current)
        obj["metadata"]["resourceVersion"] = str(cas if cas is not None else revision(current))
        stored = await self.source.update("kvpairs", obj)
        await self.state.wait_applied("kvpairs", revision(stored))
        return True

    async def delete(self, key: str, *, recurse: bool, cas: int | None) -> bool:
        if recurse:
            targets = self.under(key)
        else:
            one = self.get(key)
            if one is None:
                # Consul's kvsDeleteCASTxn: a key that is already gone counts as deleted,
                # with or without ?cas (a retried CAS delete must not report failure).
                return True
            if cas is not None and cas != revision(one):
                return False
            targets = [one]
        last = 0
        for obj in targets:
            try:
                gone = await self.source.delete(
                    "kvpairs",
                    obj["metadata"]["name"],
                    expected_revision=cas if not recurse else None,
                )
            except NotFoundError:
                continue
            except ConflictError:
                return False
            last = max(last, revision(gone))
        if last:
            await self.state.wait_applied("kvpairs", last)
        return True
