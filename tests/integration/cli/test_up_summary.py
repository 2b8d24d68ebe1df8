"""What `shoal up -f` prints once the manifests are applied: each Service's endpoints, and its
ClusterIP where a node programs ClusterIPs (bridge networking)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from shoal.api import NETWORK_LABEL
from shoal.cli import _run
from shoal.client import Client


async def summary(client: Client, monkeypatch: pytest.MonkeyPatch) -> str:
    out = io.StringIO()
    monkeypatch.setattr(_run, "console", Console(file=out, width=200))
    await _run._print_pods(client)
    return out.getvalue()


async def test_services_show_their_cluster_ip_on_bridge_nodes(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = await client.services.create(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
         "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    )  # fmt: skip
    await client.endpoints.create(
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "hello"},
         "subsets": [{"addresses": [{"ip": "10.244.0.5"}], "ports": [{"port": 8080}]}]}
    )  # fmt: skip
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {}}}
    await client.nodes.create(node)
    vip = svc.spec.cluster_ip
    assert vip and vip.startswith("10.96.")
    # Host networking: the ClusterIP is not programmed anywhere, so it is not shown.
    assert "service/hello -> 10.244.0.5:8080" in await summary(client, monkeypatch)
    got = await client.nodes.get("n1")
    got.metadata.labels[NETWORK_LABEL] = "bridge"
    await client.nodes.update(got)
    assert f"service/hello {vip}:80 -> 10.244.0.5:8080" in await summary(client, monkeypatch)
