"""Consul KV, catalog, health and blocking queries through the real py-consul client,
checked against Consul's documented semantics (and, for CAS deletes, its state store:
``kvsDeleteCASTxn`` reports success when the key is already gone).

httpx is used only for ``?raw`` (py-consul has no parameter for it) and to read the
``X-Consul-Index`` header of calls py-consul does not return it for.
"""

from __future__ import annotations

import asyncio
import time

import consul.aio
import consul.exceptions
import httpx
import pytest
from consul import Check

pytestmark = pytest.mark.asyncio

NODE = "kvcat-node"


# --- KV ----------------------------------------------------------------------------------------


async def test_kv_keys_separator_raw_flags_and_recursive_delete(
    c: consul.aio.Consul, http: httpx.AsyncClient
) -> None:
    for key in ("svc/a/x", "svc/a/y", "svc/b", "svc/c/d/e", "svcx"):
        assert await c.kv.put(key, key.upper())
    assert await c.kv.put("svc/flagged", b"\x00\x01", flags=2**63)

    _, keys = await c.kv.get("svc/", keys=True, separator="/")
    assert keys == ["svc/a/", "svc/b", "svc/c/", "svc/flagged"]
    _, keys = await c.kv.get("svc/", keys=True)
    assert keys == ["svc/a/x", "svc/a/y", "svc/b", "svc/c/d/e", "svc/flagged"]
    _, keys = await c.kv.get("svc", keys=True, separator="/")
    assert keys == ["svc/", "svcx"]
    _, keys = await c.kv.get("nothing/", keys=True)
    assert keys is None  # 404, as Consul

    _, flagged = await c.kv.get("svc/flagged")
    assert flagged["Flags"] == 2**63 and flagged["Value"] == b"\x00\x01"
    resp = await http.get("/v1/kv/svc/flagged", params={"raw": ""})
    assert resp.status_code == 200 and resp.content == b"\x00\x01"
    resp = await http.get("/v1/kv/svc/missing", params={"raw": ""})
    assert resp.status_code == 404

    # An empty value reads back as null, as Consul's.
    assert await c.kv.put("svc/empty", b"")
    _, empty = await c.kv.get("svc/empty")
    assert empty["Value"] is None

    assert await c.kv.delete("svc/a/", recurse=True)
    _, rest = await c.kv.get("svc", recurse=True)
    assert [e["Key"] for e in rest] == ["svc/b", "svc/c/d/e", "svc/empty", "svc/flagged", "svcx"]
    assert await c.kv.delete("svc/b")
    assert await c.kv.delete("svc/b")  # deleting a missing key succeeds
    _, gone = await c.kv.get("svc/b")
    assert gone is None


async def test_kv_cas(c: consul.aio.Consul) -> None:
    assert await c.kv.put("lock", "a", cas=0)  # absent: created
    assert not await c.kv.put("lock", "b", cas=0)  # exists now
    _, v1 = await c.kv.get("lock")
    assert not await c.kv.put("lock", "b", cas=v1["ModifyIndex"] + 1)
    assert not await c.kv.put("missing", "b", cas=v1["ModifyIndex"])  # CAS on an absent key
    assert (await c.kv.get("missing"))[1] is None
    assert await c.kv.put("lock", "b", cas=v1["ModifyIndex"])
    _, v2 = await c.kv.get("lock")
    assert v2["Value"] == b"b" and v2["ModifyIndex"] > v1["ModifyIndex"]
    assert v2["CreateIndex"] == v1["CreateIndex"]
    assert not await c.kv.put("lock", "c", cas=v1["ModifyIndex"])  # stale
    assert (await c.kv.get("lock"))[1]["Value"] == b"b"

    # Delete with CAS: stale fails and keeps the key, current succeeds.
    assert not await c.kv.delete("lock", cas=v1["ModifyIndex"])
    assert (await c.kv.get("lock"))[1] is not None
    assert await c.kv.delete("lock", cas=v2["ModifyIndex"])
    assert (await c.kv.get("lock"))[1] is None
    # Consul's kvsDeleteCASTxn: a CAS delete of a key that is gone reports success.
    assert await c.kv.delete("lock", cas=v2["ModifyIndex"])
    # Re-created keys get a fresh CreateIndex.
    assert await c.kv.put("lock", "again", cas=0)
    _, v3 = await c.kv.get("lock")
    assert v3["CreateIndex"] > v2["ModifyIndex"]


async def test_kv_bad_requests(c: consul.aio.Consul, http: httpx.AsyncClient) -> None:
    resp = await http.put("/v1/kv/k", params={"cas": "x"}, content=b"v")
    assert resp.status_code == 400 and "cas" in resp.text
    resp = await http.put("/v1/kv/k", params={"flags": "-1"}, content=b"v")
    assert resp.status_code == 400 and "flags" in resp.text.lower()
    resp = await http.put("/v1/kv/big", content=b"x" * (512 * 1024 + 1))
    assert resp.status_code == 400 and "kv_max_value_size" in resp.text
    with pytest.raises(consul.exceptions.BadRequest):
        await c.kv.get("k", index=1, wait="forever")
    assert (await c.kv.get("", recurse=True))[1] is None  # nothing was stored


async def test_kv_blocking_wakes_on_put_and_delete_only_under_prefix(
    c: consul.aio.Consul,
) -> None:
    await c.kv.put("watch/a", "1")
    index, _ = await c.kv.get("watch/", recurse=True)
    waiter = asyncio.create_task(c.kv.get("watch/", recurse=True, index=index, wait="1s"))
    await asyncio.sleep(0.2)
    await c.kv.put("elsewhere", "x")  # not under the prefix: must not wake it
    started = time.monotonic()
    same_index, _ = await waiter
    assert time.monotonic() - started > 0.5
    assert int(same_index) == int(index)

    waiter = asyncio.create_task(c.kv.get("watch/", recurse=True, index=index, wait="30s"))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await c.kv.put("watch/b", "2")
    index2, got = await asyncio.wait_for(waiter, 5)
    assert int(index2) > int(index) and [e["Key"] for e in got] == ["watch/a", "watch/b"]

    # A single-key watch wakes on that key's delete; its index is the delete's.
    waiter = asyncio.create_task(c.kv.get("watch/a", index=index2, wait="30s"))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await c.kv.delete("watch/a")
    index3, got = await asyncio.wait_for(waiter, 5)
    assert got is None and int(index3) > int(index2)


# --- catalog and health ------------------------------------------------------------------------


async def _register_fleet(c: consul.aio.Consul) -> None:
    for sid, tags, status in (
        ("api-1", ["v1", "blue"], "passing"),
        ("api-2", ["v1", "green"], "warning"),
        ("api-3", ["v2", "blue"], "critical"),
    ):
        check = {**Check.ttl("1m"), "Status": status}
        await c.agent.service.register("api", service_id=sid, port=1, tags=tags, check=check)
    await c.agent.service.register("cache", service_id="cache-1", port=2, tags=["mem"])


async def test_catalog_endpoints(c: consul.aio.Consul) -> None:
    await _register_fleet(c)
    assert await c.catalog.datacenters() == ["dc1"]
    _, services = await c.catalog.services()
    assert services["api"] == ["blue", "green", "v1", "v2"]  # union of tags
    assert services["cache"] == ["mem"]
    _, entries = await c.catalog.service("api")
    assert [e["ServiceID"] for e in entries] == ["api-1", "api-2", "api-3"]
    assert all(e["Node"] == NODE and e["Datacenter"] == "dc1" for e in entries)
    _, blue = await c.catalog.service("api", tag="blue")
    assert [e["ServiceID"] for e in blue] == ["api-1", "api-3"]
    _, none = await c.catalog.service("nope")
    assert none == []
    _, nodes = await c.catalog.nodes()
    assert [n["Node"] for n in nodes] == [NODE]
    _, node = await c.catalog.node(NODE)
    assert node["Node"]["Node"] == NODE
    assert set(node["Services"]) == {"api-1", "api-2", "api-3", "cache-1"}
    _, unknown = await c.catalog.node("no-such-node")
    assert unknown is None
    assert await c.status.leader()
    assert len(await c.status.peers()) == 1


async def test_health_endpoints(c: consul.aio.Consul) -> None:
    await _register_fleet(c)
    _, passing = await c.health.service("api", passing=True)
    assert [e["Service"]["ID"] for e in passing] == ["api-1"]  # warning and critical excluded
    _, tagged = await c.health.service("api", tag=["v1", "blue"])
    assert [e["Service"]["ID"] for e in tagged] == ["api-1"]  # every tag must match
    _, tagged = await c.health.service("api", tag="v1")
    assert [e["Service"]["ID"] for e in tagged] == ["api-1", "api-2"]
    _, checks = await c.health.checks("api")
    assert {ch["ServiceID"]: ch["Status"] for ch in checks} == {
        "api-1": "passing", "api-2": "warning", "api-3": "critical"
    }  # fmt: skip
    _, on_node = await c.health.node(NODE)
    assert {ch["CheckID"] for ch in on_node} == {
        "serfHealth", "service:api-1", "service:api-2", "service:api-3"
    }  # fmt: skip
    for state, expected in (
        ("critical", {"service:api-3"}),
        ("warning", {"service:api-2"}),
        ("passing", {"serfHealth", "service:api-1"}),
        ("any", {"serfHealth", "service:api-1", "service:api-2", "service:api-3"}),
    ):
        _, found = await c.health.state(state)
        assert {ch["CheckID"] for ch in found} == expected, state


async def test_health_state_rejects_an_unknown_state(http: httpx.AsyncClient) -> None:
    # py-consul refuses the call itself, so this one goes over plain HTTP.
    resp = await http.get("/v1/health/state/bogus")
    assert resp.status_code == 400 and resp.text


# --- blocking queries --------------------------------------------------------------------------


async def test_blocking_health_service_early_on_change_at_wait_otherwise(
    c: consul.aio.Consul, http: httpx.AsyncClient
) -> None:
    await c.agent.service.register("blk", service_id="blk-1", port=1, check=Check.ttl("1m"))
    index, _ = await c.health.service("blk")
    seen = [int(index)]

    started = time.monotonic()
    idx, _ = await c.health.service("blk", index=index, wait="1s")
    elapsed = time.monotonic() - started
    assert 0.95 <= elapsed < 1.5, elapsed  # 1 s plus at most 1/16 jitter
    seen.append(int(idx))

    # A change to another service does not wake this one.
    async def other_then_mine() -> None:
        await asyncio.sleep(0.2)
        await c.agent.service.register("unrelated", service_id="u-1", port=2)
        await asyncio.sleep(0.3)
        await c.agent.check.ttl_pass("service:blk-1")

    started = time.monotonic()
    task = asyncio.create_task(other_then_mine())
    idx, entries = await c.health.service("blk", index=index, wait="20s")
    elapsed = time.monotonic() - started
    await task
    assert 0.4 <= elapsed < 2, elapsed
    assert entries[0]["Checks"][-1]["Status"] == "passing"
    seen.append(int(idx))

    # A new instance wakes a passing-only watcher too.
    task = asyncio.create_task(c.health.service("blk", passing=True, index=idx, wait="20s"))
    await asyncio.sleep(0.2)
    assert not task.done()
    await c.agent.service.register("blk", service_id="blk-2", port=3)
    idx, entries = await asyncio.wait_for(task, 5)
    assert {e["Service"]["ID"] for e in entries} == {"blk-1", "blk-2"}
    seen.append(int(idx))

    # The index never goes backwards, on any endpoint.
    for path in ("/v1/catalog/services", "/v1/health/service/blk", "/v1/agent/services",
                 "/v1/catalog/nodes", "/v1/health/state/any"):  # fmt: skip
        resp = await http.get(path)
        assert int(resp.headers["X-Consul-Index"]) >= 1, path
    seen.append(int((await http.get("/v1/health/service/blk")).headers["X-Consul-Index"]))
    assert seen == sorted(seen) and seen[-1] > seen[0], seen

    # Deregistration wakes it as well.
    task = asyncio.create_task(c.health.service("blk", index=idx, wait="20s"))
    await asyncio.sleep(0.2)
    await c.agent.service.deregister("blk-2")
    idx2, entries = await asyncio.wait_for(task, 5)
    assert int(idx2) > int(idx) and [e["Service"]["ID"] for e in entries] == ["blk-1"]
