"""`shoal exec` and `shoal top` against a real API server and agent (ProcessDriver)."""

from __future__ import annotations

import asyncio
import time

from shoal.client import Client
from tests.integration.cli.conftest import Cli, Node


async def test_exec_prints_streams_and_exits_with_the_command_code(cli: Cli, node: Node) -> None:
    await node.run_pod("box", [{"name": "main", "command": ["sleep", "60"]}])
    ok = await cli("exec", "box", "--", "sh", "-c", "echo out; echo err >&2")
    assert (ok.exit_code, ok.stdout, ok.stderr) == (0, "out\n", "err\n"), ok.stderr

    failed = await cli("exec", "pod/box", "--", "sh", "-c", "exit 3")
    assert failed.exit_code == 3
    assert "command terminated with exit code 3" in failed.stderr

    echoed = await cli("exec", "-i", "box", "--", "tr", "a-z", "A-Z", input="shout\n")
    assert (echoed.exit_code, echoed.stdout) == (0, "SHOUT\n")

    missing = await cli("exec", "ghost", "--", "true")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == 'error: pods "ghost" not found'

    nothing = await cli("exec", "box")
    assert nothing.exit_code == 1 and "at least one command" in nothing.stderr


async def test_exec_defaults_to_the_first_container_and_says_so(cli: Cli, node: Node) -> None:
    await node.run_pod(
        "duo",
        [
            {"name": "first", "command": ["sleep", "60"], "env": [{"name": "WHO", "value": "1"}]},
            {"name": "second", "command": ["sleep", "60"], "env": [{"name": "WHO", "value": "2"}]},
        ],
    )
    res = await cli("exec", "duo", "--", "sh", "-c", "echo $WHO")
    assert res.stdout == "1\n"
    assert 'Defaulted container "first" out of: first, second' in res.stderr
    res = await cli("exec", "duo", "-c", "second", "--", "sh", "-c", "echo $WHO")
    assert (res.stdout, res.stderr) == ("2\n", "")


async def test_top_pods_and_nodes(cli: Cli, client: Client, node: Node) -> None:
    busy = "while :; do :; done"
    await node.run_pod("spinner", [{"name": "spin", "command": ["sh", "-c", busy]}])
    await node.run_pod("idle", [{"name": "main", "command": ["sleep", "60"]}])
    deadline = time.monotonic() + 15
    while True:
        res = await cli("top", "pods")
        rows = {line.split()[0]: line.split() for line in res.stdout.splitlines()[1:]}
        if res.exit_code == 0 and {"spinner", "idle"} <= set(rows):
            break
        assert time.monotonic() < deadline, res.output
        await asyncio.sleep(0.3)
    assert res.stdout.splitlines()[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    spin_cpu, spin_mem = rows["spinner"][1:]
    assert spin_cpu.endswith("m") and int(spin_cpu[:-1]) >= 300  # a busy loop: most of a core
    assert spin_mem.endswith("Mi")
    assert int(rows["idle"][1][:-1]) < 100

    everywhere = await cli("top", "pods", "-A")
    assert everywhere.stdout.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    elsewhere = await cli("top", "pods", "-n", "kube-system")
    assert elsewhere.exit_code == 1 and "metrics not available yet" in elsewhere.stderr

    nodes = await cli("top", "nodes")
    head, *lines = nodes.stdout.splitlines()
    assert head.split() == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    cells = next(line.split() for line in lines if line.split()[0] == node.name)
    assert cells[1].endswith("m") and cells[2].endswith("%") and cells[3].endswith("Mi")
