"""Reading manifests and planning what to send, without touching the server.

``apply`` works in two steps, as docker-compose v1 did: every file is read, every document
is matched to a kind and validated with the same rules the API server applies; only if all
of them are valid does anything get sent. A typo in the fifth document therefore never leaves
the first four half-applied. Errors name the file, the document's position in it and every
field at fault.

A relative ``hostPath.path`` in a Pod, Deployment or ReplicaSet is resolved while reading,
against the directory of the manifest file (standard input: the current directory), as
Docker Compose resolves relative bind mounts; the server only ever sees absolute paths.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from shoal.api import KINDS, KindInfo, Resource, apply_defaults, resolve_kind, validate_object
from shoal.errors import ConfigError, InvalidError

STDIN = "-"
STDIN_NAME = "<stdin>"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Document:
    """One object from a manifest: where it came from and its raw content."""

    source: str
    index: int
    """1-based position among the objects of ``source`` (items of a ``List`` count singly)."""
    data: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.source} (document {self.index})"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, with its location and any per-field details."""

    where: str
    message: str
    details: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        head = f"{self.where}: {self.message}" if self.where else self.message
        return [head, *(f"  {d}" for d in self.details)]


class ManifestError(ConfigError):
    """The manifests cannot be applied as written. ``problems`` lists every one found, so
    a user fixes them all in one round rather than one per run."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(line for p in self.problems for line in p.lines()))


# --- loading ---------------------------------------------------------------------------------


def load_documents(sources: Sequence[str], stdin: TextIO | None = None) -> list[Document]:
    """Every object in ``sources`` (files, directories of *.yaml/*.yml/*.json, or ``-`` for
    standard input), in order. Raises ManifestError naming each unreadable file."""
    docs: list[Document] = []
    problems: list[Problem] = []
    for source in sources:
        try:
            if source == STDIN:
                text = (stdin or sys.stdin).read()
                docs += resolve_host_paths(parse_text(text, STDIN_NAME), Path.cwd())
                continue
            path = Path(source)
            if path.is_dir():
                files = sorted(
                    p for p in path.iterdir() if p.is_file() and p.suffix in MANIFEST_SUFFIXES
                )
            elif path.exists():
                files = [path]
            else:
                raise ManifestError([Problem(source, "no such file or directory")])
            for f in files:
                parsed = parse_text(_read(f), str(f), json_only=f.suffix == ".json")
                docs += resolve_host_paths(parsed, f.resolve().parent)
        except ManifestError as exc:
            problems += exc.problems
    if problems:
        raise ManifestError(problems)
    return docs


_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
}


def resolve_host_paths(docs: list[Document], base: Path) -> list[Document]:
    """The documents with each relative ``hostPath.path`` of a pod spec made absolute
    against ``base`` (normalised; ``..`` allowed). Anything malformed is left as it is for
    validation to report."""
    out: list[Document] = []
    for doc in docs:
        data = copy.deepcopy(doc.data)
        changed = _resolve_in(data, base)
        out.append(Document(doc.source, doc.index, data) if changed else doc)
    return out


def _resolve_in(data: dict[str, Any], base: Path) -> bool:
    spec: Any = data
    for key in _POD_SPEC_PATHS.get(str(data.get("kind")), ()):
        spec = spec.get(key) if isinstance(spec, dict) else None
    volumes = spec.get("volumes") if isinstance(spec, dict) and spec is not data else None
    changed = False
    for vol in volumes if isinstance(volumes, list) else []:
        host_path = vol.get("hostPath") if isinstance(vol, dict) else None
        path = host_path.get("path") if isinstance(host_path, dict) else None
        if isinstance(host_path, dict) and isinstance(path, str) and path and path[0] != "/":
            host_path["path"] = os.path.normpath(base / path)
            changed = True
    return changed


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError([Problem(str(path), f"cannot read: {exc}")]) from None


def parse_text(text: str, source: str, *, json_only: bool = False) -> list[Document]:
    """The objects in one file's text: YAML documents (``---``-separated) or JSON; an object
    of ``kind: List`` contributes its ``items``. Syntax errors name the line."""
    raw: list[Any]
    if json_only:
        try:
            raw = [json.loads(text)] if text.strip() else []
        except json.JSONDecodeError as exc:
            raise ManifestError(
                [Problem(source, f"line {exc.lineno}, column {exc.colno}: {exc.msg}")]
            ) from None
    else:
        try:
            raw = list(yaml.safe_load_all(text))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            what = exc.problem or exc.context or "invalid YAML"
            if exc.problem and exc.context:
                started = exc.context_mark
                since = f" that started on line {started.line + 1}" if started else ""
                what = f"{exc.problem} ({exc.context}{since})"
            raise ManifestError([Problem(source, f"{where}{what}")]) from None
        except yaml.YAMLError as exc:
            raise ManifestError([Problem(source, f"invalid YAML: {exc}")]) from None
    docs: list[Document] = []
    problems: list[Problem] = []
    for item in raw:
        if item is None:
            continue
        objects = item.get("items") if _is_list(item) else [item]
        for obj in objects or []:
            index = len(docs) + len(problems) + 1
            if isinstance(obj, dict):
                docs.append(Document(source, index, obj))
            else:
                problems.append(
                    Problem(
                        f"{source} (document {index})",
                        f"expected an object with apiVersion and kind, got {_json_type(obj)}",
                    )
                )
    if problems:
        raise ManifestError(problems)
    return docs


def _is_list(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("kind"), str)
        and item["kind"].endswith("List")
        and isinstance(item.get("items"), list)
    )


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


# --- planning --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedObject:
    """A document resolved to its kind and checked: ``body`` is what create sends (the
    user's object with its namespace filled in); ``normalized`` is the same object after
    validation and server-side defaults, the form the server stores, so it can be compared
    with what is there."""

    doc: Document
    info: KindInfo
    body: dict[str, Any]
    normalized: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        ns = self.body["metadata"].get("namespace")
        return str(ns) if ns else None


def kind_for(data: dict[str, Any]) -> KindInfo | str:
    """The KindInfo for a document's apiVersion + kind, or why there is none."""
    kind, api_version = data.get("kind"), data.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        return "kind: Required value: every object needs apiVersion and kind"
    if not isinstance(api_version, str) or not api_version:
        return f'apiVersion: Required value: kind "{kind}" needs an apiVersion'
    matches = [k for k in KINDS if k.kind == kind]
    for k in matches:
        if k.api_version == api_version:
            return k
    if matches:
        served = matches[0].api_version
        return (
            f'no kind "{kind}" is registered for version "{api_version}" (use apiVersion: {served})'
        )
    hint = resolve_kind(kind)
    extra = f' (did you mean "{hint.kind}"?)' if hint is not None else ""
    return f'unknown kind "{kind}" in apiVersion "{api_version}"{extra}'


def plan_objects(
    docs: Sequence[Document], namespace: str | None = None, *, validate: bool = True
) -> list[PlannedObject]:
    """Resolve and validate every document. Raises ManifestError listing every document
    at fault (with every field error of each); returns the plan only when all are fine.

    ``namespace`` (``-n``) fills in objects that name none; an object naming a different
    namespace is an error, as in kubectl. ``validate=False`` (for ``delete -f``) checks only
    what is needed to address the object."""
    plan: list[PlannedObject] = []
    problems: list[Problem] = []
    for doc in docs:
        found = kind_for(doc.data)
        if isinstance(found, str):
            problems.append(Problem(doc.where, found))
            continue
        info = found
        body = copy.deepcopy(doc.data)
        meta = body.get("metadata")
        if meta is None:
            meta = body["metadata"] = {}
        if not isinstance(meta, dict):
            problems.append(Problem(doc.where, "metadata: must be an object"))
            continue
        if info.namespaced:
            own = meta.get("namespace")
            if namespace and own and own != namespace:
                problems.append(
                    Problem(
                        doc.where,
                        f'the namespace from the object ("{own}") does not match the '
                        f'namespace "{namespace}" given with -n',
                    )
                )
                continue
            meta["namespace"] = own or namespace or "default"
        else:
            meta.pop("namespace", None)
        shown = f'{info.kind} "{meta.get("name")}"' if meta.get("name") else info.kind
        if not meta.get("name"):
            problems.append(
                Problem(
                    doc.where,
                    f"{shown} is invalid:",
                    ("metadata.name: Required value: a name is needed to apply or delete",),
                )
            )
            continue
        if not validate:
            plan.append(PlannedObject(doc, info, body))
            continue
        try:
            obj = validate_object(info, body)
        except InvalidError as exc:
            problems.append(
                Problem(doc.where, f"{shown} is invalid:", tuple(str(c) for c in exc.causes))
            )
            continue
        plan.append(PlannedObject(doc, info, body, normalize(obj)))
    if problems:
        raise ManifestError(problems)
    return plan


def normalize(obj: Resource) -> dict[str, Any]:
    """The stored form of a validated object: server defaults applied, wire-shaped."""
    apply_defaults(obj)
    return obj.to_dict()
