"""The API server over real HTTP: REST layout, Status errors, subresources, watches."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from shoal.api import Container, ObjectMeta, Pod, PodSpec
from shoal.client import Client
from shoal.errors import ConflictError, GoneError, NotFoundError
from shoal.testing import running_api_server

PODS = "/api/v1/namespaces/default/pods"
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "command": ["sleep", "1"]}]}}  # fmt: skip


def deploy(name: str, replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "command": ["sleep", "9"]}]}}}}  # fmt: skip


async def test_crud_and_status_bodies() -> None:
    async with running_api_server() as srv, httpx.AsyncClient(base_url=srv.url) as h:
        r = await h.post(PODS, json=pod("a", app="x"))
        assert r.status_code == 201
        created = r.json()
        meta = created["metadata"]
        assert meta["namespace"] == "default" and meta["uid"] and meta["creationTimestamp"]
        assert meta["generation"] == 1 and int(meta["resourceVersion"]) > 0
        r = await h.post(PODS, json=pod("a"))
        assert r.status_code == 409 and r.json()["reason"] == "AlreadyExists"
        r = await h.get(f"{PODS}/missing")
        assert r.status_code == 404
        assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": 'pods "missing" not found', "reason": "NotFound",
                            "details": {"name": "missing", "kind": "pods"}, "code": 404}  # fmt: skip
        # Update with a stale resourceVersion -> 409 Conflict; current one -> 200.
        stale = dict(created)
        stale["metadata"] = {**meta, "labels": {"app": "y"}}
        assert (await h.put(f"{PODS}/a", json=stale)).status_code == 200
        r = await h.put(f"{PODS}/a", json=stale)
        assert r.status_code == 409 and r.json()["reason"] == "Conflict"
        # Merge patch.
        r = await h.patch(f"{PODS}/a", content=b'{"metadata":{"labels":{"extra":"1"}}}',
                          headers={"content-type": "application/merge-patch+json"})  # fmt: skip
        assert r.status_code == 200 and r.json()["metadata"]["labels"] == {"app": "y", "extra": "1"}
        # Bad bodies never 500.
        for body in (b"{", b"[]", b'"x"', b"{}"):
            r = await h.post(PODS, content=body)
            assert r.status_code in (400, 422), (body, r.text)
            assert r.json()["kind"] == "Status"
        r = await h.post(PODS, json={**pod("b"), "kind": "Service"})
        assert r.status_code == 400
        r = await h.get("/api/v1/namespaces/default/widgets")
        assert r.status_code == 404
        r = await h.post("/api/v1/namespaces/nope/pods", json=pod("c"))
        assert r.status_code == 404 and 'namespaces "nope" not found' in r.json()["message"]
        r = await h.get(PODS, params={"labelSelector": "app in (y"})
        assert r.status_code == 400
        # Cluster-scoped kinds and discovery.
        assert (await h.get("/api/v1/namespaces/default")).status_code == 200
        assert (await h.get("/version")).json()["major"] == "1"
        resources = {r["name"] for r in (await h.get("/apis/apps/v1")).json()["resources"]}
        assert {"deployments", "deployments/scale", "deployments/status"} <= resources
        assert (await h.get("/healthz")).text == "ok"
        assert (await h.get("/readyz")).status_code == 200


async def test_status_subresource_and_generation() -> None:
    async with running_api_server() as srv, httpx.AsyncClient(base_url=srv.url) as h:
        body = deploy("web")
        body["status"] = {"replicas": 99}
        d = (await h.post(DEPLOYS, json=body)).json()
        assert d["status"]["replicas"] == 0  # status in a create is ignored
        d["status"]["replicas"] = 5
        d["spec"]["replicas"] = 7
        r = await h.put(f"{DEPLOYS}/web/status", json=d)
        assert r.status_code == 200
        after = r.json()
        assert after["status"]["replicas"] == 5 and after["spec"]["replicas"] == 2  # spec untouched
        assert after["metadata"]["generation"] == 1
        after["spec"]["replicas"] = 4
        after["status"]["replicas"] = 0
        r = (await h.put(f"{DEPLOYS}/web", json=after)).json()
        assert r["spec"]["replicas"] == 4 and r["status"]["replicas"] == 5  # status untouched
        assert r["metadata"]["generation"] == 2
        # scale subresource
        s = (await h.get(f"{DEPLOYS}/web/scale")).json()
        assert (
            s["kind"] == "Scale"
            and s["spec"]["replicas"] == 4
            and s["status"]["selector"] == "app=web"
        )
        r = await h.patch(f"{DEPLOYS}/web/scale", content=b'{"spec":{"replicas":6}}',
                          headers={"content-type": "application/merge-patch+json"})  # fmt: skip
        assert r.json()["spec"]["replicas"] == 6
        assert (await h.get(f"{DEPLOYS}/web")).json()["spec"]["replicas"] == 6
        r = await h.put(f"{DEPLOYS}/web/scale", json={"spec": {"replicas": -1}})
        assert r.status_code == 422


async def test_binding_and_graceful_delete() -> None:
    async with running_api_server() as srv, Client(srv.url) as c:
        p = await c.pods.create(
            Pod(
                metadata=ObjectMeta(name="p"),
                spec=PodSpec(containers=[Container(name="c", command=["x"])]),
            )
        )
        await c.bind("p", "default", "n1")
        bound = await c.pods.get("p")
        assert bound.spec.node_name == "n1"
        assert any(x.type == "PodScheduled" and x.status == "True" for x in bound.status.conditions)
        with pytest.raises(ConflictError):
            await c.bind("p", "default", "n2")
        assert [x.name for x in await c.pods.list(field_selector="spec.nodeName=n1")] == ["p"]
        assert await c.pods.list(field_selector="spec.nodeName=n2") == []
        # A bound pod is deleted gracefully: deletionTimestamp first, object stays.
        await c.pods.delete("p")
        terminating = await c.pods.get("p")
        assert terminating.metadata.deletion_timestamp is not None
        assert terminating.metadata.deletion_grace_period_seconds == 30
        # The node's agent finishes the deletion with grace 0 and the pod's uid.
        with pytest.raises(ConflictError):
            await c.pods.delete("p", grace_period_seconds=0, uid="other-uid")
        await c.pods.delete("p", grace_period_seconds=0, uid=p.metadata.uid)
        with pytest.raises(NotFoundError):
            await c.pods.get("p")
        # An unbound pod goes at once.
        await c.pods.create(
            Pod(
                metadata=ObjectMeta(name="q"),
                spec=PodSpec(containers=[Container(name="c", command=["x"])]),
            )
        )
        await c.pods.delete("q")
        with pytest.raises(NotFoundError):
            await c.pods.get("q")


async def test_watch_from_revision_and_410_after_compaction() -> None:
    async with running_api_server() as srv, Client(srv.url) as c:
        first = await c.pods.create(pod("w0"))
        rv0 = int(first.metadata.resource_version or 0)
        for i in range(1, 4):
            await c.pods.create(pod(f"w{i}"))
        seen: list[tuple[str, str]] = []

        async def collect() -> None:
            async for kind, obj in c.pods.watch(resource_version=rv0):
                seen.append((kind, obj.name))
                if len(seen) == 4:
                    return

        task = asyncio.create_task(collect())
        await asyncio.sleep(0.2)
        await c.pods.delete("w1")
        await asyncio.wait_for(task, 5)
        assert seen == [("ADDED", "w1"), ("ADDED", "w2"), ("ADDED", "w3"), ("DELETED", "w1")]
        # Label-selected watch without a revision starts with the current objects.
        await c.pods.create(pod("sel", app="z"))
        got = []
        async for kind, obj in c.pods.watch(label_selector="app=z", timeout_seconds=1):
            got.append((kind, obj.name))
        assert got == [("ADDED", "sel")]
        # Compact the history: an old revision now answers 410 Gone.
        for i in range(20):
            await c.pods.create(pod(f"fill{i}"))
        await srv.store.compact(5)
        r = await c.request("GET", "/api/v1/namespaces/default/pods", params={"limit": 1})
        assert r["kind"] == "PodList"
        with pytest.raises(GoneError):
            async for _ in c.pods.watch(resource_version=rv0):
                pass
        async with httpx.AsyncClient(base_url=srv.url) as h:
            resp = await h.get(PODS, params={"watch": "true", "resourceVersion": str(rv0)})
            assert resp.status_code == 410
            assert json.loads(resp.content)["reason"] == "Expired"


async def test_namespace_delete_removes_contents() -> None:
    async with running_api_server() as srv, httpx.AsyncClient(base_url=srv.url) as h:
        assert (
            await h.post(
                "/api/v1/namespaces",
                json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}},
            )
        ).status_code == 201
        assert (await h.post("/api/v1/namespaces/team/pods", json=pod("p"))).status_code == 201
        assert (await h.delete("/api/v1/namespaces/team")).status_code == 200
        assert (await h.get("/api/v1/namespaces/team/pods/p")).status_code == 404
        assert (await h.delete("/api/v1/namespaces/default")).status_code == 400
