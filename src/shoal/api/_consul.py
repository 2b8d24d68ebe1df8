"""Registry kinds (apiVersion consul.shoal.dev/v1): what the Consul-compatible API stores.

Services and checks registered through ``/v1/agent/...`` and keys written through ``/v1/kv``
are API objects like any other: stored by the API server, so they survive restarts and can be
listed and watched (``shoal get serviceregistrations``). All three kinds are cluster-scoped,
as Consul OSS has no namespaces.

Consul IDs and keys are free-form strings while object names must be DNS subdomains, so an
object's name is derived from its ID (:func:`object_name`) and the ID itself lives in the
spec. Durations are kept as the Go duration text the client sent ("10s"), as Consul echoes
them back in check definitions.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import Field

from shoal.api._meta import Model, Resource

CheckType = Literal["http", "tcp", "ttl", "script"]
CheckStatusValue = Literal["passing", "warning", "critical"]

_PLAIN_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def object_name(identifier: str) -> str:
    """The object name for a Consul ID or key: the ID itself when it is already a valid name
    (lowercase letters, digits and dashes, at most 200 characters), else ``x-`` and a hash.

    Deterministic, so finding the object for an ID needs no index; the ``x-`` form can never
    equal a plain ID because plain IDs are checked not to start with it.
    """
    if len(identifier) <= 200 and _PLAIN_NAME.match(identifier) and not identifier.startswith("x-"):
        return identifier
    digest = hashlib.sha256(identifier.encode()).hexdigest()[:40]
    return f"x-{digest}"


class CheckDefinition(Model):
    """A health check as registered (Consul's ``CheckDefinition``, lower camel case)."""

    check_id: str = Field(alias="checkID")
    name: str = ""
    type: CheckType
    notes: str = ""
    service_id: str = Field("", alias="serviceID")
    interval: str = ""
    timeout: str = ""
    ttl: str = ""
    http: str = ""
    method: str = ""
    header: dict[str, list[str]] = Field(default_factory=dict)
    body: str = ""
    tls_skip_verify: bool = False
    tcp: str = ""
    args: list[str] = Field(default_factory=list)
    deregister_critical_service_after: str = ""


class CheckState(Model):
    """A check's latest result; ``since`` is when the status last changed (RFC 3339)."""

    check_id: str = Field(alias="checkID")
    status: CheckStatusValue = "critical"
    output: str = ""
    since: str = ""


class Weights(Model):
    passing: int = 1
    warning: int = 1


class ServiceRegistrationSpec(Model):
    id: str
    service: str
    node: str = ""
    address: str = ""
    port: int = 0
    tags: list[str] = Field(default_factory=list)
    meta: dict[str, str] = Field(default_factory=dict)
    enable_tag_override: bool = False
    weights: Weights = Field(default_factory=Weights)
    checks: list[CheckDefinition] = Field(default_factory=list)


class ServiceRegistrationStatus(Model):
    checks: list[CheckState] = Field(default_factory=list)


class ServiceRegistration(Resource):
    """A service instance registered through the Consul API, with its checks."""

    api_version: Literal["consul.shoal.dev/v1"] = "consul.shoal.dev/v1"
    kind: Literal["ServiceRegistration"] = "ServiceRegistration"
    spec: ServiceRegistrationSpec
    status: ServiceRegistrationStatus = Field(default_factory=ServiceRegistrationStatus)


class HealthCheckSpec(CheckDefinition):
    node: str = ""


class HealthCheck(Resource):
    """A check registered on its own (``/v1/agent/check/register``): a node-level check, or
    one attached to a service by ``serviceID``."""

    api_version: Literal["consul.shoal.dev/v1"] = "consul.shoal.dev/v1"
    kind: Literal["HealthCheck"] = "HealthCheck"
    spec: HealthCheckSpec
    status: CheckState | None = None


class KVPairSpec(Model):
    key: str
    value: str = ""
    """Base64, as Consul returns it; empty for a key with no value."""
    flags: int = Field(0, ge=0, le=2**64 - 1)
    create_index: int = 0
    """The revision that created the key (0 until the first update records it)."""


class KVPair(Resource):
    """One key of the Consul KV store."""

    api_version: Literal["consul.shoal.dev/v1"] = "consul.shoal.dev/v1"
    kind: Literal["KVPair"] = "KVPair"
    spec: KVPairSpec
