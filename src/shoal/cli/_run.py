"""The long-running commands: `shoal up` (all-in-one), `shoal server`, `shoal agent`.

All three run the same components over loopback HTTP (ARCHITECTURE.md, principle 1).
`up` runs the API server and its store in a child process (`python -m shoal.apiserver`) and
the scheduler, controllers and agent in this one, so both cores of a small machine work;
the child dies with its parent, even on `kill -9`. Ctrl-C (SIGINT) or SIGTERM stops things
in order: agent first (in `up` it stops every pod it started), then controllers and
scheduler, then the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Any

import platformdirs
import typer
from rich.console import Console
from rich.table import Table

from shoal.agent import Agent, AgentConfig, default_runtime
from shoal.api import NETWORK_LABEL, NodeLink
from shoal.apiserver import DEFAULT_PORT, serve_data_dir
from shoal.client import Client, server_url
from shoal.controllers import ControllerManager
from shoal.discovery import RegistryConfig
from shoal.scheduler import Scheduler

console = Console()
log = logging.getLogger("shoal")


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("shoal"))


def default_node_name() -> str:
    name = socket.gethostname().split(".")[0].lower()
    cleaned = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name).strip("-")
    return cleaned or "node"


class Runtime(StrEnum):
    """``--runtime`` choices."""

    auto = "auto"
    process = "process"
    runc = "runc"


RUNTIME_HELP = (
    "Runtime driver: runc (Linux containers from OCI images; needs root and runc), process "
    "(plain host processes) or auto (runc when it can be used here, else process)."
)


def choose_runtime(requested: Runtime) -> str:
    """The driver to run: ``auto`` resolved, and ``runc`` checked up front so that a machine
    that cannot run it gets one line saying why rather than a failing agent."""
    if requested is Runtime.auto:
        return default_runtime()
    if requested is Runtime.runc:
        from shoal.runtime.runc import runc_unavailable_reason

        reason = runc_unavailable_reason()
        if reason is not None:
            console.print(f"[red]error:[/red] the runc runtime cannot be used here: {reason}")
            raise typer.Exit(1)
    return requested.value


def run_async(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run ``main(stop)`` on uvloop when available; SIGINT/SIGTERM set ``stop``."""

    async def wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        import uvloop

        uvloop.run(wrapper())
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(wrapper())


async def _supervise(named: dict[str, Awaitable[None]], stop: asyncio.Event) -> None:
    """Run components until ``stop`` is set or one of them fails, then cancel them in the
    reverse of their start order."""
    tasks = {name: asyncio.ensure_future(aw) for name, aw in named.items()}
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait(
            [stopper, *tasks.values()], return_when=asyncio.FIRST_COMPLETED
        )
        for name, t in tasks.items():
            if t in done and not t.cancelled() and t.exception() is not None:
                log.error("%s failed: %s", name, t.exception())
    finally:
        stopper.cancel()
        for name in reversed(list(tasks)):
            t = tasks[name]
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def _wait_started(server_task: asyncio.Future[None], started: asyncio.Event) -> None:
    waiter: asyncio.Future[Any] = asyncio.ensure_future(started.wait())
    pending: list[asyncio.Future[Any]] = [server_task, waiter]
    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    if server_task.done():
        waiter.cancel()
        server_task.result()
        raise RuntimeError("the API server stopped while starting")


async def _start_api_server(
    data_dir: Path, host: str, port: int, registry: RegistryConfig | None = None
) -> asyncio.Future[None]:
    """Start serving the store in ``data_dir/server``; return once it listens (the future
    runs until cancelled). A port that cannot be bound ends the command with one line."""
    started = asyncio.Event()

    async def on_started() -> None:
        started.set()

    server = asyncio.ensure_future(
        serve_data_dir(data_dir / "server", host, port, on_started, registry)
    )
    try:
        await _wait_started(server, started)
    except OSError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    return server


async def _spawn_api_server(
    data_dir: Path, port: int, url: str, verbose: bool, registry: RegistryConfig
) -> subprocess.Popen[bytes]:
    """Start `python -m shoal.apiserver` (lean: the server and store only) as a child in its own session (Ctrl-C reaches only us, and we
    stop things in order) and wait until it answers /readyz."""
    args = [sys.executable, "-m", "shoal.apiserver", "--data-dir", str(data_dir / "server"),
            "--port", str(port), "--parent-pid", str(os.getpid()),
            "--node-name", registry.node_name, "--consul-port", str(registry.consul_port),
            "--dns-port", str(registry.dns_port)]  # fmt: skip
    if registry.enable_script_checks:
        args.append("--enable-script-checks")
    if verbose:
        args.append("--verbose")
    # Plain Popen from the main thread: the parent-death signal is tied to the creating thread.
    child = subprocess.Popen(args, start_new_session=True)  # noqa: ASYNC220
    async with Client(url, timeout=2.0) as probe:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            if child.poll() is not None:
                console.print(
                    f"[red]error:[/red] the API server could not start on 127.0.0.1:{port}"
                )
                raise typer.Exit(1)
            if await probe.healthy():
                return child
            await asyncio.sleep(0.05)
    _stop_child(child)
    console.print("[red]error:[/red] the API server did not become ready in 30 s")
    raise typer.Exit(1)


async def _supervise_with_server(
    components: dict[str, Awaitable[None]], stop: asyncio.Event, server: subprocess.Popen[bytes]
) -> None:
    """Like _supervise, and also stop when the API server child dies."""

    async def server_exit() -> None:
        while server.poll() is None:
            await asyncio.sleep(0.5)
        log.error("the API server exited (code %s)", server.returncode)

    await _supervise({**components, "apiserver": server_exit()}, stop)


def _stop_child(child: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


NETWORK_HELP = (
    "Pod networking: bridge (own network namespaces, service IPs, routing; needs root and "
    "runc), host (pods share the node's network), or auto."
)
PREFIX_HELP = "Prefix of the bridges, network namespaces and nft table this node creates."


def _parse_link(text: str) -> NodeLink:
    """``PEER=ADDRESS[@COST]`` -> a NodeLink; a bad one exits with a message naming it."""
    peer, sep, rest = text.partition("=")
    address, _, cost = rest.partition("@")
    try:
        ipaddress.ip_address(address)
        value = int(cost) if cost else 1
        if not peer or not sep or value < 1:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: expected PEER=ADDRESS[@COST], e.g. node2=192.168.12.2@1",
            param_hint="--link",
        ) from None
    return NodeLink(peer=peer, address=address, cost=value)


def register(app: typer.Typer) -> None:
    """Add up/server/agent to the CLI app."""

    @app.command()
    def up(
        data_dir: Path = typer.Option(
            None, "--data-dir", help="Where state, logs and pods live (default: the user data dir)."
        ),
        api_port: int = typer.Option(
            DEFAULT_PORT, "--api-port", help="API server port on 127.0.0.1."
        ),
        runtime: Runtime = typer.Option(Runtime.auto, "--runtime", help=RUNTIME_HELP),
        files: list[Path] = typer.Option(
            [],
            "-f",
            "--filename",
            help="Manifests to apply once the cluster runs (a relative hostPath in them is "
            "relative to the manifest's directory).",
        ),
        node_name: str = typer.Option(
            "", "--node-name", help="Name of this node (default: the host name)."
        ),
        node_monitor_grace: float = typer.Option(
            10.0, help="Seconds without heartbeat before a node is NotReady."
        ),
        pod_eviction_timeout: float = typer.Option(
            20.0, help="Seconds a node stays NotReady before its pods are replaced."
        ),
        heartbeat_interval: float = typer.Option(
            2.0, help="Seconds between the agent's heartbeats."
        ),
        consul_port: int = typer.Option(
            8500, "--consul-port", help="Consul-compatible HTTP API on 127.0.0.1 (-1: off)."
        ),
        dns_port: int = typer.Option(
            8600, "--dns-port", help="DNS (UDP and TCP) on 127.0.0.1 (-1: off)."
        ),
        enable_script_checks: bool = typer.Option(
            False, "--enable-script-checks", help="Allow script (Args) health checks."
        ),
        network: str = typer.Option("auto", "--network", help=NETWORK_HELP),
        network_prefix: str = typer.Option("shoal", "--network-prefix", help=PREFIX_HELP),
        verbose: bool = typer.Option(False, "-v", "--verbose"),
    ) -> None:
        """Run everything: API server, registry (Consul API, DNS), scheduler, controllers and
        a node agent.

        Two processes: the API server (with its store) in a child, everything else here, so
        both cores work; they talk over loopback HTTP exactly as in the distributed mode."""
        _configure_logging(verbose)
        chosen = choose_runtime(runtime)
        ddir = (data_dir or default_data_dir()).resolve()
        node = node_name or default_node_name()
        url = f"http://127.0.0.1:{api_port}"
        console.print(f"runtime: {chosen}")

        async def main(stop: asyncio.Event) -> None:
            registry = RegistryConfig(node_name=node, consul_port=consul_port, dns_port=dns_port,
                                      enable_script_checks=enable_script_checks)  # fmt: skip
            server = await _spawn_api_server(ddir, api_port, url, verbose, registry)
            async with Client(url) as client:
                agent = Agent(client, AgentConfig(node_name=node, data_dir=ddir / "agent",
                                                  heartbeat_interval=heartbeat_interval,
                                                  runtime=chosen, image_dir=ddir / "images",
                                                  cgroup_parent=f"/shoal/{node}",
                                                  stop_pods_on_exit=True, network=network,
                                                  network_prefix=network_prefix,
                                                  dns_target=f"127.0.0.1:{dns_port}"
                                                  if dns_port > 0 else ""))  # fmt: skip
                components: dict[str, Awaitable[None]] = {
                    "scheduler": Scheduler(client).run(),
                    "controllers": ControllerManager(
                        client,
                        node_monitor_grace=node_monitor_grace,
                        pod_eviction_timeout=pod_eviction_timeout,
                    ).run(),
                    "agent": agent.run(),
                    "welcome": _welcome(client, url, ddir, files, stop),
                }
                try:
                    await _supervise_with_server(components, stop, server)
                finally:
                    await asyncio.to_thread(_stop_child, server)
            console.print("shoal stopped.")

        run_async(main)

    @app.command()
    def server(
        data_dir: Path = typer.Option(None, "--data-dir", help="Where the state store lives."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        port: int = typer.Option(DEFAULT_PORT, "--port", help="API server port."),
        node_monitor_grace: float = typer.Option(
            10.0, help="Seconds without heartbeat before a node is NotReady."
        ),
        pod_eviction_timeout: float = typer.Option(
            20.0, help="Seconds a node stays NotReady before its pods are replaced."
        ),
        consul_port: int = typer.Option(
            8500, "--consul-port", help="Consul-compatible HTTP API port (-1: off)."
        ),
        dns_port: int = typer.Option(8600, "--dns-port", help="DNS port (-1: off)."),
        node_name: str = typer.Option(
            "", "--node-name", help="The registry's node name (default: the host name)."
        ),
        enable_script_checks: bool = typer.Option(
            False, "--enable-script-checks", help="Allow script (Args) health checks."
        ),
        verbose: bool = typer.Option(False, "-v", "--verbose"),
    ) -> None:
        """Run the control plane: API server, registry (Consul API, DNS), scheduler and
        controllers. The registry listens on the same host as the API server."""
        _configure_logging(verbose)
        ddir = (data_dir or default_data_dir()).resolve()
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"

        async def main(stop: asyncio.Event) -> None:
            registry = RegistryConfig(
                node_name=node_name or default_node_name(),
                consul_host=host, consul_port=consul_port, dns_host=host, dns_port=dns_port,
                enable_script_checks=enable_script_checks,
            )  # fmt: skip
            srv = await _start_api_server(ddir, host, port, registry)
            console.print(f"shoal server listening on {url} (data in {ddir})")
            async with Client(url) as client:
                try:
                    await _supervise({
                        "scheduler": Scheduler(client).run(),
                        "controllers": ControllerManager(client, node_monitor_grace=node_monitor_grace,
                                                         pod_eviction_timeout=pod_eviction_timeout).run(),
                    }, stop)  # fmt: skip
                finally:
                    srv.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await srv

        run_async(main)

    @app.command()
    def agent(
        server: str = typer.Option(
            None,
            "--server",
            help="API server URL (default: $SHOAL_SERVER or http://127.0.0.1:6440).",
        ),
        node_name: str = typer.Option(
            "", "--node-name", help="Name of this node (default: the host name)."
        ),
        data_dir: Path = typer.Option(
            None, "--data-dir", help="Where this agent keeps pod state and logs."
        ),
        address: str = typer.Option(
            "127.0.0.1", "--address", help="This node's IP, published to the cluster."
        ),
        port: int = typer.Option(
            0, "--port", help="Agent HTTP port (logs, exec, stats); 0 picks a free one."
        ),
        heartbeat_interval: float = typer.Option(2.0, help="Seconds between heartbeats."),
        runtime: Runtime = typer.Option(Runtime.auto, "--runtime", help=RUNTIME_HELP),
        network: str = typer.Option("auto", "--network", help=NETWORK_HELP),
        network_prefix: str = typer.Option("shoal", "--network-prefix", help=PREFIX_HELP),
        node_netns: str = typer.Option(
            "", "--node-netns", help="A named network namespace that is this node's network."
        ),
        links: list[str] = typer.Option(
            [], "--link", help="A link to a neighbour node for routing: PEER=ADDRESS[@COST]."
        ),
        dns_target: str = typer.Option(
            "", "--dns-target", help="IP:PORT of shoal's DNS as seen from this node."
        ),
        verbose: bool = typer.Option(False, "-v", "--verbose"),
    ) -> None:
        """Run a node agent that registers this machine and runs the pods bound to it."""
        _configure_logging(verbose)
        chosen = choose_runtime(runtime)
        node = node_name or default_node_name()
        ddir = (data_dir or default_data_dir() / f"agent-{node}").resolve()
        # The image store is shared with `shoal image --data-dir` (the default data dir's, or
        # the --data-dir given here).
        images = (data_dir.resolve() if data_dir else default_data_dir()) / "images"
        console.print(f"runtime: {chosen}")
        parsed_links = tuple(_parse_link(text) for text in links)

        async def main(stop: asyncio.Event) -> None:
            async with Client(server_url(server)) as client:
                cfg = AgentConfig(node_name=node, data_dir=ddir, address=address, http_port=port,
                                  heartbeat_interval=heartbeat_interval, runtime=chosen,
                                  image_dir=images, cgroup_parent=f"/shoal/{node}",
                                  network=network, network_prefix=network_prefix,
                                  node_netns=node_netns, links=parsed_links,
                                  dns_target=dns_target)  # fmt: skip
                await _supervise({"agent": Agent(client, cfg).run()}, stop)

        run_async(main)


async def _welcome(
    client: Client, url: str, data_dir: Path, files: list[Path], stop: asyncio.Event
) -> None:
    """Apply ``-f`` files, wait for their pods, and tell the user where things answer."""
    from shoal.cli._apply import apply_paths

    console.print(f"[bold]shoal[/bold] is up: API server {url}, data in {data_dir}")
    if files:
        try:
            for line in await apply_paths(client, [str(f) for f in files]):
                console.print(f"  {line}")
        except Exception as exc:  # the cluster keeps running; the user can fix and re-apply
            console.print(f"[red]error:[/red] {exc}")
            await stop.wait()
            return
        await _wait_for_pods(client, timeout=60)
        await _print_pods(client)
    shoal = _cli_name()
    console.print(
        "\nUse the CLI from another terminal, e.g.:\n"
        f"  export SHOAL_SERVER={url}\n"
        f"  {shoal} get pods -o wide\n  {shoal} get deploy,svc\n  {shoal} describe deployment hello\n"
        f"  {shoal} scale deployment hello --replicas 5\n  {shoal} logs -f <pod>\n"
        "\nPress Ctrl-C to stop everything."
    )
    await stop.wait()


def _cli_name() -> str:
    """How the user can run this CLI: plain ``shoal`` when that is on PATH and is this one,
    else the path of the running script (``.venv/bin/shoal`` after ``make run``)."""
    argv0 = sys.argv[0]
    found = shutil.which("shoal")
    if found and os.path.realpath(found) == os.path.realpath(argv0):
        return "shoal"
    if os.path.basename(argv0) == "shoal" and os.path.exists(argv0):
        try:
            return os.path.relpath(argv0)
        except ValueError:
            return argv0
    return "shoal"


async def _wait_for_pods(client: Client, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        pods = await client.pods.list()
        if pods and all(
            p.status.phase == "Running"
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)
            for p in pods
            if p.metadata.deletion_timestamp is None
        ):
            return
        await asyncio.sleep(0.25)


async def _print_pods(client: Client) -> None:
    table = Table(title="pods", title_justify="left")
    for col in ("NAMESPACE", "NAME", "STATUS", "NODE", "ANSWERS AT"):
        table.add_column(col)
    for p in sorted(await client.pods.list(), key=lambda p: (p.namespace, p.name)):
        addrs = [
            f"http://{p.status.pod_ip}:{port.host_port}/"
            for cs in p.status.container_statuses
            for port in cs.ports
            if port.host_port and p.status.pod_ip
        ]
        table.add_row(p.namespace, p.name, p.status.phase, p.spec.node_name or "", " ".join(addrs))
    console.print(table)
    # ClusterIPs are reachable where the node programs them (bridge networking).
    nodes = await client.nodes.list()
    vips = any(n.metadata.labels.get(NETWORK_LABEL) == "bridge" for n in nodes)
    for svc in await client.services.list():
        try:
            ep = await client.endpoints.get(svc.name, svc.namespace)
        except Exception:
            continue
        targets = [
            f"{a.ip}:{port.port}" for s in ep.subsets for a in s.addresses for port in s.ports
        ]
        ip = svc.spec.cluster_ip
        vip = (
            f" {ip}:{','.join(str(p.port) for p in svc.spec.ports)}"
            if vips and ip not in (None, "", "None")
            else ""
        )
        console.print(
            f"service/{svc.name}{vip} -> {', '.join(targets) or '(no ready endpoints yet)'}"
        )


__all__ = ["default_data_dir", "register", "run_async"]
