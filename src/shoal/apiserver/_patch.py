"""Patch documents: JSON merge patch (RFC 7386) and JSON patch (RFC 6902)."""

from __future__ import annotations

import copy
from typing import Any

from shoal.errors import BadRequestError, InvalidError


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise BadRequestError(f'invalid JSON pointer "{path}"')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for p in parts[:-1]:
        try:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        except (KeyError, IndexError, ValueError, TypeError):
            raise InvalidError(f'JSON patch path "{path}" does not exist') from None
    return cur


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 operations add, remove, replace, test, copy and move."""
    if not isinstance(ops, list):
        raise BadRequestError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise BadRequestError(f"invalid JSON patch operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind in ("copy", "move"):
            src_parts = _pointer(op.get("from", ""))
            src_parent = _parent(doc, src_parts, op.get("from", ""))
            key: Any = int(src_parts[-1]) if isinstance(src_parent, list) else src_parts[-1]
            value = copy.deepcopy(src_parent[key])
            if kind == "move":
                del src_parent[key]
            doc = json_patch(doc, [{"op": "add", "path": path, "value": value}])
            continue
        parts = _pointer(path)
        if not parts:
            if kind in ("add", "replace"):
                doc = copy.deepcopy(op.get("value"))
                continue
            raise InvalidError("cannot remove or test the whole document")
        parent = _parent(doc, parts, path)
        last = parts[-1]
        try:
            if isinstance(parent, list):
                idx = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(idx, copy.deepcopy(op.get("value")))
                elif kind == "remove":
                    del parent[idx]
                elif kind == "replace":
                    parent[idx] = copy.deepcopy(op.get("value"))
                elif kind == "test":
                    if parent[idx] != op.get("value"):
                        raise InvalidError(f'JSON patch test failed at "{path}"')
                else:
                    raise BadRequestError(f'unknown JSON patch op "{kind}"')
            elif isinstance(parent, dict):
                if kind == "add":
                    parent[last] = copy.deepcopy(op.get("value"))
                elif kind == "remove":
                    del parent[last]
                elif kind == "replace":
                    if last not in parent:
                        raise InvalidError(f'JSON patch path "{path}" does not exist')
                    parent[last] = copy.deepcopy(op.get("value"))
                elif kind == "test":
                    if parent.get(last) != op.get("value"):
                        raise InvalidError(f'JSON patch test failed at "{path}"')
                else:
                    raise BadRequestError(f'unknown JSON patch op "{kind}"')
            else:
                raise InvalidError(f'JSON patch path "{path}" does not exist')
        except (KeyError, IndexError, ValueError):
            raise InvalidError(f'JSON patch path "{path}" does not exist') from None
    return doc
