"""What `shoal get` prints: kubectl's columns for every kind, its AGE and pod STATUS rules,
and the yaml/json/name printers.

The column functions are pure (object + "now" in, strings out) so that the rules users know
from kubectl -- CrashLoopBackOff winning over Running, "3m20s" ages -- are unit-tested
without a server.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from shoal._util import parse_time
from shoal.api import (
    Deployment,
    Endpoints,
    Event,
    KindInfo,
    LabelSelector,
    Namespace,
    Network,
    Node,
    Pod,
    PodTemplateSpec,
    ReplicaSet,
    Resource,
    Service,
    get_condition,
)

NONE = "<none>"

# --- consoles --------------------------------------------------------------------------------


def stdout_console() -> Console:
    """A console on the current ``sys.stdout``. When it is not a terminal (a pipe, a test
    runner) the width is huge, so tables are never wrapped or truncated for ``grep``/``awk``."""
    tty = sys.stdout.isatty()
    return Console(highlight=False, width=None if tty else 10_000, soft_wrap=not tty)


def stderr_console() -> Console:
    tty = sys.stderr.isatty()
    return Console(stderr=True, highlight=False, width=None if tty else 10_000, soft_wrap=not tty)


# --- durations -------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """kubectl's ``duration.HumanDuration``: precise when recent, coarse when old."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(timestamp: str | None, now: float) -> str:
    """Time since an RFC 3339 timestamp, or ``<unknown>`` as kubectl shows for a missing one."""
    if not timestamp:
        return "<unknown>"
    try:
        return human_duration(now - parse_time(timestamp))
    except ValueError:
        return "<unknown>"


# --- names -----------------------------------------------------------------------------------


def kind_ref(info: KindInfo) -> str:
    """``pod``, ``deployment.apps``: how kubectl names a kind in its one-line messages."""
    return f"{info.kind.lower()}.{info.group}" if info.group else info.kind.lower()


def object_ref(info: KindInfo, name: str) -> str:
    """``deployment.apps/web`` (the ``-o name`` form)."""
    return f"{kind_ref(info)}/{name}"


def format_labels(labels: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or NONE


# --- pods ------------------------------------------------------------------------------------


def pod_status(pod: Pod) -> str:
    """The STATUS column, by kubectl's ``printPod`` rules: the phase, overridden by the pod's
    reason, then by any container's waiting or terminated reason (so CrashLoopBackOff and
    ContainerCreating show), and Terminating once deletion has started."""
    reason: str = pod.status.phase
    if pod.status.reason:
        reason = pod.status.reason
    has_running = False
    for cs in reversed(pod.status.container_statuses):
        state = cs.state
        if state.waiting is not None and state.waiting.reason:
            reason = state.waiting.reason
        elif state.terminated is not None and state.terminated.reason:
            reason = state.terminated.reason
        elif state.terminated is not None:
            if state.terminated.signal:
                reason = f"Signal:{state.terminated.signal}"
            else:
                reason = f"ExitCode:{state.terminated.exit_code or 0}"
        elif cs.ready and state.running is not None:
            has_running = True
    if reason == "Completed" and has_running:
        ready = get_condition(pod.status.conditions, "Ready")
        reason = "Running" if ready is not None and ready.status == "True" else "NotReady"
    if pod.metadata.deletion_timestamp:
        reason = "Unknown" if pod.status.reason == "NodeLost" else "Terminating"
    return reason


def pod_ready(pod: Pod) -> str:
    ready = sum(
        1
        for cs in pod.status.container_statuses
        if cs.ready
        and cs.state.running is not None
        and not (cs.state.waiting and cs.state.waiting.reason)
        and cs.state.terminated is None
    )
    return f"{ready}/{len(pod.spec.containers)}"


def pod_restarts(pod: Pod, now: float) -> str:
    """``3`` or ``3 (42s ago)``: the count, and how long since the last container exit."""
    restarts = 0
    last: str | None = None
    for cs in pod.status.container_statuses:
        restarts += cs.restart_count
        term = cs.last_state.terminated
        if term is not None and term.finished_at and (last is None or term.finished_at > last):
            last = term.finished_at
    if restarts and last:
        return f"{restarts} ({age(last, now)} ago)"
    return str(restarts)


# --- other kinds -----------------------------------------------------------------------------


def _template_columns(template: PodTemplateSpec, selector: LabelSelector) -> list[str]:
    containers = template.spec.containers
    return [
        ",".join(c.name for c in containers) or NONE,
        ",".join(c.image or (c.command[0] if c.command else "") for c in containers) or NONE,
        selector.to_string() or NONE,
    ]


def service_ports(svc: Service) -> str:
    parts = []
    for p in svc.spec.ports:
        port = f"{p.port}:{p.node_port}" if p.node_port else str(p.port)
        parts.append(f"{port}/{p.protocol}")
    return ",".join(parts) or NONE


def format_endpoints(ep: Endpoints, limit: int = 3) -> str:
    """``10.0.0.1:80,10.0.0.2:80 + 2 more...`` as kubectl abbreviates long endpoint lists."""
    shown: list[str] = []
    count = 0
    for subset in ep.subsets:
        if not subset.ports:
            count += len(subset.addresses)
            shown += [a.ip for a in subset.addresses]
            continue
        for port in subset.ports:
            count += len(subset.addresses)
            for a in subset.addresses:
                host = f"[{a.ip}]" if ":" in a.ip else a.ip
                shown.append(f"{host}:{port.port}")
    if not shown:
        return NONE
    text = ",".join(shown[:limit])
    return f"{text} + {count - limit} more..." if count > limit else text


def node_status(node: Node) -> str:
    ready = get_condition(node.status.conditions, "Ready")
    text = "Unknown" if ready is None else "Ready" if ready.status == "True" else "NotReady"
    if node.spec.unschedulable:
        text += ",SchedulingDisabled"
    return text


def node_roles(node: Node) -> str:
    roles: set[str] = set()
    for key, value in node.metadata.labels.items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key.split("/", 1)[1]
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(roles)) or NONE


def node_address(node: Node, kind: str) -> str:
    return next((a.address for a in node.status.addresses if a.type == kind), NONE)


def event_time(ev: Event) -> str | None:
    return ev.last_timestamp or ev.first_timestamp or ev.metadata.creation_timestamp


def event_object(ev: Event) -> str:
    ref = ev.involved_object
    return f"{(ref.kind or '').lower()}/{ref.name or ''}"


# --- tables ----------------------------------------------------------------------------------

Row = Callable[[Any, float], list[str]]


@dataclass(frozen=True)
class Columns:
    """The columns of one kind's table: the headers after NAME (the wide ones separately)
    and a function giving the cells of both, in that order."""

    headers: tuple[str, ...]
    wide: tuple[str, ...]
    cells: Row
    name_column: bool = True
    """Events have none: kubectl leaves their generated names out."""


def _pod(p: Pod, now: float) -> list[str]:
    return [
        pod_ready(p),
        pod_status(p),
        pod_restarts(p, now),
        age(p.metadata.creation_timestamp, now),
        # Every network's address (a pod on two networks has two), the primary first.
        ",".join(ip.ip for ip in p.status.pod_ips) or p.status.pod_ip or NONE,
        p.spec.node_name or NONE,
        p.status.nominated_node_name or NONE,
    ]


def _deployment(d: Deployment, now: float) -> list[str]:
    s = d.status
    return [
        f"{s.ready_replicas}/{d.spec.replicas}",
        str(s.updated_replicas),
        str(s.available_replicas),
        age(d.metadata.creation_timestamp, now),
        *_template_columns(d.spec.template, d.spec.selector),
    ]


def _replicaset(rs: ReplicaSet, now: float) -> list[str]:
    return [
        str(rs.spec.replicas),
        str(rs.status.replicas),
        str(rs.status.ready_replicas),
        age(rs.metadata.creation_timestamp, now),
        *_template_columns(rs.spec.template, rs.spec.selector),
    ]


def _service(s: Service, now: float) -> list[str]:
    return [
        s.spec.type,
        s.spec.cluster_ip or NONE,
        service_ports(s),
        age(s.metadata.creation_timestamp, now),
        format_labels(s.spec.selector),
    ]


def _endpoints(e: Endpoints, now: float) -> list[str]:
    return [format_endpoints(e), age(e.metadata.creation_timestamp, now)]


def _node(n: Node, now: float) -> list[str]:
    info = n.status.node_info
    return [
        node_status(n),
        node_roles(n),
        age(n.metadata.creation_timestamp, now),
        info.kubelet_version,
        node_address(n, "InternalIP"),
        node_address(n, "ExternalIP"),
        info.os_image or "<unknown>",
        info.kernel_version or "<unknown>",
        info.container_runtime_version or "<unknown>",
    ]


def _namespace(n: Namespace, now: float) -> list[str]:
    return [n.status.phase, age(n.metadata.creation_timestamp, now)]


def _event(e: Event, now: float) -> list[str]:
    return [age(event_time(e), now), e.type, e.reason, event_object(e), e.message]


def _network(n: Network, now: float) -> list[str]:
    shares = ",".join(f"{s.node_name}={s.subnet}" for s in n.status.node_subnets)
    return [n.spec.subnet or NONE, "true" if n.spec.internal else "false",
            age(n.metadata.creation_timestamp, now), shares or NONE]  # fmt: skip


def _generic(o: Resource, now: float) -> list[str]:
    return [age(o.metadata.creation_timestamp, now)]


COLUMNS: dict[str, Columns] = {
    "Pod": Columns(("READY", "STATUS", "RESTARTS", "AGE"), ("IP", "NODE", "NOMINATED NODE"), _pod),
    "Deployment": Columns(("READY", "UP-TO-DATE", "AVAILABLE", "AGE"),
                          ("CONTAINERS", "IMAGES", "SELECTOR"), _deployment),
    "ReplicaSet": Columns(("DESIRED", "CURRENT", "READY", "AGE"),
                          ("CONTAINERS", "IMAGES", "SELECTOR"), _replicaset),
    "Service": Columns(("TYPE", "CLUSTER-IP", "PORT(S)", "AGE"), ("SELECTOR",), _service),
    "Endpoints": Columns(("ENDPOINTS", "AGE"), (), _endpoints),
    "Node": Columns(("STATUS", "ROLES", "AGE", "VERSION"),
                    ("INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION",
                     "CONTAINER-RUNTIME"), _node),
    "Namespace": Columns(("STATUS", "AGE"), (), _namespace),
    "Network": Columns(("SUBNET", "INTERNAL", "AGE"), ("NODE SUBNETS",), _network),
    "Event": Columns(("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"), (), _event,
                     name_column=False),
}  # fmt: skip
_GENERIC = Columns(("AGE",), (), _generic)


def columns_for(kind: str) -> Columns:
    return COLUMNS.get(kind, _GENERIC)


@dataclass(frozen=True)
class TableOptions:
    wide: bool = False
    namespace_column: bool = False
    show_labels: bool = False


def headers(kind: str, opts: TableOptions) -> list[str]:
    cols = columns_for(kind)
    out = ["NAMESPACE"] if opts.namespace_column else []
    out += ["NAME"] if cols.name_column else []
    out += list(cols.headers)
    if opts.wide:
        out += list(cols.wide)
    if opts.show_labels:
        out.append("LABELS")
    return out


def row(obj: Resource, now: float, opts: TableOptions) -> list[str]:
    """One table row for ``obj``, matching ``headers(obj.kind, opts)``."""
    cols = columns_for(obj.kind)
    cells = cols.cells(obj, now)
    main = cells[: len(cols.headers)]
    out = [obj.metadata.namespace or ""] if opts.namespace_column else []
    out += [obj.metadata.name, *main] if cols.name_column else main
    if opts.wide:
        out += cells[len(cols.headers) : len(cols.headers) + len(cols.wide)]
    if opts.show_labels:
        out.append(format_labels(obj.metadata.labels))
    return out


def make_table(
    head: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    widths: Sequence[int] | None = None,
    show_header: bool = True,
) -> Table:
    """kubectl's look: no borders, left-aligned, three spaces between columns. ``widths``
    pins minimum column widths so that rows printed later (by ``get -w``) line up."""
    table = Table(
        box=None,
        show_header=show_header,
        show_edge=False,
        pad_edge=False,
        padding=(0, 3, 0, 0),
        header_style="bold",
        expand=False,
    )
    for i, h in enumerate(head):
        table.add_column(h, no_wrap=True, min_width=widths[i] if widths else None)
    for r in rows:
        table.add_row(*r)
    return table


def print_table(console: Console, table: Table) -> None:
    """Print a table; off a terminal, without the padding rich leaves at line ends (so
    piped output has no trailing blanks)."""
    if console.is_terminal:
        console.print(table)
        return
    with console.capture() as captured:
        console.print(table)
    text = "\n".join(line.rstrip() for line in captured.get().splitlines())
    console.file.write(text + "\n")


def column_widths(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[int]:
    widths = [len(h) for h in head]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    return widths


def plain_table(head: Sequence[str], rows: Sequence[Sequence[str]], indent: int = 0) -> list[str]:
    """Aligned text lines (for ``describe``, whose tables sit inside indented text)."""
    widths = column_widths(head, rows)
    pad = " " * indent
    out = []
    for r in (head, *rows):
        cells = [c.ljust(widths[i]) for i, c in enumerate(r)]
        out.append((pad + "  ".join(cells)).rstrip())
    return out


# --- documents -------------------------------------------------------------------------------


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def to_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=4, ensure_ascii=False) + "\n"
