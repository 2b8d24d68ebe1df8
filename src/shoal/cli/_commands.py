"""The everyday commands: apply, get, delete, logs, scale, version.

Each command only parses its arguments and hands an async job to ``run``; the work is done
by the client, and output goes through ``_output``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from shoal import __version__
from shoal.api import KindInfo, Resource
from shoal.cli._app import app, fail, print_error_lines, run
from shoal.cli._apply import api_error_lines, apply_plan
from shoal.cli._args import (
    FieldSelector,
    Files,
    Namespace,
    OutputFormat,
    Selector,
    kind_and_names,
    kind_or_fail,
    namespace_for,
    one_kind_and_name,
)
from shoal.cli._manifest import load_documents, plan_objects
from shoal.cli._output import (
    TableOptions,
    as_list,
    column_widths,
    headers,
    kind_ref,
    make_table,
    object_ref,
    print_table,
    row,
    stderr_console,
    stdout_console,
    to_json,
    to_yaml,
)
from shoal.client import Client
from shoal.errors import APIStatusError, NotFoundError

# --- apply -----------------------------------------------------------------------------------


@app.command()
def apply(
    ctx: typer.Context,
    filename: Files = None,
    namespace: Namespace = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; write nothing.")
    ] = False,
) -> None:
    """Create or update objects from manifests. Every document is checked first; if any is
    invalid, nothing is sent.

    A relative hostPath.path in a pod spec (Pod, Deployment, ReplicaSet) is resolved against
    the directory of the manifest file (of the current directory for -f -), as Docker
    Compose resolves relative bind mounts."""
    if not filename:
        fail("apply needs at least one -f FILE (a file, a directory, or - for stdin)")
    files = filename

    async def job(client: Client) -> int:
        docs = load_documents(files)
        if not docs:
            fail("no objects passed to apply")
        plan = plan_objects(docs, namespace)
        suffix = " (dry run)" if dry_run else ""
        failures = await apply_plan(
            client,
            plan,
            lambda line: typer.echo(line + suffix),
            print_error_lines,
            dry_run=dry_run,
        )
        return 1 if failures else 0

    run(ctx, job)


# --- get -------------------------------------------------------------------------------------


@app.command()
def get(
    ctx: typer.Context,
    kind: Annotated[
        str,
        typer.Argument(
            help="Kind: pods, po, deploy, svc, no, ns, rs, ep, ev... (comma-separated for several)."
        ),
    ],
    name: Annotated[str | None, typer.Argument(help="Only this object.")] = None,
    output: Annotated[
        OutputFormat | None, typer.Option("--output", "-o", help="wide, yaml, json or name.")
    ] = None,
    selector: Selector = None,
    field_selector: FieldSelector = None,
    namespace: Namespace = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="List across all namespaces.")
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="After listing, print changes until Ctrl-C.")
    ] = False,
    show_labels: Annotated[
        bool, typer.Option("--show-labels", help="Add a LABELS column.")
    ] = False,
) -> None:
    """List objects as a table (kubectl's columns), or print them as yaml/json/names."""
    if "/" in kind:
        pairs = kind_and_names(kind, [name] if name else [])
        if len(pairs) != 1:
            fail("get takes one KIND/NAME")
        infos, name = [pairs[0][0]], pairs[0][1]
    else:
        infos = [kind_or_fail(k) for k in kind.split(",") if k]
    if name and len(infos) > 1:
        fail("a NAME can only be given with a single kind")
    if watch and len(infos) > 1:
        fail("--watch works with one kind at a time")
    view = View(output.value if output else "", all_namespaces, show_labels)
    ns = None if all_namespaces else (namespace or "default")
    queries = [
        Query(info, ns if info.namespaced else None, name, selector, field_selector)
        for info in infos
    ]

    async def job(client: Client) -> int:
        if watch:
            await _watch(client, queries[0], view)
            return 0
        found = [(q.info, await _fetch(client, q)) for q in queries]
        _print_found(found, view, bool(name), ns)
        return 0

    run(ctx, job)


@dataclass(frozen=True)
class Query:
    """What ``get`` asks the server for, for one kind."""

    info: KindInfo
    namespace: str | None
    """None: all namespaces (``-A``), or a cluster-scoped kind."""
    name: str | None
    label_selector: str | None
    field_selector: str | None


@dataclass(frozen=True)
class View:
    """How ``get`` shows what it found."""

    fmt: str
    """"" (a table), "wide", "yaml", "json" or "name"."""
    all_namespaces: bool
    show_labels: bool

    def table_options(self, info: KindInfo) -> TableOptions:
        return TableOptions(
            wide=self.fmt == "wide",
            namespace_column=self.all_namespaces and info.namespaced,
            show_labels=self.show_labels,
        )


async def _fetch(client: Client, q: Query) -> list[dict[str, Any]]:
    if q.name:
        return [await client.request("GET", q.info.object_path(q.name, q.namespace or "default"))]
    params = {"labelSelector": q.label_selector, "fieldSelector": q.field_selector}
    data = await client.request("GET", q.info.collection_path(q.namespace), params=params)
    items = list(data.get("items") or [])
    if q.info.kind == "Event":
        items.sort(key=_event_sort_key)
    return items


def _event_sort_key(data: dict[str, Any]) -> str:
    """Oldest first, as ``kubectl events`` lists them."""
    meta = data.get("metadata") or {}
    return str(
        data.get("lastTimestamp")
        or data.get("firstTimestamp")
        or meta.get("creationTimestamp")
        or ""
    )


def _print_found(
    found: list[tuple[KindInfo, list[dict[str, Any]]]],
    view: View,
    single: bool,
    namespace: str | None,
) -> None:
    everything = [item for _info, items in found for item in items]
    if view.fmt in ("json", "yaml"):
        data = everything[0] if single and len(everything) == 1 else as_list(everything)
        sys.stdout.write(to_json(data) if view.fmt == "json" else to_yaml(data))
        return
    if view.fmt == "name":
        for info, items in found:
            for item in items:
                typer.echo(object_ref(info, item["metadata"]["name"]))
        return
    if not everything:
        namespaced = any(info.namespaced for info, _ in found)
        where = f" in {namespace} namespace" if namespace and namespaced else ""
        stderr_console().print(f"No resources found{where}.", markup=False)
        return
    console = stdout_console()
    now = time.time()
    tables = [(info, items) for info, items in found if items]
    for i, (info, items) in enumerate(tables):
        if i:
            console.print()
        opts = view.table_options(info)
        rows = [row(info.model.model_validate(item), now, opts) for item in items]
        print_table(console, make_table(headers(info.kind, opts), rows))


async def _watch(client: Client, q: Query, view: View) -> None:
    """List, then print each change as it arrives (a row per event, kept in the columns of
    the first table), until the stream ends or the user presses Ctrl-C."""
    rc = client.resource(q.info.model)
    by_name = f"metadata.name={q.name}" if q.name else None
    fields = ",".join(f for f in (q.field_selector, by_name) if f) or None
    items, revision = await rc.list_with_revision(q.namespace, q.label_selector, fields)
    opts = view.table_options(q.info)
    head = headers(q.info.kind, opts)
    console = stdout_console()
    widths: list[int] | None = None

    def show(obj: Resource) -> None:
        nonlocal widths
        if view.fmt == "json":
            sys.stdout.write(to_json(obj.to_dict()))
        elif view.fmt == "yaml":
            sys.stdout.write("---\n" + to_yaml(obj.to_dict()))
        elif view.fmt == "name":
            typer.echo(object_ref(q.info, obj.metadata.name))
        else:
            cells = row(obj, time.time(), opts)
            first = widths is None
            widths = widths or column_widths(head, [cells])
            print_table(console, make_table(head, [cells], widths=widths, show_header=first))
        sys.stdout.flush()

    if items and view.fmt in ("", "wide"):
        now = time.time()
        rows = [row(o, now, opts) for o in items]
        widths = column_widths(head, rows)
        print_table(console, make_table(head, rows, widths=widths))
        sys.stdout.flush()
    else:
        for obj in items:
            show(obj)
    async for _type, obj in rc.watch(q.namespace, revision, q.label_selector, fields):
        show(obj)


# --- delete ----------------------------------------------------------------------------------


@app.command()
def delete(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Argument(help="Kind, or KIND/NAME.")] = None,
    names: Annotated[list[str] | None, typer.Argument(help="Names of objects.")] = None,
    filename: Files = None,
    namespace: Namespace = None,
    selector: Selector = None,
    grace_period: Annotated[
        int | None,
        typer.Option("--grace-period", help="Seconds a pod gets to stop (default: its own)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Delete at once (grace period 0).")
    ] = False,
    ignore_not_found: Annotated[
        bool, typer.Option("--ignore-not-found", help="Treat a missing object as deleted.")
    ] = False,
) -> None:
    """Delete objects by kind and name, by label selector, or as listed in manifests."""
    files = filename or []
    if files and (kind or names):
        fail("give either -f FILE or KIND NAME..., not both")
    if not files and not kind:
        fail("delete needs KIND NAME..., KIND -l SELECTOR, or -f FILE")
    pairs = kind_and_names(kind, list(names or [])) if kind else []
    if kind and not pairs and not selector:
        fail(f"delete {kind} needs a NAME or a label selector (-l)")
    grace = 0 if force else grace_period
    if force:
        stderr_console().print(
            "Warning: Immediate deletion does not wait for confirmation that the running "
            "resource has been terminated. The resource may continue to run on the cluster "
            "indefinitely.",
            style="yellow",
            markup=False,
        )
    verb = "force deleted" if force else "deleted"

    async def job(client: Client) -> int:
        targets: list[tuple[KindInfo, str, str | None]] = []
        if files:
            for p in plan_objects(load_documents(files), namespace, validate=False):
                targets.append((p.info, p.name, p.namespace))
        elif pairs:
            targets = [(info, n, namespace_for(info, namespace)) for info, n in pairs]
        else:
            assert kind is not None
            info = kind_or_fail(kind)
            ns = namespace_for(info, namespace)
            data = await client.request(
                "GET", info.collection_path(ns), params={"labelSelector": selector}
            )
            targets = [(info, i["metadata"]["name"], ns) for i in data.get("items") or []]
            if not targets:
                where = f" in {ns} namespace" if ns else ""
                stderr_console().print(f"No resources found{where}.", markup=False)
        failed = 0
        for info, n, ns in targets:
            try:
                await client.request(
                    "DELETE",
                    info.object_path(n, ns),
                    params={"gracePeriodSeconds": grace},
                )
            except NotFoundError as exc:
                if not ignore_not_found:
                    failed += 1
                    print_error_lines(api_error_lines(exc))
                continue
            except APIStatusError as exc:
                failed += 1
                print_error_lines(api_error_lines(exc))
                continue
            typer.echo(f'{kind_ref(info)} "{n}" {verb}')
        return 1 if failed else 0

    run(ctx, job)


# --- logs ------------------------------------------------------------------------------------


@app.command()
def logs(
    ctx: typer.Context,
    pod: Annotated[str, typer.Argument(help="Pod name (or pod/NAME).")],
    container: Annotated[
        str | None, typer.Option("--container", "-c", help="Container (if several).")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming.")] = False,
    previous: Annotated[
        bool, typer.Option("--previous", "-p", help="The previous (crashed) instance's log.")
    ] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", help="Only the last N lines.", show_default=False)
    ] = None,
    namespace: Namespace = None,
) -> None:
    """Print a container's log (with -f, keep following it)."""
    name = pod.split("/", 1)[1] if pod.startswith(("pod/", "pods/", "po/")) else pod

    async def job(client: Client) -> int:
        out = sys.stdout.buffer
        async for chunk in client.logs(
            name,
            namespace or "default",
            container,
            follow=follow,
            previous=previous,
            tail_lines=tail if tail is not None and tail >= 0 else None,
        ):
            out.write(chunk)
            out.flush()
        return 0

    run(ctx, job)


# --- scale -----------------------------------------------------------------------------------


@app.command()
def scale(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="deployment or replicaset (or KIND/NAME).")],
    name: Annotated[str | None, typer.Argument(help="Object name.")] = None,
    replicas: Annotated[int, typer.Option("--replicas", help="Desired replicas.", min=0)] = -1,
    namespace: Namespace = None,
) -> None:
    """Set the number of replicas of a Deployment or ReplicaSet."""
    if replicas < 0:
        fail("--replicas N is required")
    info, obj_name = one_kind_and_name(kind, name, "scale")
    if "scale" not in info.subresources:
        fail(f"{info.plural} cannot be scaled (only deployments and replicasets)")

    async def job(client: Client) -> int:
        await client.scale(info.kind, obj_name, replicas, namespace or "default")
        typer.echo(f"{object_ref(info, obj_name)} scaled")
        return 0

    run(ctx, job)


# --- version ---------------------------------------------------------------------------------


@app.command()
def version(
    ctx: typer.Context,
    client_only: Annotated[
        bool, typer.Option("--client", help="Only the client version; do not ask the server.")
    ] = False,
) -> None:
    """Print the client's and the server's versions."""
    typer.echo(f"Client Version: shoal {__version__}")
    if client_only:
        return

    async def job(client: Client) -> int:
        info = await client.request("GET", "/version")
        shown = info.get("gitVersion") or f"v{info.get('major')}.{info.get('minor')}"
        typer.echo(f"Server Version: {shown}")
        return 0

    run(ctx, job)
