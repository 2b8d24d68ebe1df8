"""A table as data (:class:`TableModel`) and the ``nft -f`` scripts made from it: one that
creates the table whole, and one that turns one model into another touching only what
differs. Pure: no I/O, and nothing here knows what the chains are for (``_nftrules`` builds
the models).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_SET_REF = re.compile(r"@([A-Za-z0-9_./-]+)")


@dataclass(frozen=True)
class TableModel:
    """A table as data: what a full render creates and what a delta diffs.

    ``hooks`` holds the base-chain declarations (``type ... hook ...``) by chain name;
    ``chains`` every chain's rules in order; ``sets`` each set's or map's declaration body;
    ``elements`` each set's or map's elements (key -> verdict, or "" for a plain set)."""

    table: str
    hooks: Mapping[str, str] = field(default_factory=dict)
    chains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    sets: Mapping[str, str] = field(default_factory=dict)
    elements: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def _elements(table: str, verb: str, name: str, items: Mapping[str, str], keys_only: bool) -> str:
    parts = [k if keys_only or not v else f"{k} : {v}" for k, v in items.items()]
    return f"{verb} element ip {table} {name} {{ {', '.join(parts)} }}"


def _set_decl(table: str, name: str, body: str) -> str:
    kind = "map" if " : " in body else "set"
    return f"add {kind} ip {table} {name} {{ {body} }}"


def script(lines: list[str]) -> str:
    """Lines as one ``nft -f`` script (empty when there are none)."""
    return "\n".join(lines) + "\n" if lines else ""


def render_model(model: TableModel) -> str:
    """A script that (re)creates ``model``'s table in one transaction, whether or not the
    table exists: ``add`` + ``delete`` clears it, then everything is declared before use."""
    t = model.table
    out = [f"add table ip {t}", f"delete table ip {t}", f"add table ip {t}"]
    for name in model.chains:
        hook = model.hooks.get(name)
        out.append(f"add chain ip {t} {name}" + (f" {{ {hook} }}" if hook else ""))
    out += [_set_decl(t, name, body) for name, body in model.sets.items()]
    for name, rules in model.chains.items():
        out += [f"add rule ip {t} {name} {rule}" for rule in rules]
    for name, items in model.elements.items():
        if items:
            out.append(_elements(t, "add", name, items, keys_only=False))
    return script(out)


def diff_models(old: TableModel, new: TableModel) -> str:
    """The script that turns table ``old`` into ``new`` touching only what differs, in an
    order nft accepts within one transaction: drop map elements, flush the chains that change
    or go (and those naming a set that goes), delete sets then chains, add sets, chains, rules
    and elements. Base chains (hooks) must be the same in both."""
    if old.table != new.table or old.hooks != new.hooks:
        raise ValueError("tables differ in name or base chains; render in full")
    t = new.table
    out: list[str] = []
    changed_sets = {n for n in old.sets if old.sets[n] != new.sets.get(n)}
    for name, items in old.elements.items():
        if name in changed_sets:
            continue
        fresh = new.elements.get(name, {})
        gone = {k: v for k, v in items.items() if fresh.get(k) != v}
        if gone:
            out.append(_elements(t, "delete", name, gone, keys_only=True))
    rewrite = {
        name
        for name, rules in old.chains.items()
        if new.chains.get(name) != rules
        or any(ref in changed_sets for rule in rules for ref in _SET_REF.findall(rule))
    }
    out += [f"flush chain ip {t} {name}" for name in old.chains if name in rewrite]
    # A set goes before the chains its elements name (a service's balancer map).
    out += [f"delete set ip {t} {name}" for name in old.sets if name in changed_sets]
    out += [f"delete chain ip {t} {name}" for name in old.chains if name not in new.chains]
    out += [
        _set_decl(t, name, body)
        for name, body in new.sets.items()
        if name in changed_sets or name not in old.sets
    ]
    out += [f"add chain ip {t} {name}" for name in new.chains if name not in old.chains]
    for name, rules in new.chains.items():
        if name in rewrite or name not in old.chains:
            out += [f"add rule ip {t} {name} {rule}" for rule in rules]
    for name, items in new.elements.items():
        before = {} if name in changed_sets else old.elements.get(name, {})
        added = {k: v for k, v in items.items() if before.get(k) != v}
        if added:
            out.append(_elements(t, "add", name, added, keys_only=False))
    return script(out)
