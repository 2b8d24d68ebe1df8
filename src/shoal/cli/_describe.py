"""``shoal describe``: one object in prose, with the events recorded about it.

This is where a user finds out *why*: a pending pod's FailedScheduling events and its
PodScheduled condition carry the scheduler's per-node reasons; a crashing container's last
state carries its exit code. Pods, Deployments, Nodes and Services get kubectl-like layouts;
other kinds a readable dump of their fields.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any

import typer
import yaml

from shoal.api import (
    Condition,
    Container,
    ContainerState,
    Deployment,
    Event,
    KindInfo,
    Node,
    Pod,
    Probe,
    Service,
    cpu_millis,
    format_cpu,
    format_memory,
    kind_info,
    memory_bytes,
)
from shoal.cli._app import app, run
from shoal.cli._args import Namespace, Selector, kind_and_names, kind_or_fail, namespace_for
from shoal.cli._output import (
    NONE,
    age,
    event_time,
    format_endpoints,
    format_labels,
    node_roles,
    plain_table,
    service_ports,
)
from shoal.cli._rollout import new_replicaset, owned_replicasets, revision
from shoal.client import Client
from shoal.errors import NotFoundError

Value = str | Sequence[str]
Field = tuple[int, str, Value]
"""(indent, key, value): one "Key:  value" line; a list value continues on aligned lines;
an empty key makes ``value`` a line of its own at ``indent`` (command arguments)."""


def fields(items: Sequence[Field]) -> list[str]:
    """Aligned ``Key:  value`` lines, values starting in one column for the whole block (as
    kubectl's tabwriter lays them out). A key with an empty value is a sub-heading."""
    width = max((indent + len(key) + 1 for indent, key, _ in items if key), default=0) + 2
    out: list[str] = []
    for indent, key, value in items:
        if not key:
            out.append(" " * indent + str(value))
            continue
        values = [value] if isinstance(value, str) else list(value) or [NONE]
        head = (" " * indent + key + ":").ljust(width)
        out.append((head + values[0]).rstrip())
        out += [" " * width + v for v in values[1:]]
    return out


def _labels(labels: dict[str, str] | None) -> list[str]:
    return [f"{k}={v}" for k, v in sorted((labels or {}).items())] or [NONE]


def _meta_fields(meta: Any, namespaced: bool) -> list[Field]:
    out: list[Field] = [(0, "Name", meta.name)]
    if namespaced:
        out.append((0, "Namespace", meta.namespace or "default"))
    out += [
        (0, "Labels", _labels(meta.labels)),
        (0, "Annotations", _labels(meta.annotations)),
        (0, "CreationTimestamp", meta.creation_timestamp or NONE),
    ]
    return out


def conditions_lines(conditions: Sequence[Condition], heartbeat: bool = False) -> list[str]:
    if not conditions:
        return ["Conditions:  <none>"]
    head = ["Type", "Status", *(["LastHeartbeatTime"] if heartbeat else []), "Reason", "Message"]
    rows = [
        [
            c.type,
            c.status,
            *([c.last_heartbeat_time or ""] if heartbeat else []),
            c.reason or "",
            c.message or "",
        ]
        for c in conditions
    ]
    dashes = ["-" * len(h) for h in head]
    return ["Conditions:", *plain_table(head, [dashes, *rows], indent=2)]


def events_lines(events: Sequence[Event], now: float) -> list[str]:
    if not events:
        return ["Events:  <none>"]
    rows = []
    for ev in sorted(events, key=lambda e: event_time(e) or ""):
        when = age(event_time(ev), now)
        if ev.count > 1 and ev.first_timestamp:
            when = f"{when} (x{ev.count} over {age(ev.first_timestamp, now)})"
        source = ev.source.component or ev.reporting_component or ""
        if ev.source.host:
            source = f"{source}, {ev.source.host}" if source else ev.source.host
        rows.append([ev.type, ev.reason, when, source, ev.message])
    head = ["Type", "Reason", "Age", "From", "Message"]
    dashes = ["-" * len(h) for h in head]
    return ["Events:", *plain_table(head, [dashes, *rows], indent=2)]


# --- pods ------------------------------------------------------------------------------------


def _state_fields(label: str, state: ContainerState, indent: int) -> list[Field]:
    if state.running is not None:
        return [(indent, label, "Running"), (indent + 2, "Started", state.running.started_at or "")]
    if state.waiting is not None:
        out: list[Field] = [(indent, label, "Waiting")]
        if state.waiting.reason:
            out.append((indent + 2, "Reason", state.waiting.reason))
        if state.waiting.message:
            out.append((indent + 2, "Message", state.waiting.message))
        return out
    t = state.terminated
    if t is not None:
        out = [(indent, label, "Terminated")]
        out.append((indent + 2, "Reason", t.reason or ""))
        if t.message:
            out.append((indent + 2, "Message", t.message))
        out.append((indent + 2, "Exit Code", str(t.exit_code if t.exit_code is not None else "")))
        if t.signal:
            out.append((indent + 2, "Signal", str(t.signal)))
        out.append((indent + 2, "Started", t.started_at or ""))
        out.append((indent + 2, "Finished", t.finished_at or ""))
        return out
    return [(indent, label, "" if label == "Last State" else "Waiting")]


def _probe(p: Probe) -> str:
    if p.http_get is not None:
        how = f"http-get {p.http_get.scheme.lower()}://:{p.http_get.port}{p.http_get.path}"
    elif p.tcp_socket is not None:
        how = f"tcp-socket :{p.tcp_socket.port}"
    elif p.exec is not None:
        how = f"exec {p.exec.command}"
    else:
        how = "<none>"
    return (
        f"{how} delay={p.initial_delay_seconds}s timeout={p.timeout_seconds}s "
        f"period={p.period_seconds}s #success={p.success_threshold} "
        f"#failure={p.failure_threshold}"
    )


def container_fields(c: Container, status: Any, indent: int) -> list[Field]:
    """The fields kubectl shows for one container (status is its ContainerStatus or None)."""
    i = indent
    out: list[Field] = [(i - 2, c.name, "")]
    if status is not None:
        out.append((i, "Container ID", status.container_id or ""))
    out.append((i, "Image", c.image or NONE))
    for label, argv in (("Command", c.command), ("Args", c.args)):
        if argv:
            out.append((i, label, ""))
            out += [(i + 2, "", arg) for arg in argv]
    ports = [
        f"{p.container_port}/{p.protocol}" + (f" ({p.name})" if p.name else "") for p in c.ports
    ]
    actual = {p.container_port: p.host_port for p in (status.ports if status else [])}
    host = [f"{actual.get(p.container_port) or p.host_port or 0}/{p.protocol}" for p in c.ports]
    out.append((i, "Port" if len(ports) <= 1 else "Ports", ", ".join(ports) or NONE))
    out.append((i, "Host Port" if len(host) <= 1 else "Host Ports", ", ".join(host) or NONE))
    if status is not None:
        out += _state_fields("State", status.state, i)
        if status.last_state.running or status.last_state.waiting or status.last_state.terminated:
            out += _state_fields("Last State", status.last_state, i)
        out.append((i, "Ready", str(status.ready)))
        out.append((i, "Restart Count", str(status.restart_count)))
    for label, values in (("Limits", c.resources.limits), ("Requests", c.resources.requests)):
        if values:
            out.append((i, label, ""))
            out += [(i + 2, k, str(v)) for k, v in values.items()]
    if c.liveness_probe:
        out.append((i, "Liveness", _probe(c.liveness_probe)))
    if c.readiness_probe:
        out.append((i, "Readiness", _probe(c.readiness_probe)))
    out.append((i, "Environment", "" if c.env else NONE))
    out += [(i + 2, e.name, e.value) for e in c.env]
    mounts = [
        f"{m.mount_path} from {m.name}"
        + (f' (path "{m.sub_path}")' if m.sub_path else "")
        + (" (ro)" if m.read_only else " (rw)")
        for m in c.volume_mounts
    ]
    out.append((i, "Mounts", mounts or NONE))
    return out


def volumes_fields(pod: Pod) -> list[Field]:
    """kubectl's Volumes block: each volume's type and source."""
    if not pod.spec.volumes:
        return [(0, "Volumes", NONE)]
    out: list[Field] = [(0, "Volumes", "")]
    for v in pod.spec.volumes:
        out.append((2, v.name, ""))
        if v.host_path is not None:
            out += [
                (4, "Type", "HostPath (bare host directory volume)"),
                (4, "Path", v.host_path.path),
                (4, "HostPathType", v.host_path.type),
            ]
        elif v.empty_dir is not None:
            limit = v.empty_dir.size_limit
            out += [
                (4, "Type", "EmptyDir (a temporary directory that shares a pod's lifetime)"),
                (4, "Medium", v.empty_dir.medium),
                (4, "SizeLimit", str(limit) if limit is not None else "<unset>"),
            ]
    return out


def describe_pod(pod: Pod, events: Sequence[Event], now: float) -> list[str]:
    meta, spec, st = pod.metadata, pod.spec, pod.status
    node = f"{spec.node_name}/{st.host_ip}" if spec.node_name and st.host_ip else spec.node_name
    status: str = st.phase
    if meta.deletion_timestamp:
        status = f"Terminating (lasts {age(meta.deletion_timestamp, now)})"
    head: list[Field] = [(0, "Name", meta.name), (0, "Namespace", meta.namespace or "default")]
    head += [
        (0, "Node", node or NONE),
        (0, "Start Time", st.start_time or NONE),
        (0, "Labels", _labels(meta.labels)),
        (0, "Annotations", _labels(meta.annotations)),
        (0, "Status", status),
    ]
    if st.reason:
        head.append((0, "Reason", st.reason))
    if st.message:
        head.append((0, "Message", st.message))
    head.append((0, "IP", st.pod_ip or NONE))
    ctrl = meta.controller_ref()
    if ctrl is not None:
        head.append((0, "Controlled By", f"{ctrl.kind}/{ctrl.name}"))
    if st.nominated_node_name:
        head.append((0, "Nominated Node Name", st.nominated_node_name))
    head.append((0, "Containers", ""))
    by_name = {cs.name: cs for cs in st.container_statuses}
    for c in spec.containers:
        head += container_fields(c, by_name.get(c.name), 4)
    lines = fields(head)
    lines += conditions_lines(st.conditions)
    lines += fields(volumes_fields(pod))
    tolerations = [
        f"{t.key or ''}{'=' + t.value if t.value else ''}:{t.effect or ''}"
        + (" op=Exists" if t.operator == "Exists" else "")
        for t in spec.tolerations
    ]
    lines += fields(
        [
            (0, "Node-Selectors", _labels(spec.node_selector)),
            (0, "Tolerations", tolerations or [NONE]),
        ]
    )
    return lines + events_lines(events, now)


# --- deployments -----------------------------------------------------------------------------


def template_lines(template: dict[str, Any], indent: int = 2) -> list[str]:
    """A pod template as describe shows it (also used by ``rollout history --revision``)."""
    from shoal.api import PodTemplateSpec

    t = PodTemplateSpec.model_validate(template)
    items: list[Field] = [(indent, "Labels", _labels(t.metadata.labels))]
    if t.metadata.annotations:
        items.append((indent, "Annotations", _labels(t.metadata.annotations)))
    items.append((indent, "Containers", ""))
    for c in t.spec.containers:
        items += container_fields(c, None, indent + 4)
    return ["Pod Template:", *fields(items)]


def _rs_line(rs: dict[str, Any]) -> str:
    st = rs.get("status") or {}
    return (
        f"{rs['metadata']['name']} ({st.get('replicas', 0)}/"
        f"{(rs.get('spec') or {}).get('replicas', 0)} replicas created)"
    )


def describe_deployment(
    dep: Deployment,
    raw: dict[str, Any],
    owned: list[dict[str, Any]],
    events: Sequence[Event],
    now: float,
) -> list[str]:
    s, st = dep.spec, dep.status
    unavailable = st.unavailable_replicas or max(0, st.replicas - st.available_replicas)
    items = _meta_fields(dep.metadata, True)
    items += [
        (0, "Selector", dep.spec.selector.to_string() or NONE),
        (0, "Replicas", f"{s.replicas} desired | {st.updated_replicas} updated | {st.replicas} "
                        f"total | {st.available_replicas} available | {unavailable} unavailable"),
        (0, "StrategyType", s.strategy.type),
        (0, "MinReadySeconds", str(s.min_ready_seconds)),
    ]  # fmt: skip
    ru = s.strategy.rolling_update
    if s.strategy.type == "RollingUpdate" and ru is not None:
        items.append(
            (0, "RollingUpdateStrategy",
             f"{ru.max_unavailable} max unavailable, {ru.max_surge} max surge")
        )  # fmt: skip
    lines = fields(items)
    lines += template_lines(raw["spec"]["template"])
    lines += conditions_lines(st.conditions)
    new = new_replicaset(raw, owned)
    old = [
        rs
        for rs in sorted(owned, key=revision)
        if rs is not new
        and ((rs.get("spec") or {}).get("replicas") or (rs.get("status") or {}).get("replicas"))
    ]
    lines += fields(
        [
            (0, "OldReplicaSets", ", ".join(_rs_line(rs) for rs in old) or NONE),
            (0, "NewReplicaSet", _rs_line(new) if new else NONE),
        ]
    )
    return lines + events_lines(events, now)


# --- nodes -----------------------------------------------------------------------------------


def describe_node(
    node: Node, pods: Sequence[Pod], events: Sequence[Event], now: float
) -> list[str]:
    meta, spec, st = node.metadata, node.spec, node.status
    taints = [f"{t.key}{'=' + t.value if t.value else ''}:{t.effect}" for t in spec.taints]
    items: list[Field] = [(0, "Name", meta.name), (0, "Roles", node_roles(node))]
    items += _meta_fields(meta, False)[1:]
    items += [
        (0, "Taints", taints or [NONE]),
        (0, "Unschedulable", str(spec.unschedulable).lower()),
    ]
    lines = fields(items)
    lines += conditions_lines(st.conditions, heartbeat=True)
    info = st.node_info
    block: list[Field] = [(0, "Addresses", "")]
    block += [(2, a.type, a.address) for a in st.addresses] or [(2, "<none>", "")]
    for label, values in (("Capacity", st.capacity), ("Allocatable", st.allocatable)):
        block.append((0, label, ""))
        block += [(2, k, str(v)) for k, v in values.items()]
    block += [
        (0, "System Info", ""),
        (2, "Machine ID", info.machine_id),
        (2, "Kernel Version", info.kernel_version),
        (2, "OS Image", info.os_image),
        (2, "Operating System", info.operating_system),
        (2, "Architecture", info.architecture),
        (2, "Container Runtime Version", info.container_runtime_version),
        (2, "Kubelet Version", info.kubelet_version),
    ]
    lines += fields(block)
    active = [p for p in pods if p.status.phase not in ("Succeeded", "Failed")]
    lines.append(f"Non-terminated Pods:  ({len(active)} in total)")
    cpu_total = mem_total = 0
    rows = []
    for p in active:
        cpu = sum(cpu_millis(c.resources.requests.get("cpu", 0)) for c in p.spec.containers)
        mem = sum(memory_bytes(c.resources.requests.get("memory", 0)) for c in p.spec.containers)
        cpu_total, mem_total = cpu_total + cpu, mem_total + mem
        rows.append(
            [p.metadata.namespace or "", p.metadata.name, format_cpu(cpu), format_memory(mem),
             age(p.metadata.creation_timestamp, now)]
        )  # fmt: skip
    if rows:
        lines += plain_table(
            ["Namespace", "Name", "CPU Requests", "Memory Requests", "Age"], rows, 2
        )
    alloc_cpu = _quantity(st.allocatable.get("cpu"), cpu_millis)
    alloc_mem = _quantity(st.allocatable.get("memory"), memory_bytes)
    lines.append("Allocated resources:")
    lines += plain_table(
        ["Resource", "Requests"],
        [
            ["cpu", format_cpu(cpu_total) + _percent(cpu_total, alloc_cpu)],
            ["memory", format_memory(mem_total) + _percent(mem_total, alloc_mem)],
        ],
        2,
    )
    return lines + events_lines(events, now)


def _quantity(value: Any, parse: Any) -> int:
    try:
        return int(parse(value)) if value is not None else 0
    except (ValueError, TypeError):
        return 0


def _percent(used: int, total: int) -> str:
    return f" ({used * 100 // total}%)" if total else ""


# --- services and everything else ------------------------------------------------------------


def describe_service(
    svc: Service, endpoints: dict[str, Any] | None, events: Sequence[Event], now: float
) -> list[str]:
    from shoal.api import Endpoints

    items = _meta_fields(svc.metadata, True)
    items += [
        (0, "Selector", format_labels(svc.spec.selector)),
        (0, "Type", svc.spec.type),
        (0, "IP", svc.spec.cluster_ip or NONE),
        (0, "Port(s)", service_ports(svc)),
    ]
    for p in svc.spec.ports:
        items.append(
            (
                0,
                "TargetPort",
                f"{p.target_port if p.target_port is not None else p.port}/{p.protocol}",
            )
        )
    ep = Endpoints.model_validate(endpoints) if endpoints else None
    items += [
        (0, "Endpoints", format_endpoints(ep, limit=10**6) if ep else NONE),
        (0, "Session Affinity", svc.spec.session_affinity),
    ]
    return fields(items) + events_lines(events, now)


def describe_generic(
    info: KindInfo, raw: dict[str, Any], events: Sequence[Event], now: float
) -> list[str]:
    obj = info.model.model_validate(raw)
    lines = fields(_meta_fields(obj.metadata, info.namespaced))
    rest = {k: v for k, v in raw.items() if k not in ("apiVersion", "kind", "metadata")}
    for key, value in rest.items():
        dumped = yaml.safe_dump(value, sort_keys=False, default_flow_style=False).rstrip()
        if isinstance(value, dict | list) and value:
            lines.append(f"{key[0].upper()}{key[1:]}:")
            lines += ["  " + line for line in dumped.splitlines()]
        else:
            lines.append(f"{key[0].upper()}{key[1:]}:  {dumped.removesuffix(chr(10) + '...')}")
    return lines + events_lines(events, now)


# --- command ---------------------------------------------------------------------------------


async def events_for(client: Client, info: KindInfo, name: str, ns: str | None) -> list[Event]:
    """Events whose involvedObject is this object (any namespace for cluster-scoped kinds,
    whose events are recorded wherever their reporter put them)."""
    selector = f"involvedObject.name={name},involvedObject.kind={info.kind}"
    return await client.events.list(namespace=ns, field_selector=selector)


async def describe_one(client: Client, info: KindInfo, name: str, ns: str | None) -> list[str]:
    raw = await client.request("GET", info.object_path(name, ns))
    events = await events_for(client, info, name, ns)
    now = time.time()
    if info.kind == "Pod":
        return describe_pod(Pod.model_validate(raw), events, now)
    if info.kind == "Deployment":
        owned = await owned_replicasets(client, raw)
        return describe_deployment(Deployment.model_validate(raw), raw, owned, events, now)
    if info.kind == "Node":
        pods = await client.pods.list(field_selector=f"spec.nodeName={name}")
        return describe_node(Node.model_validate(raw), pods, events, now)
    if info.kind == "Service":
        try:
            ep = await client.request("GET", kind_info("Endpoints").object_path(name, ns))
        except NotFoundError:
            ep = None
        return describe_service(Service.model_validate(raw), ep, events, now)
    return describe_generic(info, raw, events, now)


@app.command()
def describe(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="Kind (or KIND/NAME).")],
    names: Annotated[list[str] | None, typer.Argument(help="Names (all objects if none).")] = None,
    namespace: Namespace = None,
    selector: Selector = None,
) -> None:
    """Show one object in detail, with the events recorded about it."""
    pairs = kind_and_names(kind, list(names or []))
    info_all = None if pairs else kind_or_fail(kind)

    async def job(client: Client) -> int:
        targets = [(i, n, namespace_for(i, namespace)) for i, n in pairs]
        if info_all is not None:
            ns = namespace_for(info_all, namespace)
            data = await client.request(
                "GET", info_all.collection_path(ns), params={"labelSelector": selector}
            )
            targets = [(info_all, i["metadata"]["name"], ns) for i in data.get("items") or []]
        for n, (info, name, ns) in enumerate(targets):
            if n:
                typer.echo("")
            typer.echo("\n".join(await describe_one(client, info, name, ns)))
        return 0

    run(ctx, job)
