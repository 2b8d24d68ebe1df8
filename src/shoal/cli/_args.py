"""Argument types and parsing shared by the commands: kinds as users type them
(``po``, ``deploy``, ``deployments.apps``, ``deploy/web``), namespaces, durations."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

import typer

from shoal.api import KindInfo, resolve_kind
from shoal.cli._app import fail

Namespace = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Namespace (default: default).", show_default=False),
]
Selector = Annotated[
    str | None,
    typer.Option(
        "--selector", "-l", help="Label selector, e.g. app=web,tier!=db.", show_default=False
    ),
]
FieldSelector = Annotated[
    str | None,
    typer.Option(
        "--field-selector",
        help="Field selector on any dotted path, e.g. spec.nodeName=node-a.",
        show_default=False,
    ),
]
Files = Annotated[
    list[str] | None,
    typer.Option(
        "--filename",
        "-f",
        help="Manifest file, directory of *.yaml/*.yml/*.json, or - for stdin (repeatable).",
        show_default=False,
    ),
]


class OutputFormat(StrEnum):
    wide = "wide"
    yaml = "yaml"
    json = "json"
    name = "name"


def kind_or_fail(text: str) -> KindInfo:
    """The kind a user typed, or exit with kubectl's message for an unknown one."""
    info = resolve_kind(text)
    if info is None:
        fail(f'the server doesn\'t have a resource type "{text}"')
    return info


def kind_and_names(kind: str, names: list[str]) -> list[tuple[KindInfo, str]]:
    """``KIND NAME...`` or ``KIND/NAME...`` into (kind, name) pairs."""
    if "/" in kind:
        pairs: list[tuple[KindInfo, str]] = []
        for item in [kind, *names]:
            k, sep, n = item.partition("/")
            if not sep or not n:
                fail(
                    f'there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. "deploy/web"): got "{item}"'
                )
            pairs.append((kind_or_fail(k), n))
        return pairs
    info = kind_or_fail(kind)
    return [(info, n) for n in names]


def one_kind_and_name(kind: str, name: str | None, what: str) -> tuple[KindInfo, str]:
    """Exactly one object, as ``KIND NAME`` or ``KIND/NAME``."""
    pairs = kind_and_names(kind, [name] if name else [])
    if len(pairs) != 1:
        fail(f"{what} needs exactly one object: KIND NAME or KIND/NAME")
    return pairs[0]


def namespace_for(info: KindInfo, namespace: str | None) -> str | None:
    """The namespace for one object of ``info``'s kind (None for cluster-scoped kinds)."""
    return (namespace or "default") if info.namespaced else None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``30s``, ``5m``, ``1h30m`` (kubectl's --timeout forms)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * scale[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise typer.BadParameter(f'invalid duration "{text}": use e.g. 90, 30s, 5m or 1h')
    return total
