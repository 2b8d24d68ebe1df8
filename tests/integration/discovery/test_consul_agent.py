"""Consul agent endpoints (``/v1/agent/service/*``, ``/v1/agent/check/*``) through the real
py-consul client, checked against Consul's documented behaviour: the issue's exact register
call, lookups by ID, node-level and service-attached checks, TTL updates with notes and
output, re-registration keeping check state, ``replace-existing-checks``, and errors.

Plain httpx appears only where py-consul has no call for the request
(``/v1/agent/check/update``) or hides the status code.
"""

from __future__ import annotations

import consul.aio
import consul.exceptions
import httpx
import pytest
from consul import Check

pytestmark = pytest.mark.asyncio

NODE = "agent-compat-node"


async def test_issue_register_call_and_service_lookup(c: consul.aio.Consul) -> None:
    assert await c.agent.service.register(
        "my-service", service_id="my-service", address="127.0.0.1", port=8080,
        tags=["web", "api"], check=Check.ttl("10s"),
    )  # fmt: skip
    svc = await c.agent.service_definition("my-service")
    assert svc["ID"] == "my-service" and svc["Service"] == "my-service"
    assert svc["Address"] == "127.0.0.1" and svc["Port"] == 8080
    assert svc["Tags"] == ["web", "api"]
    assert svc["Weights"] == {"Passing": 1, "Warning": 1}
    assert await c.agent.service_definition("not-there") is None  # a 404, as Consul

    checks = await c.agent.checks()
    ttl = checks["service:my-service"]
    assert ttl["Status"] == "critical"  # Consul's initial status for a check
    assert ttl["ServiceID"] == "my-service" and ttl["ServiceName"] == "my-service"
    assert ttl["Type"] == "ttl" and ttl["Node"] == NODE
    assert "serfHealth" not in checks  # the agent lists only checks registered on it

    # Meta, weights and the service ID defaulting to the name.
    assert await c.agent.service.register(
        "other", port=9, meta={"version": "2"}, weights={"Passing": 3, "Warning": 1}
    )
    services = await c.agent.services()
    assert set(services) == {"my-service", "other"}
    assert services["other"]["Meta"] == {"version": "2"}
    assert services["other"]["Weights"] == {"Passing": 3, "Warning": 1}

    assert await c.agent.service.deregister("other")
    assert set(await c.agent.services()) == {"my-service"}
    assert await c.agent.service.deregister("other") is False  # 404 now
    assert await c.agent.service.deregister("my-service")
    assert await c.agent.services() == {}
    assert await c.agent.checks() == {}  # its check went with it


async def test_ttl_updates_record_status_notes_and_output(
    c: consul.aio.Consul, http: httpx.AsyncClient
) -> None:
    await c.agent.service.register("ttl-svc", service_id="ttl-1", port=1, check=Check.ttl("30s"))
    cid = "service:ttl-1"
    for call, status in (
        (c.agent.check.ttl_pass, "passing"),
        (c.agent.check.ttl_warn, "warning"),
        (c.agent.check.ttl_fail, "critical"),
    ):
        assert await call(cid, f"note for {status}")
        check = (await c.agent.checks())[cid]
        assert (check["Status"], check["Output"]) == (status, f"note for {status}")
        _, entries = await c.health.service("ttl-svc")
        assert [ch["Status"] for ch in entries[0]["Checks"] if ch["CheckID"] == cid] == [status]

    # /v1/agent/check/update: Status and Output in a JSON body (py-consul has no call for it).
    resp = await http.put(
        f"/v1/agent/check/update/{cid}", json={"Status": "passing", "Output": "all good"}
    )
    assert resp.status_code == 200, resp.text
    check = (await c.agent.checks())[cid]
    assert (check["Status"], check["Output"]) == ("passing", "all good")
    resp = await http.put(f"/v1/agent/check/update/{cid}", json={"Status": "fine"})
    assert resp.status_code == 400 and "fine" in resp.text
    assert (await c.agent.checks())[cid]["Status"] == "passing"  # unchanged
    resp = await http.put("/v1/agent/check/update/nope", json={"Status": "passing"})
    assert resp.status_code == 404 and '"nope"' in resp.text
    assert await c.agent.check.ttl_pass("nope") is False  # 404


async def test_node_and_service_checks_register_and_deregister(c: consul.aio.Consul) -> None:
    await c.agent.service.register("web", service_id="web-1", port=80)
    _, entries = await c.health.service("web", passing=True)
    assert [e["Service"]["ID"] for e in entries] == ["web-1"]  # no checks: healthy

    # A node-level check affects every instance on the node.
    assert await c.agent.check.register("maint", Check.ttl("1m"), check_id="node-maint",
                                        notes="maintenance window")  # fmt: skip
    checks = await c.agent.checks()
    assert checks["node-maint"]["ServiceID"] == ""
    assert checks["node-maint"]["Name"] == "maint"
    assert checks["node-maint"]["Notes"] == "maintenance window"
    _, entries = await c.health.service("web", passing=True)
    assert entries == []  # the node check is critical
    _, entries = await c.health.service("web")
    assert {ch["CheckID"] for ch in entries[0]["Checks"]} == {"serfHealth", "node-maint"}
    _, node_checks = await c.health.node(NODE)
    assert {ch["CheckID"] for ch in node_checks} == {"serfHealth", "node-maint"}
    await c.agent.check.ttl_pass("node-maint")
    _, entries = await c.health.service("web", passing=True)
    assert [e["Service"]["ID"] for e in entries] == ["web-1"]

    # A check attached to the service by ServiceID, with an explicit initial status.
    check = {**Check.ttl("1m"), "Status": "warning"}
    assert await c.agent.check.register("web-extra", check, service_id="web-1")
    got = (await c.agent.checks())["web-extra"]
    assert (got["ServiceID"], got["ServiceName"], got["Status"]) == ("web-1", "web", "warning")
    _, entries = await c.health.service("web", passing=True)
    assert entries == []  # warning is not passing
    _, service_checks = await c.health.checks("web")
    assert {ch["CheckID"] for ch in service_checks} == {"web-extra"}  # node checks excluded

    assert await c.agent.check.deregister("web-extra")
    assert await c.agent.check.deregister("node-maint")
    assert await c.agent.check.deregister("node-maint") is False  # 404
    assert set(await c.agent.checks()) == set()
    _, entries = await c.health.service("web", passing=True)
    assert [e["Service"]["ID"] for e in entries] == ["web-1"]


async def test_check_register_errors(c: consul.aio.Consul, http: httpx.AsyncClient) -> None:
    resp = await http.put("/v1/agent/check/register", json={"Name": "x", "TTL": "10s",
                                                            "ServiceID": "no-such"})  # fmt: skip
    assert resp.status_code in (400, 404) and '"no-such"' in resp.text
    resp = await http.put("/v1/agent/check/register", json={"TTL": "10s"})
    assert resp.status_code == 400 and "Missing check name" in resp.text
    resp = await http.put("/v1/agent/check/register", json={"Name": "x", "TTL": "soon"})
    assert resp.status_code == 400 and '"soon"' in resp.text
    with pytest.raises(consul.exceptions.BadRequest):
        await c.agent.check.register("x", {"http": "http://127.0.0.1:1/"})
    assert await c.agent.checks() == {}


async def test_reregistration_keeps_state_and_replace_existing_checks(
    c: consul.aio.Consul,
) -> None:
    await c.agent.service.register(
        "db", service_id="db-1", port=5432, check=Check.ttl("1m"),
        extra_checks=[{"CheckID": "db-disk", "Name": "disk", "TTL": "1m"}],
    )  # fmt: skip
    checks = await c.agent.checks()
    # With several checks and no IDs, Consul numbers them service:ID:N.
    assert set(checks) == {"service:db-1:1", "db-disk"}
    await c.agent.check.ttl_pass("service:db-1:1", "up")
    await c.agent.check.ttl_warn("db-disk", "80% full")

    # Registering again with the same checks changes the service, keeps check results.
    await c.agent.service.register(
        "db", service_id="db-1", port=6432, tags=["primary"], check=Check.ttl("1m"),
        extra_checks=[{"CheckID": "db-disk", "Name": "disk", "TTL": "1m"}],
    )  # fmt: skip
    checks = await c.agent.checks()
    assert (checks["service:db-1:1"]["Status"], checks["service:db-1:1"]["Output"]) == (
        "passing", "up"
    )  # fmt: skip
    assert checks["db-disk"]["Status"] == "warning"
    svc = await c.agent.service_definition("db-1")
    assert (svc["Port"], svc["Tags"]) == (6432, ["primary"])

    # Without replace-existing-checks a check left out of the body stays ...
    await c.agent.service.register(
        "db", service_id="db-1", port=6432, check={"CheckID": "db-disk", "Name": "disk",
                                                  "TTL": "1m"},
    )  # fmt: skip
    assert set(await c.agent.checks()) == {"service:db-1:1", "db-disk"}
    # ... and with it, it goes.
    await c.agent.service.register(
        "db", service_id="db-1", port=6432, replace_existing_checks=True,
        check={"CheckID": "db-disk", "Name": "disk", "TTL": "1m"},
    )  # fmt: skip
    checks = await c.agent.checks()
    assert set(checks) == {"db-disk"} and checks["db-disk"]["Status"] == "warning"
    _, service_checks = await c.health.checks("db")
    assert [ch["CheckID"] for ch in service_checks] == ["db-disk"]
