"""Allocation at admission: ClusterIPs, NodePorts and Network subnets, through the real API
server, with Kubernetes' error wording and no duplicates under concurrency or restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from shoal.store import open_store
from shoal.testing import running_api_server

SVCS = "/api/v1/namespaces/default/services"
NETS = "/apis/networking.shoal.dev/v1/networks"


def svc(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec}}  # fmt: skip


def net(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.shoal.dev/v1", "kind": "Network",
            "metadata": {"name": name}, "spec": spec}  # fmt: skip


async def test_cluster_ips_are_unique_kept_and_checked(tmp_path: Path) -> None:
    async with running_api_server(tmp_path) as srv, httpx.AsyncClient(base_url=srv.url) as h:
        made = await asyncio.gather(*(h.post(SVCS, json=svc(f"s{i}")) for i in range(20)))
        ips = [r.json()["spec"]["clusterIP"] for r in made]
        assert all(r.status_code == 201 for r in made)
        assert len(set(ips)) == 20 and "10.96.0.10" not in ips and "10.96.0.1" not in ips
        # An update without clusterIP keeps it; changing it is refused.
        got = (await h.get(f"{SVCS}/s0")).json()
        body = {**got, "spec": {**got["spec"], "clusterIP": None}}
        r = await h.put(f"{SVCS}/s0", json=body)
        assert r.status_code == 200 and r.json()["spec"]["clusterIP"] == ips[0]
        body = {**r.json(), "spec": {**r.json()["spec"], "clusterIP": "10.96.9.9"}}
        r = await h.put(f"{SVCS}/s0", json=body)
        assert r.status_code == 422 and "spec.clusterIP" in r.json()["message"]
        assert "field is immutable" in r.json()["message"]
        # Explicit addresses: taken, out of range, headless.
        r = await h.post(SVCS, json=svc("dup", clusterIP=ips[1]))
        assert r.status_code == 422
        assert r.json()["details"]["causes"][0]["field"] == "spec.clusterIP"
        assert "provided IP is already allocated" in r.json()["message"]
        r = await h.post(SVCS, json=svc("far", clusterIP="192.168.0.1"))
        assert r.status_code == 422 and "not in the valid range" in r.json()["message"]
        r = await h.post(SVCS, json=svc("headless", clusterIP="None"))
        assert r.status_code == 201 and r.json()["spec"]["clusterIP"] == "None"
        # A deleted Service's address is free again.
        assert (await h.delete(f"{SVCS}/s3")).status_code == 200
        r = await h.post(SVCS, json=svc("again"))
        assert r.json()["spec"]["clusterIP"] == ips[3]
    # After a restart on the same data dir the next address is still a new one.
    async with running_api_server(tmp_path) as srv, httpx.AsyncClient(base_url=srv.url) as h:
        r = await h.post(SVCS, json=svc("after-restart"))
        assert r.json()["spec"]["clusterIP"] not in ips


async def test_node_ports() -> None:
    async with running_api_server() as srv, httpx.AsyncClient(base_url=srv.url) as h:
        r = await h.post(SVCS, json=svc("a", type="NodePort"))
        assert r.status_code == 201 and r.json()["spec"]["ports"][0]["nodePort"] == 30000
        r = await h.post(
            SVCS, json=svc("b", type="NodePort", ports=[{"port": 80, "nodePort": 30000}])
        )
        assert r.status_code == 422
        assert r.json()["details"]["causes"][0]["field"] == "spec.ports[0].nodePort"
        assert "provided port is already allocated" in r.json()["message"]
        r = await h.post(
            SVCS, json=svc("c", type="NodePort", ports=[{"port": 80, "nodePort": 31000}])
        )
        assert r.json()["spec"]["ports"][0]["nodePort"] == 31000
        r = await h.post(SVCS, json=svc("d", type="NodePort"))
        assert r.json()["spec"]["ports"][0]["nodePort"] == 30001
        # Updating keeps the allocated node port.
        got = r.json()
        got["spec"]["ports"][0].pop("nodePort")
        r = await h.put(f"{SVCS}/d", json=got)
        assert r.json()["spec"]["ports"][0]["nodePort"] == 30001


async def test_networks_default_subnets_and_overlaps() -> None:
    async with running_api_server() as srv, httpx.AsyncClient(base_url=srv.url) as h:
        default = (await h.get(f"{NETS}/default")).json()
        assert default["spec"]["subnet"] == "10.244.0.0/16"
        r = await h.post(NETS, json=net("frontend"))
        assert r.status_code == 201 and r.json()["spec"]["subnet"] == "172.16.0.0/16"
        r = await h.post(NETS, json=net("backend", internal=True))
        assert r.json()["spec"] == {"subnet": "172.17.0.0/16", "internal": True}
        r = await h.post(NETS, json=net("clash", subnet="10.244.8.0/24"))
        assert r.status_code == 422 and 'overlaps the subnet of network \\"default\\"' in r.text
        r = await h.post(NETS, json=net("svc", subnet="10.96.0.0/24"))
        assert r.status_code == 422 and "the service range" in r.json()["message"]
        r = await h.post(NETS, json=net("bad", subnet="10.1.2.3/16"))
        assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "spec.subnet"
        r = await h.post(NETS, json=net("odd", subnet="10.7.0.0/16", nodePrefixLength=12))
        assert r.status_code == 422 and "spec.nodePrefixLength" in r.json()["message"]
        got = (await h.get(f"{NETS}/frontend")).json()
        got["spec"]["subnet"] = "10.50.0.0/16"
        r = await h.put(f"{NETS}/frontend", json=got)
        assert r.status_code == 422 and "field is immutable" in r.json()["message"]


async def test_pod_networks_are_validated() -> None:
    async with running_api_server() as srv, httpx.AsyncClient(base_url=srv.url) as h:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"networks": ["front", "front", "Bad_Name"], "hostNetwork": True,
                        "containers": [{"name": "c", "image": "x"}]}}  # fmt: skip
        r = await h.post("/api/v1/namespaces/default/pods", json=pod)
        assert r.status_code == 422
        fields = {c["field"] for c in r.json()["details"]["causes"]}
        assert fields == {"spec.networks[1]", "spec.networks[2]", "spec.networks"}


async def test_services_stored_without_a_cluster_ip_get_one_at_start(tmp_path: Path) -> None:
    """Services written by a shoal that allocated no addresses (before networking) get a
    ClusterIP, and NodePorts, when the API server starts; nothing else about them changes."""
    async with running_api_server(tmp_path) as srv, httpx.AsyncClient(base_url=srv.url) as h:
        for body in (svc("old"), svc("oldnp", type="NodePort"), svc("keep")):
            assert (await h.post(SVCS, json=body)).status_code == 201
        kept = (await h.get(f"{SVCS}/keep")).json()["spec"]["clusterIP"]
    store = open_store(tmp_path / "state.db")
    try:
        for name in ("old", "oldnp"):
            obj = await store.get("services", "default", name)
            obj["spec"].pop("clusterIP")
            for port in obj["spec"]["ports"]:
                port.pop("nodePort", None)
            await store.update("services", obj)
    finally:
        await store.close()
    async with running_api_server(tmp_path) as srv, httpx.AsyncClient(base_url=srv.url) as h:
        got = {n: (await h.get(f"{SVCS}/{n}")).json()["spec"] for n in ("old", "oldnp", "keep")}
    ips = [got[n]["clusterIP"] for n in ("old", "oldnp", "keep")]
    assert ips[2] == kept and len(set(ips)) == 3
    assert all(ip.startswith("10.96.") for ip in ips)
    assert 30000 <= got["oldnp"]["ports"][0]["nodePort"] <= 32767
    assert got["old"]["selector"] == {"app": "old"}
