"""Label selectors (Kubernetes syntax) and name/label format checks.

Selector strings: ``app=web,tier!=db,env in (prod,staging),!canary,track``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def dns1123_subdomain_errors(value: str) -> list[str]:
    """Why ``value`` is not a valid object name (empty list when it is)."""
    errs: list[str] = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(value):
        errs.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character "
            "(e.g. 'example.com')"
        )
    return errs


def dns1123_label_errors(value: str) -> list[str]:
    """Why ``value`` is not a valid DNS label (namespace, container and port names)."""
    errs: list[str] = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.match(value):
        errs.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
            "or '-', and must start and end with an alphanumeric character (e.g. 'my-name')"
        )
    return errs


def label_key_errors(key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    errs: list[str] = []
    if prefix:
        errs += [f"prefix part {e}" for e in dns1123_subdomain_errors(prefix)]
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        errs.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character, at most 63 characters"
        )
    return errs


def label_value_errors(value: str) -> list[str]:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return [
            "a valid label value must be an empty string or consist of alphanumeric "
            "characters, '-', '_' or '.', and must start and end with an alphanumeric "
            "character, at most 63 characters"
        ]
    return []


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = field(default_factory=frozenset)

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values

    def __str__(self) -> str:
        vals = ",".join(sorted(self.values))
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        if len(self.values) == 1:
            return f"{self.key}{'=' if self.operator == 'In' else '!='}{vals}"
        return f"{self.key} {'in' if self.operator == 'In' else 'notin'} ({vals})"


@dataclass(frozen=True)
class Selector:
    """A conjunction of requirements. The empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        lab = labels or {}
        return all(r.matches(lab) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    @classmethod
    def parse(cls, text: str | None) -> Selector:
        """Parse the string form. Raises ValueError naming the bad part."""
        if not text or not text.strip():
            return cls()
        return cls(tuple(_parse_requirement(part) for part in _split_top(text)))

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> Selector:
        return cls(tuple(Requirement(k, "In", frozenset([v])) for k, v in sorted(labels.items())))

    @classmethod
    def from_match(
        cls,
        match_labels: Mapping[str, str] | None,
        match_expressions: Iterable[tuple[str, str, Iterable[str]]] = (),
    ) -> Selector:
        """From a LabelSelector object's matchLabels and (key, operator, values) expressions."""
        reqs = list(cls.from_labels(match_labels or {}).requirements)
        for key, op, values in match_expressions:
            if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
                raise ValueError(f'"{op}" is not a valid label selector operator')
            reqs.append(Requirement(key, op, frozenset(values)))  # type: ignore[arg-type]
        return cls(tuple(reqs))


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    cur = ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    if depth != 0:
        raise ValueError(f'unbalanced parentheses in selector "{text}"')
    return [p.strip() for p in parts]


_SET_RE = re.compile(r"^([^\s!=()]+)\s+(in|notin)\s*\(([^()]*)\)$")


def _parse_requirement(part: str) -> Requirement:
    if not part:
        raise ValueError("empty requirement in selector")
    m = _SET_RE.match(part)
    if m:
        key, op, raw = m.groups()
        values = frozenset(v.strip() for v in raw.split(",") if v.strip())
        _check_key(key)
        return Requirement(key, "In" if op == "in" else "NotIn", values)
    for token, op in (("!=", "NotIn"), ("==", "In"), ("=", "In")):
        if token in part:
            key, _, value = part.partition(token)
            key, value = key.strip(), value.strip()
            _check_key(key)
            if errs := label_value_errors(value):
                raise ValueError(f'invalid label value "{value}": {errs[0]}')
            return Requirement(key, op, frozenset([value]))  # type: ignore[arg-type]
    if part.startswith("!"):
        key = part[1:].strip()
        _check_key(key)
        return Requirement(key, "DoesNotExist")
    _check_key(part)
    return Requirement(part, "Exists")


def _check_key(key: str) -> None:
    if errs := label_key_errors(key):
        raise ValueError(f'invalid label key "{key}": {errs[0]}')


def parse_field_selector(text: str | None) -> list[tuple[str, bool, str]]:
    """``spec.nodeName=n1,status.phase!=Running`` -> [(field, equal?, value), ...]."""
    out: list[tuple[str, bool, str]] = []
    if not text:
        return out
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        for token, equal in (("!=", False), ("==", True), ("=", True)):
            if token in part:
                f, _, v = part.partition(token)
                out.append((f.strip(), equal, v.strip()))
                break
        else:
            raise ValueError(f'invalid field selector "{part}": expected field=value')
    return out
