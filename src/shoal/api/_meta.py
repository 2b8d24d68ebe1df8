"""Object metadata and the base classes every kind shares (Kubernetes object shape)."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from shoal.api._labels import Selector

Quantity = str | int | float
IntOrString = int | str


class Model(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", serialize_by_alias=True
    )

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase, with unset fields and empty lists and maps left out, as
        Kubernetes' ``omitempty`` JSON does (``labels: {}`` and ``args: []`` say nothing)."""
        pruned: dict[str, Any] = _prune(
            self.model_dump(by_alias=True, exclude_none=True, mode="json")
        )
        return pruned

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls.model_validate(data)


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = _prune(v)
            if v == {} or v == [] or (k == "name" and v == ""):
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


class OwnerReference(Model):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(Model):
    """metadata: identity, labels and the server-managed bookkeeping fields."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", serialize_by_alias=True
    )

    name: str = ""
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    owner_references: list[OwnerReference] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)

    def controller_ref(self) -> OwnerReference | None:
        return next((r for r in self.owner_references if r.controller), None)


class ObjectReference(Model):
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    api_version: str | None = None
    resource_version: str | None = None
    field_path: str | None = None


class LabelSelectorRequirement(Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(Model):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def to_selector(self) -> Selector:
        return Selector.from_match(
            self.match_labels, [(e.key, e.operator, e.values) for e in self.match_expressions]
        )

    def to_string(self) -> str:
        return str(self.to_selector())


class Condition(Model):
    """The common condition shape (type/status/reason/message/times)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    last_update_time: str | None = None
    last_probe_time: str | None = None
    last_heartbeat_time: str | None = None


class Resource(Model):
    """An API object: apiVersion, kind, metadata (+ spec/status in subclasses)."""

    api_version: str
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or ""

    @property
    def key(self) -> str:
        """ "namespace/name" (or "name" for cluster-scoped objects), as informers index."""
        return (
            f"{self.metadata.namespace}/{self.metadata.name}"
            if self.metadata.namespace
            else self.metadata.name
        )


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def set_condition(conditions: list[Condition], new: Condition, now: str) -> bool:
    """Insert or update ``new`` in place, keeping lastTransitionTime unless status changed.
    Returns True when anything changed."""
    old = get_condition(conditions, new.type)
    if old is None:
        if new.last_transition_time is None:
            new.last_transition_time = now
        conditions.append(new)
        return True
    changed = (old.status, old.reason, old.message) != (new.status, new.reason, new.message)
    if old.status != new.status:
        old.last_transition_time = now
    old.status, old.reason, old.message = new.status, new.reason, new.message
    for attr in ("last_update_time", "last_probe_time", "last_heartbeat_time"):
        value = getattr(new, attr)
        if value is not None and value != getattr(old, attr):
            setattr(old, attr, value)
            changed = True
    return changed
