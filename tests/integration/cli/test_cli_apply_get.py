"""apply, get, delete, scale and errors, through the CLI against a real API server."""

from __future__ import annotations

import json
from pathlib import Path

from shoal.client import Client
from shoal.testing import RunningAPIServer, free_port
from tests.integration.cli.conftest import Cli

WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: "nginx:1.25", ports: [{name: http, containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: alpha, labels: {tier: front}}
spec:
  containers: [{name: c, command: [sleep, "60"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: beta, labels: {tier: back}}
spec:
  containers: [{name: c, command: [sleep, "60"]}]
"""

INVALID = """
apiVersion: v1
kind: Pod
metadata: {name: fine}
spec:
  containers: [{name: c, image: nginx}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  replicas: -1
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: other}}
    spec:
      containers: [{name: c}]
"""


async def test_apply_creates_then_is_unchanged_then_configured(cli: Cli, client: Client) -> None:
    first = await cli("apply", "-f", "-", input=WEB)
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == ["deployment.apps/web created", "service/web created"]

    again = await cli("apply", "-f", "-", input=WEB)
    assert again.stdout.splitlines() == ["deployment.apps/web unchanged", "service/web unchanged"]

    third = await cli("apply", "-f", "-", input=WEB.replace("nginx:1.25", "nginx:1.26"))
    assert third.stdout.splitlines() == ["deployment.apps/web configured", "service/web unchanged"]
    dep = await client.deployments.get("web")
    assert dep.spec.template.spec.containers[0].image == "nginx:1.26"
    assert dep.metadata.generation == 2


async def test_apply_keeps_server_managed_fields(cli: Cli, client: Client) -> None:
    await cli("apply", "-f", "-", input=PODS)
    await client.bind("alpha", "default", "node-a")
    out = await cli("apply", "-f", "-", input=PODS)
    assert "pod/alpha unchanged" in out.stdout
    assert (await client.pods.get("alpha")).spec.node_name == "node-a"


async def test_apply_from_files_and_directories(cli: Cli, client: Client, tmp_path: Path) -> None:
    (tmp_path / "b-web.yaml").write_text(WEB)
    (tmp_path / "a-pods.json").write_text(json.dumps({
        "apiVersion": "v1", "kind": "List",
        "items": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gamma"},
                   "spec": {"containers": [{"name": "c", "image": "busybox"}]}}],
    }))  # fmt: skip
    res = await cli("apply", "-f", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        "pod/gamma created",
        "deployment.apps/web created",
        "service/web created",
    ]


async def test_invalid_manifest_changes_nothing(cli: Cli, client: Client) -> None:
    res = await cli("apply", "-f", "-", input=INVALID)
    assert res.exit_code == 1
    err = res.stderr
    assert 'error: <stdin> (document 2): Deployment "bad" is invalid:' in err
    assert "  spec.replicas: Invalid value: -1" in err
    assert "  spec.template.spec.containers[0].image: Required value" in err
    assert "  spec.template.metadata.labels: " in err
    assert "Traceback" not in res.output
    assert res.stdout == ""
    assert await client.pods.list() == []
    assert await client.deployments.list() == []


async def test_server_refusal_of_one_object_is_reported_and_others_applied(
    cli: Cli, client: Client
) -> None:
    elsewhere = PODS.replace("{name: beta,", "{name: beta, namespace: missing,")
    res = await cli("apply", "-f", "-", input=elsewhere)
    assert res.exit_code == 1
    assert "pod/alpha created" in res.stdout
    assert 'error: <stdin> (document 2): namespaces "missing" not found' in res.stderr
    assert [p.name for p in await client.pods.list()] == ["alpha"]


async def test_get_tables_and_formats(cli: Cli) -> None:
    await cli("apply", "-f", "-", input=WEB + "---\n" + PODS)

    pods = await cli("get", "po")
    lines = pods.stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert lines[1].split()[:4] == ["alpha", "0/1", "Pending", "0"]
    assert lines[2].split()[0] == "beta"
    assert all(line == line.rstrip() for line in lines)

    wide = await cli("get", "pods", "-o", "wide")
    assert wide.stdout.splitlines()[0].split()[-4:] == ["IP", "NODE", "NOMINATED", "NODE"]

    deploy = await cli("get", "deploy")
    assert deploy.stdout.splitlines()[0].split() == [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
    ]
    assert deploy.stdout.splitlines()[1].split()[:4] == ["web", "0/2", "0", "0"]

    svc = await cli("get", "svc", "-A")
    assert svc.stdout.splitlines()[0].split() == [
        "NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "AGE",
    ]  # fmt: skip
    assert svc.stdout.splitlines()[1].split()[:5] == [
        "default",
        "web",
        "ClusterIP",
        "10.96.0.2",  # the first free address of the service range (.1 is kept back)
        "80/TCP",
    ]

    selected = await cli("get", "pods", "-l", "tier=front", "-o", "json")
    data = json.loads(selected.stdout)
    assert data["kind"] == "List"
    assert [i["metadata"]["name"] for i in data["items"]] == ["alpha"]

    one = json.loads((await cli("get", "deployment", "web", "-o", "json")).stdout)
    assert one["kind"] == "Deployment" and one["spec"]["replicas"] == 2

    names = await cli("get", "deploy,svc", "-o", "name")
    assert names.stdout.splitlines() == ["deployment.apps/web", "service/web"]

    yaml_out = await cli("get", "svc/web", "-o", "yaml")
    assert "kind: Service" in yaml_out.stdout and "name: web" in yaml_out.stdout


async def test_get_empty_and_missing(cli: Cli) -> None:
    empty = await cli("get", "pods")
    assert empty.exit_code == 0
    assert empty.stderr.strip() == "No resources found in default namespace."
    missing = await cli("get", "pod", "ghost")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == 'error: pods "ghost" not found'
    unknown = await cli("get", "frobs")
    assert unknown.exit_code == 1
    assert 'doesn\'t have a resource type "frobs"' in unknown.stderr


async def test_delete_by_name_and_by_file(cli: Cli, client: Client, tmp_path: Path) -> None:
    await cli("apply", "-f", "-", input=WEB + "---\n" + PODS)
    res = await cli("delete", "pod", "alpha", "ghost")
    assert res.exit_code == 1
    assert res.stdout.splitlines() == ['pod "alpha" deleted']
    assert 'error: pods "ghost" not found' in res.stderr
    assert [p.name for p in await client.pods.list()] == ["beta"]

    manifest = tmp_path / "web.yaml"
    manifest.write_text(WEB)
    res = await cli("delete", "-f", str(manifest))
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == ['deployment.apps "web" deleted', 'service "web" deleted']
    assert await client.deployments.list() == []

    forced = await cli("delete", "po", "-l", "tier=back", "--force")
    assert forced.stdout.splitlines() == ['pod "beta" force deleted']
    assert "Immediate deletion" in forced.stderr
    assert await client.pods.list() == []


async def test_scale(cli: Cli, client: Client) -> None:
    await cli("apply", "-f", "-", input=WEB)
    res = await cli("scale", "deployment", "web", "--replicas", "5")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == "deployment.apps/web scaled"
    assert (await client.deployments.get("web")).spec.replicas == 5
    bad = await cli("scale", "svc", "web", "--replicas", "2")
    assert bad.exit_code == 1 and "cannot be scaled" in bad.stderr


async def test_version(cli: Cli) -> None:
    res = await cli("version")
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert lines[0].startswith("Client Version: shoal ")
    assert lines[1].startswith("Server Version: v1.")


async def test_logs_of_an_unscheduled_pod_is_one_error_line(cli: Cli) -> None:
    await cli("apply", "-f", "-", input=PODS)
    res = await cli("logs", "alpha")
    assert res.exit_code == 1
    assert res.stderr.strip() == 'error: pod "alpha" is not scheduled to a node yet; it has no logs'


async def test_unreachable_server_is_one_readable_line(server: RunningAPIServer) -> None:
    import asyncio

    from typer.testing import CliRunner

    from shoal.cli import app

    url = f"http://127.0.0.1:{free_port()}"
    res = await asyncio.to_thread(CliRunner().invoke, app, ["--server", url, "get", "pods"])
    assert res.exit_code == 1
    assert res.stderr == f"error: cannot reach the API server at {url}: is `shoal up` running?\n"
    env = await asyncio.to_thread(
        CliRunner().invoke, app, ["get", "pods"], env={"SHOAL_SERVER": url}
    )
    assert env.exit_code == 1 and url in env.stderr


async def test_get_watch_prints_rows_as_changes_arrive(
    cli: Cli, server: RunningAPIServer, client: Client
) -> None:
    """``get -w`` runs until Ctrl-C, so it runs as a child process here and gets a SIGINT."""
    import asyncio
    import signal
    import sys

    await cli("apply", "-f", "-", input=WEB)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shoal.cli", "--server", server.url, "get", "deploy", "-w",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        header = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert header.decode().split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        first = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert first.decode().split()[:2] == ["web", "0/2"]
        await client.scale("Deployment", "web", 4)
        changed = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert changed.decode().split()[:2] == ["web", "0/4"]
        # later rows keep the first table's columns
        assert changed.decode().index("0/4") == first.decode().index("0/2")
        assert changed.decode().index("0/4") == header.decode().index("READY")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        _out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 130
    assert b"Traceback" not in err


async def test_apply_dry_run_writes_nothing(cli: Cli, client: Client) -> None:
    res = await cli("apply", "--dry-run", "-f", "-", input=PODS)
    assert res.stdout.splitlines() == ["pod/alpha created (dry run)", "pod/beta created (dry run)"]
    assert await client.pods.list() == []


NO_REPLICAS = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: tw
  labels: {team: a, tier: web}
spec:
  selector: {matchLabels: {app: tw}}
  template:
    metadata: {labels: {app: tw}}
    spec:
      containers: [{name: c, command: [sleep, "9"], ports: [{name: http, containerPort: 80}]}]
"""


async def test_apply_is_a_three_way_merge(cli: Cli, client: Client) -> None:
    """Like kubectl apply: what others set survives a re-apply; what the manifest dropped goes."""
    assert (await cli("apply", "-f", "-", input=NO_REPLICAS)).exit_code == 0
    dep = await client.deployments.get("tw")
    assert "kubectl.kubernetes.io/last-applied-configuration" in dep.metadata.annotations
    # Others change the object: a scale (the manifest has no replicas) and an annotation.
    await client.scale("Deployment", "tw", 5)
    await client.deployments.patch("tw", {"metadata": {"annotations": {"owner/note": "kept"}}})
    again = await cli("apply", "-f", "-", input=NO_REPLICAS)
    assert again.stdout.splitlines() == ["deployment.apps/tw unchanged"], again.output
    dep = await client.deployments.get("tw")
    assert dep.spec.replicas == 5
    assert dep.metadata.annotations["owner/note"] == "kept"
    # Dropping a label from the manifest removes it; the others' annotation stays.
    out = await cli("apply", "-f", "-", input=NO_REPLICAS.replace(", tier: web", ""))
    assert out.stdout.splitlines() == ["deployment.apps/tw configured"], out.output
    dep = await client.deployments.get("tw")
    assert dep.metadata.labels == {"team": "a"}
    assert dep.metadata.annotations["owner/note"] == "kept"
    assert dep.spec.replicas == 5
