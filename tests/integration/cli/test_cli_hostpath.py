"""`shoal apply -f FILE` resolves a relative hostPath against the manifest's directory."""

from __future__ import annotations

from pathlib import Path

from shoal.client import Client
from tests.integration.cli.conftest import Cli

POD = """
apiVersion: v1
kind: Pod
metadata: {name: mounted}
spec:
  containers:
    - name: c
      command: [cat, /app/hello.txt]
      volumeMounts: [{name: app, mountPath: /app, readOnly: true}]
  volumes: [{name: app, hostPath: {path: ./site, type: Directory}}]
"""


async def test_apply_resolves_relative_host_paths(cli: Cli, client: Client, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "site").mkdir(parents=True)
    (project / "pod.yaml").write_text(POD)
    res = await cli("apply", "-f", str(project / "pod.yaml"))
    assert res.exit_code == 0, res.output
    pod = await client.pods.get("mounted")
    host_path = pod.spec.volumes[0].host_path
    assert host_path is not None and host_path.path == str(project / "site")
    # Applying the same file from elsewhere changes nothing: the path is the file's, not the cwd's.
    again = await cli("apply", "-f", str(project))
    assert again.stdout.strip() == "pod/mounted unchanged"
