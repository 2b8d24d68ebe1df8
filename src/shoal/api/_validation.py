"""Validation: every error at once, each with its field path, in Kubernetes' wording.

Two passes: the pydantic model catches shape errors (missing fields, wrong types, unknown
fields, values outside an enumeration); then per-kind rules catch what types cannot (names,
label syntax, quantities, selectors that must match templates, unique container names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from shoal.api._apps import Deployment, DeploymentStrategy, ReplicaSet
from shoal.api._core import (
    Container,
    Node,
    Pod,
    PodSecurityContext,
    PodSpec,
    Probe,
    SecurityContext,
    Service,
    Volume,
)
from shoal.api._fielderrors import (
    duplicate,
    forbidden,
    invalid,
    not_found,
    required,
    unsupported,
)
from shoal.api._kinds import KindInfo
from shoal.api._labels import (
    dns1123_label_errors,
    dns1123_subdomain_errors,
    label_key_errors,
    label_value_errors,
)
from shoal.api._meta import IntOrString, LabelSelector, ObjectMeta, Resource
from shoal.api._networking import Network, validate_network, validate_pod_networks
from shoal.api._quantity import parse_quantity
from shoal.errors import FieldError, InvalidError

_UNION_TAGS = re.compile(r"^(int|str|float|bool|list\[.*\]|dict\[.*\]|function-.*|literal\[.*\])$")


def _loc_to_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _UNION_TAGS.match(part):
            continue
        else:
            out += f".{part}" if out else part
    return out


def pydantic_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """Translate pydantic's errors into field errors, one per field."""
    errors: dict[str, FieldError] = {}
    for e in exc.errors(include_url=False):
        path = _loc_to_path(tuple(e["loc"]), prefix)
        kind = e["type"]
        value = e.get("input")
        if kind == "missing":
            err = required(path)
        elif kind == "extra_forbidden":
            err = FieldError(path, "FieldValueNotSupported", "Unknown field")
        elif kind == "literal_error":
            expected = str((e.get("ctx") or {}).get("expected", ""))
            options = re.findall(r"'([^']*)'", expected)
            err = unsupported(path, value, options)
        else:
            msg = e["msg"]
            msg = msg[0].lower() + msg[1:] if msg else msg
            shown = (
                value
                if isinstance(value, str | int | float | bool) or value is None
                else type(value).__name__
            )
            err = invalid(path, shown, msg)
        # Union members (int | str) each report; keep the first per field.
        errors.setdefault(path, err)
    return list(errors.values())


def validate_object(info: KindInfo, data: Mapping[str, Any]) -> Resource:
    """Parse and validate a whole object of ``info``'s kind. Raises InvalidError with every
    field error found."""
    name = ""
    meta = data.get("metadata") if isinstance(data, Mapping) else None
    if isinstance(meta, Mapping):
        name = str(meta.get("name") or "")
    try:
        obj = info.model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(info, name, pydantic_errors(exc)) from None
    errs = validate_meta(info, obj.metadata)
    errs += _RULES.get(info.kind, lambda _o: [])(obj)
    if errs:
        raise _invalid(info, name, errs)
    return obj


def _invalid(info: KindInfo, name: str, errs: list[FieldError]) -> InvalidError:
    detail = ", ".join(str(e) for e in errs)
    shown = f' "{name}"' if name else ""
    return InvalidError(
        f"{info.kind}{shown} is invalid: {detail}", kind=info.kind, name=name or None, causes=errs
    )


def validate_meta(info: KindInfo, meta: ObjectMeta, path: str = "metadata") -> list[FieldError]:
    errs: list[FieldError] = []
    if not meta.name and not meta.generate_name:
        errs.append(
            FieldError(
                f"{path}.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            )
        )
    elif meta.name:
        check = dns1123_label_errors if info.kind == "Namespace" else dns1123_subdomain_errors
        errs += [invalid(f"{path}.name", meta.name, m) for m in check(meta.name)]
    if meta.namespace and info.namespaced:
        errs += [
            invalid(f"{path}.namespace", meta.namespace, m)
            for m in dns1123_label_errors(meta.namespace)
        ]
    errs += validate_labels(meta.labels, f"{path}.labels")
    for key in meta.annotations:
        errs += [invalid(f"{path}.annotations", key, m) for m in label_key_errors(key)]
    return errs


def validate_labels(labels: Mapping[str, str], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for key, value in labels.items():
        errs += [invalid(path, key, m) for m in label_key_errors(key)]
        errs += [invalid(f"{path}.{key}", value, m) for m in label_value_errors(value)]
    return errs


def _quantities(values: Mapping[str, object], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for key, value in values.items():
        if key not in ("cpu", "memory", "pods", "ephemeral-storage") and "/" not in key:
            errs.append(unsupported(f"{path}.{key}", key, ["cpu", "memory"]))
            continue
        try:
            q = parse_quantity(value)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            errs.append(
                invalid(f"{path}.{key}", value, "must be a quantity like 250m, 0.5, 128Mi or 1G")
            )
            continue
        if q < 0:
            errs.append(invalid(f"{path}.{key}", value, "must be greater than or equal to 0"))
    return errs


def _probe(probe: Probe, path: str, port_names: set[str]) -> list[FieldError]:
    errs: list[FieldError] = []
    handlers = [h for h in (probe.http_get, probe.tcp_socket, probe.exec) if h is not None]
    if not handlers:
        errs.append(required(f"{path}: must specify a handler type (httpGet, tcpSocket or exec)"))
    elif len(handlers) > 1:
        errs.append(forbidden(path, "may not specify more than 1 handler type"))
    for port_owner, sub in ((probe.http_get, "httpGet"), (probe.tcp_socket, "tcpSocket")):
        if port_owner is not None:
            errs += _port_ref(port_owner.port, f"{path}.{sub}.port", port_names)
    if probe.exec is not None and not probe.exec.command:
        errs.append(required(f"{path}.exec.command"))
    for fname, minimum in (("initial_delay_seconds", 0), ("period_seconds", 1), ("timeout_seconds", 1),
                           ("success_threshold", 1), ("failure_threshold", 1)):  # fmt: skip
        value = getattr(probe, fname)
        if value < minimum:
            camel = Probe.model_fields[fname].alias or fname
            errs.append(
                invalid(f"{path}.{camel}", value, f"must be greater than or equal to {minimum}")
            )
    return errs


def _port_ref(port: IntOrString, path: str, names: set[str]) -> list[FieldError]:
    if isinstance(port, int):
        if not 1 <= port <= 65535:
            return [invalid(path, port, "must be between 1 and 65535, inclusive")]
        return []
    if port not in names:
        return [
            invalid(path, port, "must be a container port number or the name of a declared port")
        ]
    return []


_MAX_ID = 2147483647


def _ids(ctx: SecurityContext | PodSecurityContext, path: str) -> list[FieldError]:
    """Kubernetes' user/group id range check (a negative uid would mean "any" to some tools)."""
    errs: list[FieldError] = []
    for fname in ("run_as_user", "run_as_group", "fs_group"):
        value = getattr(ctx, fname, None)
        if value is not None and not 0 <= value <= _MAX_ID:
            camel = type(ctx).model_fields[fname].alias or fname
            errs.append(
                invalid(f"{path}.{camel}", value, f"must be between 0 and {_MAX_ID}, inclusive")
            )
    return errs


def _backsteps(path: str, value: str) -> list[FieldError]:
    if ".." in value.split("/"):
        return [invalid(path, value, "must not contain '..'")]
    return []


def _volumes(volumes: list[Volume], path: str) -> list[FieldError]:
    """Unique DNS-label names, exactly one source each, sane hostPath paths and sizes."""
    errs: list[FieldError] = []
    seen: set[str] = set()
    for i, v in enumerate(volumes):
        vp = f"{path}[{i}]"
        if not v.name:
            errs.append(required(f"{vp}.name"))
        else:
            errs += [invalid(f"{vp}.name", v.name, m) for m in dns1123_label_errors(v.name)]
            if v.name in seen:
                errs.append(duplicate(f"{vp}.name", v.name))
            seen.add(v.name)
        sources = [(n, s) for n, s in (("emptyDir", v.empty_dir), ("hostPath", v.host_path))
                   if s is not None]  # fmt: skip
        if not sources:
            errs.append(
                FieldError(vp, "FieldValueRequired", "Required value: must specify a volume type")
            )
        for extra, _ in sources[1:]:
            errs.append(forbidden(f"{vp}.{extra}", "may not specify more than 1 volume type"))
        if v.host_path is not None:
            hp = f"{vp}.hostPath.path"
            if not v.host_path.path:
                errs.append(required(hp))
            elif not v.host_path.path.startswith("/"):
                errs.append(invalid(hp, v.host_path.path, "must be an absolute path"))
            else:
                errs += _backsteps(hp, v.host_path.path)
        if v.empty_dir is not None and v.empty_dir.size_limit is not None:
            limit = v.empty_dir.size_limit
            sp = f"{vp}.emptyDir.sizeLimit"
            try:
                if parse_quantity(limit) < 0:
                    errs.append(invalid(sp, limit, "must be greater than or equal to 0"))
            except (ValueError, TypeError):
                errs.append(invalid(sp, limit, "must be a quantity like 128Mi or 1G"))
    return errs


def _mounts(c: Container, path: str, volume_names: set[str]) -> list[FieldError]:
    errs: list[FieldError] = []
    paths: set[str] = set()
    for i, m in enumerate(c.volume_mounts):
        mp = f"{path}.volumeMounts[{i}]"
        if not m.name:
            errs.append(required(f"{mp}.name"))
        elif m.name not in volume_names:
            errs.append(not_found(f"{mp}.name", m.name))
        if not m.mount_path:
            errs.append(required(f"{mp}.mountPath"))
        elif not m.mount_path.startswith("/"):
            errs.append(invalid(f"{mp}.mountPath", m.mount_path, "must be an absolute path"))
        else:
            errs += _backsteps(f"{mp}.mountPath", m.mount_path)
            normalised = "/" + "/".join(p for p in m.mount_path.split("/") if p)
            if normalised in paths:
                errs.append(invalid(f"{mp}.mountPath", m.mount_path, "must be unique"))
            paths.add(normalised)
        if m.sub_path:
            if m.sub_path.startswith("/"):
                errs.append(invalid(f"{mp}.subPath", m.sub_path, "must be a relative path"))
            errs += _backsteps(f"{mp}.subPath", m.sub_path)
    return errs


def _security(ctx: SecurityContext, path: str) -> list[FieldError]:
    errs = _ids(ctx, path)
    if ctx.privileged and ctx.allow_privilege_escalation is False:
        errs.append(
            invalid(
                path,
                "",
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            )
        )
    return errs


def _container(c: Container, path: str, volume_names: set[str] | None = None) -> list[FieldError]:
    errs = [invalid(f"{path}.name", c.name, m) for m in dns1123_label_errors(c.name)]
    errs += _mounts(c, path, volume_names or set())
    if c.security_context is not None:
        errs += _security(c.security_context, f"{path}.securityContext")
    if not c.image and not c.command:
        errs.append(FieldError(f"{path}.image", "FieldValueRequired",
                               "Required value: a container needs an image or a command"))  # fmt: skip
    port_names: set[str] = set()
    for i, p in enumerate(c.ports):
        pp = f"{path}.ports[{i}]"
        if not 1 <= p.container_port <= 65535:
            errs.append(
                invalid(
                    f"{pp}.containerPort",
                    p.container_port,
                    "must be between 1 and 65535, inclusive",
                )
            )
        if p.host_port is not None and not 0 <= p.host_port <= 65535:
            errs.append(
                invalid(f"{pp}.hostPort", p.host_port, "must be between 1 and 65535, inclusive")
            )
        if p.name:
            if len(p.name) > 15 or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", p.name):
                errs.append(
                    invalid(
                        f"{pp}.name",
                        p.name,
                        "must be no more than 15 characters, lower case alphanumeric or '-'",
                    )
                )
            if p.name in port_names:
                errs.append(duplicate(f"{pp}.name", p.name))
            port_names.add(p.name)
    for i, e in enumerate(c.env):
        if not e.name:
            errs.append(required(f"{path}.env[{i}].name"))
    errs += _quantities(c.resources.requests, f"{path}.resources.requests")
    errs += _quantities(c.resources.limits, f"{path}.resources.limits")
    if not errs:
        for res in ("cpu", "memory"):
            req, lim = c.resources.requests.get(res), c.resources.limits.get(res)
            if req is not None and lim is not None and parse_quantity(req) > parse_quantity(lim):
                errs.append(
                    invalid(
                        f"{path}.resources.requests",
                        req,
                        f"must be less than or equal to {res} limit of {lim}",
                    )
                )
    if c.liveness_probe:
        errs += _probe(c.liveness_probe, f"{path}.livenessProbe", port_names)
    if c.readiness_probe:
        errs += _probe(c.readiness_probe, f"{path}.readinessProbe", port_names)
    return errs


def validate_pod_spec(spec: PodSpec, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    if not spec.containers:
        errs.append(required(f"{path}.containers"))
    errs += _volumes(spec.volumes, f"{path}.volumes")
    if spec.security_context is not None:
        errs += _ids(spec.security_context, f"{path}.securityContext")
    errs += validate_pod_networks(spec.networks, bool(spec.host_network), path)
    volume_names = {v.name for v in spec.volumes if v.name}
    seen: set[str] = set()
    for i, c in enumerate(spec.containers):
        errs += _container(c, f"{path}.containers[{i}]", volume_names)
        if c.name in seen:
            errs.append(duplicate(f"{path}.containers[{i}].name", c.name))
        seen.add(c.name)
    if spec.termination_grace_period_seconds < 0:
        errs.append(invalid(f"{path}.terminationGracePeriodSeconds", spec.termination_grace_period_seconds,
                            "must be greater than or equal to 0"))  # fmt: skip
    errs += validate_labels(spec.node_selector, f"{path}.nodeSelector")
    return errs


def _pod(obj: Resource) -> list[FieldError]:
    assert isinstance(obj, Pod)
    return validate_pod_spec(obj.spec, "spec")


def _selector_and_template(
    selector: LabelSelector, labels: Mapping[str, str], path: str
) -> list[FieldError]:
    errs: list[FieldError] = []
    if not selector.match_labels and not selector.match_expressions:
        return [required(f"{path}.selector")]
    errs += validate_labels(selector.match_labels, f"{path}.selector.matchLabels")
    try:
        sel = selector.to_selector()
    except ValueError as exc:
        return [*errs, invalid(f"{path}.selector", selector.to_dict(), str(exc))]
    if not errs and not sel.matches(labels):
        shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        errs.append(
            invalid(
                f"{path}.template.metadata.labels",
                shown,
                "`selector` does not match template `labels`",
            )
        )
    return errs


def _strategy(strategy: DeploymentStrategy, replicas: int, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    ru = strategy.rolling_update
    if strategy.type == "Recreate":
        if ru is not None:
            errs.append(
                forbidden(
                    f"{path}.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                )
            )
        return errs
    if ru is None:
        return errs
    values = {}
    for fname, camel in (("max_surge", "maxSurge"), ("max_unavailable", "maxUnavailable")):
        v = getattr(ru, fname)
        fp = f"{path}.rollingUpdate.{camel}"
        if isinstance(v, str):
            m = re.fullmatch(r"(\d+)%", v)
            if not m:
                errs.append(
                    invalid(
                        fp,
                        v,
                        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%')",
                    )
                )
                continue
            values[camel] = int(m.group(1))
            if camel == "maxUnavailable" and values[camel] > 100:
                errs.append(invalid(fp, v, "must not be greater than 100%"))
        else:
            if v < 0:
                errs.append(invalid(fp, v, "must be greater than or equal to 0"))
            values[camel] = v
    if not errs and values.get("maxSurge") == 0 and values.get("maxUnavailable") == 0:
        errs.append(invalid(f"{path}.rollingUpdate.maxUnavailable", ru.max_unavailable,
                            "may not be 0 when `maxSurge` is 0"))  # fmt: skip
    return errs


def _deployment(obj: Resource) -> list[FieldError]:
    assert isinstance(obj, Deployment)
    s = obj.spec
    errs: list[FieldError] = []
    if s.replicas < 0:
        errs.append(invalid("spec.replicas", s.replicas, "must be greater than or equal to 0"))
    errs += _selector_and_template(s.selector, s.template.metadata.labels, "spec")
    errs += validate_labels(s.template.metadata.labels, "spec.template.metadata.labels")
    errs += validate_pod_spec(s.template.spec, "spec.template.spec")
    if s.template.spec.restart_policy != "Always":
        errs.append(
            unsupported(
                "spec.template.spec.restartPolicy", s.template.spec.restart_policy, ["Always"]
            )
        )
    errs += _strategy(s.strategy, s.replicas, "spec.strategy")
    if s.revision_history_limit < 0:
        errs.append(
            invalid(
                "spec.revisionHistoryLimit",
                s.revision_history_limit,
                "must be greater than or equal to 0",
            )
        )
    return errs


def _replicaset(obj: Resource) -> list[FieldError]:
    assert isinstance(obj, ReplicaSet)
    s = obj.spec
    errs: list[FieldError] = []
    if s.replicas < 0:
        errs.append(invalid("spec.replicas", s.replicas, "must be greater than or equal to 0"))
    errs += _selector_and_template(s.selector, s.template.metadata.labels, "spec")
    errs += validate_pod_spec(s.template.spec, "spec.template.spec")
    return errs


def _service(obj: Resource) -> list[FieldError]:
    assert isinstance(obj, Service)
    errs = validate_labels(obj.spec.selector, "spec.selector")
    names: set[str] = set()
    ports = obj.spec.ports
    for i, p in enumerate(ports):
        pp = f"spec.ports[{i}]"
        if not 1 <= p.port <= 65535:
            errs.append(invalid(f"{pp}.port", p.port, "must be between 1 and 65535, inclusive"))
        if len(ports) > 1 and not p.name:
            errs.append(required(f"{pp}.name"))
        if p.name:
            if p.name in names:
                errs.append(duplicate(f"{pp}.name", p.name))
            names.add(p.name)
        if isinstance(p.target_port, int) and not 1 <= p.target_port <= 65535:
            errs.append(
                invalid(f"{pp}.targetPort", p.target_port, "must be between 1 and 65535, inclusive")
            )
        if p.node_port is not None and not 30000 <= p.node_port <= 32767:
            errs.append(
                invalid(
                    f"{pp}.nodePort",
                    p.node_port,
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                )
            )
    return errs


def _network(obj: Resource) -> list[FieldError]:
    assert isinstance(obj, Network)
    return validate_network(obj)


def _node(obj: Resource) -> list[FieldError]:
    assert isinstance(obj, Node)
    return _quantities(obj.status.capacity, "status.capacity") + _quantities(
        obj.status.allocatable, "status.allocatable"
    )


_RULES = {
    "Pod": _pod,
    "Deployment": _deployment,
    "ReplicaSet": _replicaset,
    "Service": _service,
    "Node": _node,
    "Network": _network,
}
