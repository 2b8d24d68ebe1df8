"""Services' cluster IPs in DNS, end to end: Services and Endpoints written through the
Kubernetes API, the registry following them, the DNS server it runs answering dnspython and
dig: ``NAME.NS.svc.cluster.local`` is the cluster IP, a headless Service's is its Ready
pods, ``NAME.service.consul`` is always the pods."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import httpx
import pytest

from shoal.discovery import RegistryConfig
from shoal.testing import RunningAPIServer, running_api_server

NS = "/api/v1/namespaces/default"


@pytest.fixture
async def srv() -> AsyncIterator[RunningAPIServer]:
    config = RegistryConfig(node_name="dns-vip-node", consul_port=-1, dns_port=0)
    async with running_api_server(registry=config) as s:
        yield s


@pytest.fixture
async def k8s(srv: RunningAPIServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=srv.url) as client:
        yield client


def _service(name: str, cluster_ip: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"app": name},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
    }
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def _endpoints(name: str, ready: list[str], not_ready: list[str]) -> dict[str, Any]:
    def addr(ip: str) -> dict[str, Any]:
        return {"ip": ip, "targetRef": {"kind": "Pod", "name": f"{name}-{ip}"}}

    return {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
        "subsets": [{
            "addresses": [addr(ip) for ip in ready],
            "notReadyAddresses": [addr(ip) for ip in not_ready],
            "ports": [{"name": "http", "port": 8080}],
        }],
    }  # fmt: skip


async def _create(k8s: httpx.AsyncClient, resource: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = await k8s.post(f"{NS}/{resource}", json=body)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def _query(srv: RunningAPIServer, name: str, rdtype: str = "A") -> dns.message.Message:
    assert srv.registry is not None
    query = dns.message.make_query(name, rdtype)
    return await dns.asyncquery.udp(query, "127.0.0.1", port=srv.registry.dns_port, timeout=2)


def _records(msg: dns.message.Message, section: str = "answer") -> set[str]:
    return {rd.to_text() for rrset in getattr(msg, section) for rd in rrset}


async def _eventually(srv: RunningAPIServer, name: str, want: set[str], rdtype: str = "A") -> None:
    """Wait (up to 5 s: the registry applies watch events asynchronously) for ``want``."""
    deadline = time.monotonic() + 5
    while (got := _records(await _query(srv, name, rdtype))) != want:
        assert time.monotonic() < deadline, f"{name} {rdtype}: {got}, want {want}"
        await asyncio.sleep(0.05)


async def test_cluster_ip_headless_and_consul_names(
    srv: RunningAPIServer, k8s: httpx.AsyncClient
) -> None:
    await _create(k8s, "services", _service("shop", "10.96.7.7"))
    await _create(k8s, "endpoints", _endpoints("shop", ["10.1.0.1", "10.1.0.2"], ["10.1.0.3"]))
    await _create(k8s, "services", _service("cache", "None"))
    await _create(k8s, "endpoints", _endpoints("cache", ["10.1.1.1", "10.1.1.2"], ["10.1.1.3"]))

    await _eventually(srv, "shop.default.svc.cluster.local", {"10.96.7.7"})
    await _eventually(srv, "shop.service.consul", {"10.1.0.1", "10.1.0.2"})
    await _eventually(srv, "cache.default.svc.cluster.local", {"10.1.1.1", "10.1.1.2"})
    await _eventually(srv, "cache.service.consul", {"10.1.1.1", "10.1.1.2"})

    srv_msg = await _query(srv, "_http._tcp.shop.default.svc.cluster.local", "SRV")
    assert _records(srv_msg) == {"0 100 80 shop.default.svc.cluster.local."}
    assert _records(srv_msg, "additional") == {"10.96.7.7"}
    missing = await _query(srv, "_grpc._tcp.shop.default.svc.cluster.local", "SRV")
    assert missing.rcode() == dns.rcode.NXDOMAIN


async def test_an_allocated_cluster_ip_and_updates(
    srv: RunningAPIServer, k8s: httpx.AsyncClient
) -> None:
    # No clusterIP in the manifest: the API server allocates one, and DNS answers it even
    # before any pod is Ready (kube-dns' rule).
    created = await _create(k8s, "services", _service("api", None))
    allocated = created["spec"]["clusterIP"]
    assert allocated not in (None, "", "None")
    await _eventually(srv, "api.default.svc.cluster.local", {allocated})
    assert (await _query(srv, "api.service.consul")).rcode() == dns.rcode.NXDOMAIN
    await _create(k8s, "endpoints", _endpoints("api", ["10.1.2.1"], []))
    await _eventually(srv, "api.service.consul", {"10.1.2.1"})
    assert _records(await _query(srv, "api.default.svc.cluster.local")) == {allocated}

    # The clusterIP is immutable: recreating the Service headless switches the name to pods.
    resp = await k8s.delete(f"{NS}/services/api")
    assert resp.status_code == 200, resp.text
    await _eventually(srv, "api.default.svc.cluster.local", set())
    await _create(k8s, "services", _service("api", "None"))
    await _eventually(srv, "api.default.svc.cluster.local", {"10.1.2.1"})
    # ... and back to a cluster IP.
    await k8s.delete(f"{NS}/services/api")
    await _create(k8s, "services", _service("api", "10.96.7.9"))
    await _eventually(srv, "api.default.svc.cluster.local", {"10.96.7.9"})


async def test_dig(srv: RunningAPIServer, k8s: httpx.AsyncClient) -> None:
    if shutil.which("dig") is None:
        if os.geteuid() != 0:
            pytest.skip("dig not installed (dnsutils)")
        pytest.fail("running as root but dig is not installed (make test installs dnsutils)")
    assert srv.registry is not None
    await _create(k8s, "services", _service("web", "10.96.7.8"))
    await _eventually(srv, "web.default.svc.cluster.local", {"10.96.7.8"})

    port = str(srv.registry.dns_port)

    def dig(*args: str) -> list[str]:
        proc = subprocess.run(
            ["dig", "@127.0.0.1", "-p", port, "+short", "+time=2", "+tries=1", *args],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
        return proc.stdout.split("\n")[:-1]

    assert await asyncio.to_thread(dig, "web.default.svc.cluster.local") == ["10.96.7.8"]
    assert await asyncio.to_thread(dig, "SRV", "_http._tcp.web.default.svc.cluster.local") == [
        "0 100 80 web.default.svc.cluster.local."
    ]
