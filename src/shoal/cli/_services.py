"""``shoal services`` and ``shoal services show NAME``: the registry as seen through its
Consul-compatible API (so the command shows exactly what Consul clients and DNS see).

The registry's address is ``--consul``, else ``$CONSUL_HTTP_ADDR`` (the variable Consul's
own tools read), else 127.0.0.1:8500.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Annotated, Any

import httpx
import typer

from shoal.cli._app import app, fail, guarded, settings
from shoal.cli._output import make_table, print_table, stdout_console
from shoal.discovery import worst_status

services_app = typer.Typer(
    name="services",
    help="Services in the registry: instances and health.",
    invoke_without_command=True,
)
app.add_typer(services_app, name="services")

ConsulAddr = Annotated[
    str | None,
    typer.Option(
        "--consul",
        help="Registry (Consul API) address (default: $CONSUL_HTTP_ADDR, else 127.0.0.1:8500).",
        show_default=False,
    ),
]


def consul_url(addr: str | None) -> str:
    """``host:port`` or a URL -> base URL."""
    raw = addr or os.environ.get("CONSUL_HTTP_ADDR") or "127.0.0.1:8500"
    return raw if raw.startswith(("http://", "https://")) else f"http://{raw}"


async def _get(client: httpx.AsyncClient, path: str) -> Any:
    try:
        resp = await client.get(path)
    except httpx.TransportError:
        fail(f"cannot reach the registry at {client.base_url}: is `shoal up` running?")
    if resp.status_code != 200:
        fail(f"the registry answered {resp.status_code} for {path}: {resp.text.strip()}")
    return resp.json()


def _status(entry: dict[str, Any]) -> str:
    known = ("passing", "warning", "critical")
    return worst_status(c["Status"] for c in entry.get("Checks") or [] if c.get("Status") in known)


async def _overview(base: str) -> list[list[str]]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        services: dict[str, list[str]] = await _get(client, "/v1/catalog/services")
        names = sorted(services)
        entries = await asyncio.gather(*(_get(client, f"/v1/health/service/{n}") for n in names))
    rows = []
    for name, group in zip(names, entries, strict=True):
        counts = Counter(_status(e) for e in group)
        rows.append([
            name, str(len(group)), str(counts["passing"]), str(counts["warning"]),
            str(counts["critical"]), ",".join(services[name]) or "<none>",
        ])  # fmt: skip
    return rows


@services_app.callback()
def services(ctx: typer.Context, consul: ConsulAddr = None) -> None:
    """List services with instance counts and health."""
    if ctx.invoked_subcommand is not None:
        return
    base = consul_url(consul)
    rows = guarded(lambda: _print_overview(base), settings(ctx).server)
    if rows:
        raise typer.Exit(rows)


def _print_overview(base: str) -> int:
    rows = asyncio.run(_overview(base))
    if not rows:
        stdout_console().print("No services registered.")
        return 0
    head = ["NAME", "INSTANCES", "PASSING", "WARNING", "CRITICAL", "TAGS"]
    print_table(stdout_console(), make_table(head, rows))
    return 0


@services_app.command("show")
def show(ctx: typer.Context, name: str, consul: ConsulAddr = None) -> None:
    """Instances of one service and their checks."""
    base = consul_url(consul)

    def job() -> int:
        return asyncio.run(_show(base, name))

    code = guarded(job, settings(ctx).server)
    if code:
        raise typer.Exit(code)


async def _show(base: str, name: str) -> int:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        entries: list[dict[str, Any]] = await _get(client, f"/v1/health/service/{name}")
    if not entries:
        fail(f'service "{name}" has no instances in the registry')
    console = stdout_console()
    rows, checks = [], []
    for e in entries:
        svc, node = e["Service"], e["Node"]
        address = svc.get("Address") or node.get("Address", "")
        rows.append([
            svc["ID"], f"{address}:{svc['Port']}", node["Node"], _status(e),
            ",".join(svc.get("Tags") or []) or "<none>",
        ])  # fmt: skip
        for c in e.get("Checks") or []:
            output = (c.get("Output") or "").strip().replace("\n", " ")
            checks.append([
                svc["ID"], c["CheckID"], c.get("Type") or "-", c["Status"],
                output[:80] + ("…" if len(output) > 80 else ""),
            ])  # fmt: skip
    print_table(console, make_table(["ID", "ADDRESS", "NODE", "STATUS", "TAGS"], rows))
    console.print()
    print_table(console, make_table(["INSTANCE", "CHECK", "TYPE", "STATUS", "OUTPUT"], checks))
    return 0
