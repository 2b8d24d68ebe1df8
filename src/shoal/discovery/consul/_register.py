"""Consul registration bodies -> registry object specs, with Consul's validation messages.

Consul decodes bodies case-insensitively and also accepts snake_case keys
(``DeregisterCriticalServiceAfter``, ``deregister_critical_service_after``); py-consul, for
one, sends ``{"ttl": "10s"}`` and ``{"http": ..., "interval": ...}``. Keys are therefore
folded (lowercase, underscores dropped) before lookup. Everything is validated before
anything is stored, so a bad body is a 400 with a message and leaves no trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shoal._util.duration import parse_duration
from shoal.errors import BadRequestError

JSON = dict[str, Any]

_STATUSES = ("passing", "warning", "critical")


def fold(body: Any, what: str = "body") -> JSON:
    """``body`` as a dict with folded keys; BadRequestError if it is not an object."""
    if not isinstance(body, Mapping):
        raise BadRequestError(f"Request decode failed: {what} must be a JSON object")
    return {str(k).lower().replace("_", ""): v for k, v in body.items()}


def _str(d: JSON, key: str, field: str, default: str = "") -> str:
    value = d.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadRequestError(f"Request decode failed: {field}: expected a string, got {value!r}")
    return value


def _int(d: JSON, key: str, field: str, default: int = 0) -> int:
    value = d.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequestError(f"Request decode failed: {field}: expected an integer, got {value!r}")
    return value


def _str_list(d: JSON, key: str, field: str) -> list[str]:
    value = d.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequestError(f"Request decode failed: {field}: expected a list of strings")
    return list(value)


def _str_map(d: JSON, key: str, field: str) -> dict[str, str]:
    value = d.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise BadRequestError(f"Request decode failed: {field}: expected a map of strings")
    return dict(value)


def _duration(d: JSON, key: str, field: str) -> str:
    value = d.get(key)
    if value in (None, "", 0):
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Go's JSON decoder reads a bare number as nanoseconds.
        return f"{value / 1e9}s"
    if not isinstance(value, str):
        raise BadRequestError(f"Request decode failed: {field}: expected a duration string")
    seconds = parse_duration(value, field)
    if seconds < 0:
        raise BadRequestError(f"Invalid check: {field} must not be negative")
    return value


def parse_check(
    raw: Any,
    *,
    default_id: str,
    default_name: str,
    service_id: str = "",
    enable_script_checks: bool = False,
) -> tuple[JSON, str | None]:
    """A check definition (registry spec form) and its initial status (None: Consul's
    default, critical). Raises BadRequestError with Consul's wording."""
    c = fold(raw, "check")
    check_id = _str(c, "checkid", "CheckID") or _str(c, "id", "ID") or default_id
    name = _str(c, "name", "Name") or default_name
    spec: JSON = {
        "checkID": check_id,
        "name": name,
        "notes": _str(c, "notes", "Notes"),
        "serviceID": _str(c, "serviceid", "ServiceID", service_id) or service_id,
        "interval": _duration(c, "interval", "Interval"),
        "timeout": _duration(c, "timeout", "Timeout"),
        "ttl": _duration(c, "ttl", "TTL"),
        "http": _str(c, "http", "HTTP"),
        "method": _str(c, "method", "Method"),
        "header": {},
        "body": _str(c, "body", "Body"),
        "tlsSkipVerify": bool(c.get("tlsskipverify", False)),
        "tcp": _str(c, "tcp", "TCP"),
        "args": _str_list(c, "args", "Args") or _str_list(c, "scriptargs", "ScriptArgs"),
        "deregisterCriticalServiceAfter": _duration(
            c, "deregistercriticalserviceafter", "DeregisterCriticalServiceAfter"
        ),
    }
    header = c.get("header") or {}
    if not isinstance(header, Mapping) or not all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in header.values()
    ):
        raise BadRequestError(
            "Request decode failed: Header: expected a map of header name to a list of values"
        )
    spec["header"] = {str(k): list(v) for k, v in header.items()}
    for unsupported in ("grpc", "dockercontainerid", "h2ping", "udp", "aliasnode", "aliasservice"):
        if c.get(unsupported):
            raise BadRequestError(
                f"Invalid check: {unsupported} checks are not supported by shoal "
                "(use HTTP, TCP, TTL or Args)"
            )
    kinds = [k for k in ("http", "tcp") if spec[k]] + (["script"] if spec["args"] else [])
    if len(kinds) > 1:
        raise BadRequestError(
            f"Invalid check: only one of HTTP, TCP or Args may be set, got {', '.join(kinds)}"
        )
    interval_check = bool(kinds)
    if spec["interval"] and spec["ttl"]:
        raise BadRequestError("Invalid check: Interval and TTL cannot both be specified")
    if interval_check and not spec["interval"]:
        raise BadRequestError("Invalid check: Interval must be > 0 for Script, HTTP or TCP checks")
    if not interval_check and not spec["ttl"]:
        raise BadRequestError(
            "Invalid check: TTL must be > 0 for TTL checks; "
            "or give HTTP, TCP or Args together with an Interval"
        )
    if spec["interval"] and parse_duration(spec["interval"], "Interval") <= 0:
        raise BadRequestError("Invalid check: Interval must be > 0 for Script, HTTP or TCP checks")
    if spec["ttl"] and parse_duration(spec["ttl"], "TTL") <= 0:
        raise BadRequestError("Invalid check: TTL must be > 0 for TTL checks")
    if spec["tcp"]:
        host, _, port = spec["tcp"].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadRequestError(f'Invalid check: TCP address "{spec["tcp"]}" is not host:port')
    if spec["http"] and not spec["http"].startswith(("http://", "https://")):
        raise BadRequestError(
            f'Invalid check: HTTP URL "{spec["http"]}" must be http:// or https://'
        )
    if spec["args"] and not enable_script_checks:
        raise BadRequestError(
            "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' "
            "to true (shoal: --enable-script-checks)"
        )
    spec["type"] = kinds[0] if kinds else "ttl"
    status = _str(c, "status", "Status") or None
    if status is not None and status not in _STATUSES:
        raise BadRequestError(f'Invalid check status: "{status}"')
    return spec, status


def parse_service(
    raw: Any, node: str, *, enable_script_checks: bool = False
) -> tuple[JSON, list[str | None]]:
    """A ServiceRegistration spec from an ``/v1/agent/service/register`` body, and the
    initial status of each of its checks."""
    s = fold(raw)
    name = _str(s, "name", "Name")
    if not name:
        raise BadRequestError("Missing service name")
    sid = _str(s, "id", "ID") or name
    port = _int(s, "port", "Port")
    if not 0 <= port <= 65535:
        raise BadRequestError(f"Invalid Port: {port} is not in 0-65535")
    weights = fold(s.get("weights") or {"passing": 1, "warning": 1}, "Weights")
    w_pass = _int(weights, "passing", "Weights.Passing", 1)
    w_warn = _int(weights, "warning", "Weights.Warning", 1)
    if w_pass < 1:
        raise BadRequestError("Passing must be greater than 0")
    if w_warn < 0:
        raise BadRequestError("Warning must be greater or equal than 0")
    kind = _str(s, "kind", "Kind")
    if kind:
        raise BadRequestError(
            f'Invalid service Kind "{kind}": shoal registers typical services only'
        )
    raw_checks: list[Any] = []
    if s.get("check"):
        raw_checks.append(s["check"])
    more = s.get("checks")
    if more is None:
        more = []
    if not isinstance(more, list):  # checked before any falsy shortcut: {} is not a list
        raise BadRequestError("Request decode failed: Checks: expected a list")
    raw_checks.extend(more)
    checks: list[JSON] = []
    statuses: list[str | None] = []
    for i, rc in enumerate(raw_checks, start=1):
        default_id = f"service:{sid}" if len(raw_checks) == 1 else f"service:{sid}:{i}"
        spec, status = parse_check(
            rc,
            default_id=default_id,
            default_name=f"Service '{name}' check",
            service_id=sid,
            enable_script_checks=enable_script_checks,
        )
        spec["serviceID"] = sid
        checks.append(spec)
        statuses.append(status)
    ids = [c["checkID"] for c in checks]
    dup = next((x for x in ids if ids.count(x) > 1), None)
    if dup is not None:
        raise BadRequestError(f'Invalid check: duplicate CheckID "{dup}"')
    return {
        "id": sid,
        "service": name,
        "node": node,
        "address": _str(s, "address", "Address"),
        "port": port,
        "tags": _str_list(s, "tags", "Tags"),
        "meta": _str_map(s, "meta", "Meta"),
        "enableTagOverride": bool(s.get("enabletagoverride", False)),
        "weights": {"passing": w_pass, "warning": w_warn},
        "checks": checks,
    }, statuses
