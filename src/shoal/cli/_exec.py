"""``shoal exec`` (run a command in a running container) and ``shoal top`` (CPU and memory
per pod or node), both reaching node agents through the API server as kubectl does.

The table arithmetic of ``top`` is pure (summary documents in, rows out) so kubectl's
rounding -- millicores rounded up, memory in whole MiB -- is tested without agents.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from shoal.api import Node, Pod, cpu_millis, memory_bytes
from shoal.cli._app import app, fail, run
from shoal.cli._args import Namespace
from shoal.cli._output import make_table, print_table, stderr_console, stdout_console
from shoal.client import Client
from shoal.errors import APIStatusError

DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"

# --- exec ------------------------------------------------------------------------------------


def default_container(pod: Pod) -> tuple[str, str | None]:
    """The container to use when none is named, and kubectl's notice when the choice was
    not obvious: the annotated default, else the first container."""
    names = [c.name for c in pod.spec.containers]
    annotated = pod.metadata.annotations.get(DEFAULT_CONTAINER_ANNOTATION)
    if annotated in names:
        return str(annotated), None
    notice = f'Defaulted container "{names[0]}" out of: {", ".join(names)}'
    return names[0], notice if len(names) > 1 else None


async def stdin_chunks(chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    """Standard input as it arrives. Read by a daemon thread: a blocking read of a terminal
    must never keep the command alive once the remote command has ended."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    stream = sys.stdin.buffer
    read = getattr(stream, "read1", stream.read)

    def reader() -> None:
        while True:
            try:
                data = read(chunk)
            except (OSError, ValueError):
                data = b""
            try:
                loop.call_soon_threadsafe(queue.put_nowait, data)
            except RuntimeError:
                return  # the loop is gone: the command has ended
            if not data:
                return

    threading.Thread(target=reader, name="shoal-exec-stdin", daemon=True).start()
    while data := await queue.get():
        yield data


def _writer(binary: Any) -> Any:
    def write(data: bytes) -> None:
        binary.write(data)
        binary.flush()

    return write


@app.command("exec")
def exec_command(
    ctx: typer.Context,
    pod: Annotated[str, typer.Argument(help="Pod name (or pod/NAME).")],
    command: Annotated[
        list[str] | None, typer.Argument(help="The command and its arguments, after --.")
    ] = None,
    container: Annotated[
        str | None,
        typer.Option("--container", "-c", help="Container (default: the pod's first)."),
    ] = None,
    stdin: Annotated[
        bool, typer.Option("--stdin", "-i", help="Pass standard input to the command.")
    ] = False,
    tty: Annotated[
        bool, typer.Option("--tty", "-t", help="Accepted for kubectl compatibility; ignored.")
    ] = False,
    namespace: Namespace = None,
) -> None:
    """Run a command in a running container: shoal exec POD [-c NAME] [-i] -- CMD [ARG...].

    Its output goes to this terminal and the exit code becomes this command's (as kubectl
    exec). With -i, standard input is sent to it until end of input."""
    name = pod.split("/", 1)[1] if pod.startswith(("pod/", "pods/", "po/")) else pod
    argv = list(command or [])
    if not argv:
        fail("you must specify at least one command for the container")
    ns = namespace or "default"
    if tty:
        stderr_console().print("Unable to use a TTY: shoal exec streams plain pipes", markup=False)

    async def job(client: Client) -> int:
        chosen = container
        if not chosen:
            chosen, notice = default_container(await client.pods.get(name, ns))
            if notice:
                stderr_console().print(notice, markup=False, highlight=False)
        code = await client.exec(
            name,
            ns,
            argv,
            container=chosen,
            stdin=stdin_chunks() if stdin else None,
            stdout=_writer(sys.stdout.buffer),
            stderr=_writer(sys.stderr.buffer),
        )
        if code:
            stderr_console().print(f"command terminated with exit code {code}", markup=False)
        return code

    run(ctx, job)


# --- top -------------------------------------------------------------------------------------

top_app = typer.Typer(
    name="top",
    help="CPU and memory use of pods or nodes, from the node agents' stats.",
    no_args_is_help=True,
)
app.add_typer(top_app, name="top")


def format_cores(nano_cores: float) -> str:
    """kubectl top's CPU column: millicores, rounded up ("12m")."""
    return f"{math.ceil(nano_cores / 1e6)}m"


def format_mib(n: float) -> str:
    """kubectl top's MEMORY column: whole MiB ("34Mi")."""
    return f"{int(n) // (1024 * 1024)}Mi"


def _usage(doc: dict[str, Any]) -> tuple[float, float] | None:
    """(usageNanoCores, workingSetBytes) of a summary entry, None if not sampled yet."""
    cpu = (doc.get("cpu") or {}).get("usageNanoCores")
    mem = (doc.get("memory") or {}).get("workingSetBytes")
    if cpu is None or mem is None:
        return None
    return float(cpu), float(mem)


def _pod_usage(pod: dict[str, Any]) -> tuple[float, float] | None:
    """The pod's own totals, or the sum of its containers' when only those are given."""
    own = _usage(pod)
    if own is not None:
        return own
    parts = [_usage(c) for c in pod.get("containers") or []]
    if not parts or any(p is None for p in parts):
        return None
    return sum(p[0] for p in parts if p), sum(p[1] for p in parts if p)


@dataclass(frozen=True)
class PodUsage:
    namespace: str
    name: str
    nano_cores: float
    working_set: float


def pod_usages(summaries: Sequence[dict[str, Any]], namespace: str | None) -> list[PodUsage]:
    """Every sampled pod of the summaries, in ``namespace`` (None: all), sorted."""
    out: list[PodUsage] = []
    for summary in summaries:
        for pod in summary.get("pods") or []:
            ref = pod.get("podRef") or {}
            ns = ref.get("namespace") or "default"
            usage = _pod_usage(pod)
            if usage is None or (namespace is not None and ns != namespace):
                continue
            out.append(PodUsage(ns, str(ref.get("name") or ""), *usage))
    return sorted(out, key=lambda u: (u.namespace, u.name))


def pod_rows(usages: Sequence[PodUsage], all_namespaces: bool) -> list[list[str]]:
    return [
        [*([u.namespace] if all_namespaces else []), u.name, format_cores(u.nano_cores),
         format_mib(u.working_set)]
        for u in usages
    ]  # fmt: skip


def node_row(node: Node, summary: dict[str, Any] | None) -> list[str]:
    """NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%) against the node's allocatable."""
    usage = _usage((summary or {}).get("node") or {})
    if usage is None:
        return [node.metadata.name, *["<unknown>"] * 4]
    cores, mem = usage
    alloc = node.status.allocatable
    cpu_total = cpu_millis(alloc["cpu"]) if "cpu" in alloc else 0
    mem_total = memory_bytes(alloc["memory"]) if "memory" in alloc else 0
    cpu_pct = f"{int(cores / 1e6 / cpu_total * 100)}%" if cpu_total else "<unknown>"
    mem_pct = f"{int(mem / mem_total * 100)}%" if mem_total else "<unknown>"
    return [node.metadata.name, format_cores(cores), cpu_pct, format_mib(mem), mem_pct]


async def _summaries(client: Client, nodes: Sequence[Node]) -> dict[str, dict[str, Any] | None]:
    """Each node's stats summary; a node whose agent does not answer maps to None (with a
    warning), so one dead node does not hide the others."""

    async def one(node: Node) -> dict[str, Any] | None:
        try:
            return await client.stats_summary(node.metadata.name)
        except APIStatusError as exc:
            stderr_console().print(
                f"warning: no stats from node {node.metadata.name}: {exc}", markup=False
            )
            return None

    found = await asyncio.gather(*(one(n) for n in nodes))
    return {n.metadata.name: s for n, s in zip(nodes, found, strict=True)}


@top_app.command("pods")
@top_app.command("pod", hidden=True)
@top_app.command("po", hidden=True)
def top_pods(
    ctx: typer.Context,
    namespace: Namespace = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Pods of every namespace.")
    ] = False,
) -> None:
    """CPU (millicores) and memory (working set) of each running pod."""
    ns = None if all_namespaces else (namespace or "default")

    async def job(client: Client) -> int:
        nodes = await client.nodes.list()
        summaries = [s for s in (await _summaries(client, nodes)).values() if s]
        usages = pod_usages(summaries, ns)
        if not usages:
            stderr_console().print("error: metrics not available yet", style="red", markup=False)
            return 1
        head = [*(["NAMESPACE"] if all_namespaces else []), "NAME", "CPU(cores)", "MEMORY(bytes)"]
        print_table(stdout_console(), make_table(head, pod_rows(usages, all_namespaces)))
        return 0

    run(ctx, job)


@top_app.command("nodes")
@top_app.command("node", hidden=True)
@top_app.command("no", hidden=True)
def top_nodes(ctx: typer.Context) -> None:
    """CPU and memory use of each node, also as a share of what it can allocate."""

    async def job(client: Client) -> int:
        nodes = sorted(await client.nodes.list(), key=lambda n: n.metadata.name)
        if not nodes:
            stderr_console().print("error: metrics not available yet", style="red", markup=False)
            return 1
        summaries = await _summaries(client, nodes)
        head = ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
        rows = [node_row(n, summaries.get(n.metadata.name)) for n in nodes]
        print_table(stdout_console(), make_table(head, rows))
        return 0

    run(ctx, job)
