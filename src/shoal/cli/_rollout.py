"""``shoal rollout status|undo|history``: follow and rewind Deployment rollouts.

A Deployment's history is its ReplicaSets: each one the deployment controller created holds
one pod template and a ``deployment.kubernetes.io/revision`` annotation. Undo is therefore
not a server feature but a client one, as in kubectl: copy an older ReplicaSet's template
back into the Deployment and let the controller roll forward to it.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Annotated, Any

import typer

from shoal.api import KindInfo, kind_info
from shoal.cli._app import app, fail, run
from shoal.cli._args import Namespace, one_kind_and_name, parse_duration
from shoal.cli._output import NONE, object_ref, plain_table
from shoal.client import Client
from shoal.errors import ConflictError, ShoalError

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
HASH_LABEL = "pod-template-hash"

rollout_app = typer.Typer(
    name="rollout",
    help="Follow, list and undo Deployment rollouts.",
    no_args_is_help=True,
)
app.add_typer(rollout_app, name="rollout")


class RolloutError(ShoalError):
    """A rollout cannot be followed or undone as asked (no history, deadline exceeded)."""


# --- pure helpers ----------------------------------------------------------------------------


def rollout_status(dep: dict[str, Any]) -> tuple[str, bool]:
    """kubectl's rollout status rules: (message, done). Raises RolloutError once the
    Deployment reports that its progress deadline passed."""
    name = dep["metadata"]["name"]
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    generation = int(dep["metadata"].get("generation") or 0)
    if generation > int(status.get("observedGeneration") or 0):
        return "Waiting for deployment spec update to be observed...", False
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            raise RolloutError(f'deployment "{name}" exceeded its progress deadline')
    replicas = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    prefix = f'Waiting for deployment "{name}" rollout to finish: '
    if updated < replicas:
        return f"{prefix}{updated} out of {replicas} new replicas have been updated...", False
    if total > updated:
        return f"{prefix}{total - updated} old replicas are pending termination...", False
    if available < updated:
        return f"{prefix}{available} of {updated} updated replicas are available...", False
    return f'deployment "{name}" successfully rolled out', True


def revision(rs: dict[str, Any]) -> int:
    """A ReplicaSet's revision number (0 when it has none)."""
    text = ((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION, "")
    try:
        return int(text)
    except ValueError:
        return 0


def owned_by(rs: dict[str, Any], dep: dict[str, Any]) -> bool:
    uid = dep["metadata"].get("uid")
    refs = (rs.get("metadata") or {}).get("ownerReferences") or []
    return bool(uid) and any(r.get("uid") == uid for r in refs)


def template_without_hash(template: dict[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's pod template as the Deployment held it: without the
    ``pod-template-hash`` label the controller added."""
    out = copy.deepcopy(template)
    labels = (out.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return out


def _comparable(template: dict[str, Any]) -> dict[str, Any]:
    out = template_without_hash(template)
    meta = out.setdefault("metadata", {})
    for key in [k for k, v in meta.items() if v in ({}, [], None, "")]:
        meta.pop(key)
    return out


def new_replicaset(dep: dict[str, Any], owned: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The owned ReplicaSet whose template is the Deployment's current one, if any."""
    want = _comparable((dep.get("spec") or {}).get("template") or {})
    matches = [rs for rs in owned if _comparable(rs["spec"]["template"]) == want]
    return max(matches, key=revision) if matches else None


def pick_rollback(owned: list[dict[str, Any]], to_revision: int) -> dict[str, Any]:
    """The ReplicaSet to go back to: revision ``to_revision``, or (0) the one before the
    latest. Raises RolloutError when there is no such revision."""
    by_rev = sorted((rs for rs in owned if revision(rs) > 0), key=revision)
    if to_revision:
        for rs in by_rev:
            if revision(rs) == to_revision:
                return rs
        raise RolloutError(f"unable to find specified revision {to_revision} in history")
    if len(by_rev) < 2:
        raise RolloutError("no rollout history found: there is no previous revision to go back to")
    return by_rev[-2]


# --- I/O helpers -----------------------------------------------------------------------------


def _deployment_info(kind: str, name: str | None, what: str) -> tuple[KindInfo, str]:
    info, obj_name = one_kind_and_name(kind, name, what)
    if info.kind != "Deployment":
        fail(f"rollout {what} supports deployments only, not {info.plural}")
    return info, obj_name


async def owned_replicasets(client: Client, dep: dict[str, Any]) -> list[dict[str, Any]]:
    """The ReplicaSets whose ownerReferences name this Deployment (by uid)."""
    ns = dep["metadata"].get("namespace") or "default"
    data = await client.request("GET", kind_info("ReplicaSet").collection_path(ns))
    return [rs for rs in data.get("items") or [] if owned_by(rs, dep)]


# --- commands --------------------------------------------------------------------------------


@rollout_app.command("status")
def status_command(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="deployment (or deployment/NAME).")],
    name: Annotated[str | None, typer.Argument(help="Deployment name.")] = None,
    namespace: Namespace = None,
    timeout: Annotated[
        str, typer.Option("--timeout", help="Give up after this long (90, 30s, 5m); 0 = never.")
    ] = "0",
    watch: Annotated[
        bool, typer.Option("--watch/--no-watch", "-w", help="Keep watching until done.")
    ] = True,
) -> None:
    """Watch a Deployment until its rollout is done (or report where it stands)."""
    info, dep_name = _deployment_info(kind, name, "status")
    limit = parse_duration(timeout)
    ns = namespace or "default"

    async def follow(client: Client) -> int:
        last = ""

        def report(dep: dict[str, Any]) -> bool:
            nonlocal last
            message, done = rollout_status(dep)
            if message != last:
                typer.echo(message)
                last = message
            return done

        while True:
            dep = await client.request("GET", info.object_path(dep_name, ns))
            if report(dep) or not watch:
                return 0
            rv = int(dep["metadata"].get("resourceVersion") or 0)
            rc = client.deployments
            async for ev_type, obj in rc.watch(ns, rv, field_selector=f"metadata.name={dep_name}"):
                if ev_type == "DELETED":
                    raise RolloutError(f'deployment "{dep_name}" was deleted')
                if report(obj.to_dict()):
                    return 0
            # The server ended the stream (e.g. a restart); look again and resume.

    async def job(client: Client) -> int:
        if limit <= 0:
            return await follow(client)
        try:
            async with asyncio.timeout(limit):
                return await follow(client)
        except TimeoutError:
            raise RolloutError(
                f'timed out after {timeout} waiting for deployment "{dep_name}" to roll out'
            ) from None

    run(ctx, job)


@rollout_app.command("undo")
def undo_command(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="deployment (or deployment/NAME).")],
    name: Annotated[str | None, typer.Argument(help="Deployment name.")] = None,
    to_revision: Annotated[
        int, typer.Option("--to-revision", help="Go back to this revision (0: the previous).")
    ] = 0,
    namespace: Namespace = None,
) -> None:
    """Roll a Deployment back to its previous (or a given) revision's pod template."""
    info, dep_name = _deployment_info(kind, name, "undo")
    ns = namespace or "default"
    path = info.object_path(dep_name, ns)

    async def job(client: Client) -> int:
        for attempt in range(2):
            dep = await client.request("GET", path)
            target = pick_rollback(await owned_replicasets(client, dep), to_revision)
            template = template_without_hash(target["spec"]["template"])
            if _comparable(template) == _comparable(dep["spec"]["template"]):
                typer.echo(
                    f"{object_ref(info, dep_name)} skipped rollback (current template already "
                    f"matches revision {revision(target)})"
                )
                return 0
            dep["spec"]["template"] = template
            try:
                await client.request("PUT", path, body=dep)
            except ConflictError:
                if attempt:
                    raise
                continue
            break
        typer.echo(f"{object_ref(info, dep_name)} rolled back")
        return 0

    run(ctx, job)


@rollout_app.command("history")
def history_command(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="deployment (or deployment/NAME).")],
    name: Annotated[str | None, typer.Argument(help="Deployment name.")] = None,
    show_revision: Annotated[
        int, typer.Option("--revision", help="Show this revision's pod template.")
    ] = 0,
    namespace: Namespace = None,
) -> None:
    """List a Deployment's revisions (or show one revision's pod template)."""
    info, dep_name = _deployment_info(kind, name, "history")
    ns = namespace or "default"

    async def job(client: Client) -> int:
        from shoal.cli._describe import template_lines

        dep = await client.request("GET", info.object_path(dep_name, ns))
        owned = sorted(
            (rs for rs in await owned_replicasets(client, dep) if revision(rs) > 0), key=revision
        )
        ref = object_ref(info, dep_name)
        if show_revision:
            found = [rs for rs in owned if revision(rs) == show_revision]
            if not found:
                raise RolloutError(f"unable to find the specified revision {show_revision}")
            typer.echo(f"{ref} with revision #{show_revision}")
            for line in template_lines(template_without_hash(found[0]["spec"]["template"])):
                typer.echo(line)
            return 0
        if not owned:
            typer.echo(f"No rollout history found for {ref}.")
            return 0
        rows = [
            [
                str(revision(rs)),
                (rs["metadata"].get("annotations") or {}).get(CHANGE_CAUSE_ANNOTATION) or NONE,
            ]
            for rs in owned
        ]
        typer.echo(ref)
        for line in plain_table(["REVISION", "CHANGE-CAUSE"], rows):
            typer.echo(line)
        return 0

    run(ctx, job)
