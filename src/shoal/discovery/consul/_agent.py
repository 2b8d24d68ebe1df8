"""The write side of the Consul agent API: services and checks registered, deregistered and
updated, as ServiceRegistration and HealthCheck objects through the object source.

Every write waits until the registry has applied it before returning, so a client that
registers and then reads (``/v1/agent/services``, ``/v1/health/service``, DNS aside) sees
its own write, as it would on a Consul agent.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from shoal._util.clock import format_time
from shoal.api import object_name
from shoal.discovery._source import JSONObject, ObjectSource, revision
from shoal.discovery._state import RegistryState
from shoal.discovery.consul._register import fold, parse_check, parse_service
from shoal.errors import AlreadyExistsError, BadRequestError, ConflictError, NotFoundError

log = logging.getLogger("shoal.discovery.consul")

API_VERSION = "consul.shoal.dev/v1"
OUTPUT_LIMIT = 4096
"""Consul's default ``check_output_max_size``."""

_STATUSES = ("passing", "warning", "critical")


class TTLUpdater(Protocol):
    """What the agent needs of the check runner: TTL heartbeats go through it, so its
    expiry timer restarts; it then reports the new status back through
    :meth:`ConsulAgent.set_check_status`."""

    async def ttl_update(self, check_id: str, status: str, output: str) -> None: ...


def _now() -> str:
    return format_time(time.time())


class ConsulAgent:
    """Registers services and checks on behalf of API clients, on node ``state.node_name``."""

    def __init__(
        self,
        source: ObjectSource,
        state: RegistryState,
        *,
        enable_script_checks: bool = False,
    ) -> None:
        self.source = source
        self.state = state
        self.enable_script_checks = enable_script_checks
        self.ttl_updater: TTLUpdater | None = None

    async def _applied(self, resource: str, obj: JSONObject) -> None:
        await self.state.wait_applied(resource, revision(obj))

    # --- services ---------------------------------------------------------------------------

    async def register_service(self, body: Any, *, replace_existing_checks: bool = False) -> None:
        spec, statuses = parse_service(
            body, self.state.node_name, enable_script_checks=self.enable_script_checks
        )
        old = self.state.registration(spec["id"])
        old_states = {
            s.get("checkID"): s for s in ((old or {}).get("status") or {}).get("checks") or []
        }
        now = _now()
        states = []
        for check, status in zip(spec["checks"], statuses, strict=True):
            previous = old_states.get(check["checkID"])
            if status is None and previous is not None:
                states.append(previous)  # re-registration keeps a check's last result
            else:
                states.append(
                    {
                        "checkID": check["checkID"],
                        "status": status or "critical",
                        "output": "",
                        "since": now,
                    }
                )
        if old is not None and not replace_existing_checks:
            # Consul keeps checks registered earlier unless asked to replace them.
            new_ids = {c["checkID"] for c in spec["checks"]}
            for check in (old.get("spec") or {}).get("checks") or []:
                if check.get("checkID") not in new_ids:
                    spec["checks"].append(check)
                    if check.get("checkID") in old_states:
                        states.append(old_states[check["checkID"]])
        obj: JSONObject = {
            "apiVersion": API_VERSION,
            "kind": "ServiceRegistration",
            "metadata": {"name": object_name(spec["id"])},
            "spec": spec,
            "status": {"checks": states},
        }
        if old is None:
            try:
                stored = await self.source.create("serviceregistrations", obj)
            except AlreadyExistsError:
                stored = await self._replace("serviceregistrations", obj)
        else:
            stored = await self._replace("serviceregistrations", obj)
        await self._applied("serviceregistrations", stored)

    async def _replace(self, resource: str, obj: JSONObject) -> JSONObject:
        name = obj["metadata"]["name"]
        current = await self.source.get(resource, name)
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        obj["metadata"]["labels"] = (current.get("metadata") or {}).get("labels") or {}
        return await self.source.update(resource, obj)

    async def deregister_service(self, service_id: str) -> None:
        obj = self.state.registration(service_id)
        if obj is None:
            raise NotFoundError(
                f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
                "not the service name."
            )
        last = await self._delete("serviceregistrations", obj)
        for check in self.state.healthchecks_of(service_id):
            await self._delete("healthchecks", check)
        if last is not None:
            await self._applied("serviceregistrations", last)

    async def _delete(self, resource: str, obj: JSONObject) -> JSONObject | None:
        try:
            return await self.source.delete(resource, obj["metadata"]["name"])
        except NotFoundError:
            return None

    # --- checks -----------------------------------------------------------------------------

    async def register_check(self, body: Any) -> None:
        raw = fold(body)
        name = raw.get("name")
        if not name or not isinstance(name, str):
            raise BadRequestError("Missing check name")
        sid = raw.get("serviceid") or ""
        if not isinstance(sid, str):
            raise BadRequestError("Request decode failed: ServiceID: expected a string")
        if sid and self.state.registration(sid) is None:
            raise NotFoundError(f'ServiceID "{sid}" does not exist')
        spec, status = parse_check(
            body,
            default_id=name,
            default_name=name,
            service_id=sid,
            enable_script_checks=self.enable_script_checks,
        )
        spec["node"] = self.state.node_name
        cid = spec["checkID"]
        owner = self.state.check_owner(cid)
        if owner is not None and owner[0] == "serviceregistrations":
            raise BadRequestError(
                f'Invalid check: CheckID "{cid}" is already registered with service '
                f'"{owner[1]["spec"]["id"]}"'
            )
        obj: JSONObject = {
            "apiVersion": API_VERSION,
            "kind": "HealthCheck",
            "metadata": {"name": object_name(cid)},
            "spec": spec,
            "status": {
                "checkID": cid,
                "status": status or "critical",
                "output": "",
                "since": _now(),
            },
        }
        if owner is not None and status is None:
            obj["status"] = owner[1].get("status") or obj["status"]
        try:
            stored = await self.source.create("healthchecks", obj)
        except AlreadyExistsError:
            stored = await self._replace("healthchecks", obj)
        await self._applied("healthchecks", stored)

    async def deregister_check(self, check_id: str) -> None:
        owner = self.state.check_owner(check_id)
        if owner is None:
            raise NotFoundError(
                f'Unknown check ID "{check_id}". Ensure that the check ID is passed, not the check name.'
            )
        resource, obj = owner
        if resource == "healthchecks":
            last = await self._delete(resource, obj)
            if last is not None:
                await self._applied(resource, last)
            return

        def drop(reg: JSONObject) -> None:
            spec, status = reg["spec"], reg.setdefault("status", {})
            spec["checks"] = [c for c in spec.get("checks") or [] if c.get("checkID") != check_id]
            status["checks"] = [
                c for c in status.get("checks") or [] if c.get("checkID") != check_id
            ]

        await self._modify(resource, obj, drop)

    async def update_ttl(self, check_id: str, status: str, output: str) -> None:
        """``/v1/agent/check/pass|warn|fail|update``: only TTL checks take these."""
        if status not in _STATUSES:
            raise BadRequestError(f'Invalid check status: "{status}"')
        owner = self.state.check_owner(check_id)
        if owner is None:
            raise NotFoundError(
                f'Unknown check ID "{check_id}". Ensure that the check ID is passed, not the check name.'
            )
        if _definition(owner, check_id).get("type") != "ttl":
            raise BadRequestError(f'CheckID "{check_id}" does not have associated TTL')
        output = output[:OUTPUT_LIMIT]
        if self.ttl_updater is not None:
            await self.ttl_updater.ttl_update(check_id, status, output)
        else:
            await self.set_check_status(check_id, status, output)

    async def set_check_status(self, check_id: str, status: str, output: str) -> None:
        """Record a check's result (the check runner reports through this). A check that is
        gone by now is ignored: its service was deregistered while the check ran."""
        owner = self.state.check_owner(check_id)
        if owner is None:
            return
        resource, obj = owner
        now = _now()

        def apply(target: JSONObject) -> None:
            if resource == "healthchecks":
                state = target.get("status") or {"checkID": check_id}
                _set_state(state, status, output, now)
                target["status"] = state
                return
            states = target.setdefault("status", {}).setdefault("checks", [])
            for state in states:
                if state.get("checkID") == check_id:
                    _set_state(state, status, output, now)
                    return
            states.append({"checkID": check_id, "status": status, "output": output, "since": now})

        await self._modify(resource, obj, apply)

    async def _modify(
        self, resource: str, obj: JSONObject, change: Callable[[JSONObject], None]
    ) -> None:
        """Apply ``change`` to the latest ``obj`` and write it, retrying on conflicts."""
        current = obj
        for _attempt in range(8):
            new = copy.deepcopy(current)
            change(new)
            if new == current:
                return
            try:
                stored = await self.source.update(resource, new)
            except ConflictError:
                current = await self.source.get(resource, obj["metadata"]["name"])
                continue
            except NotFoundError:
                return
            await self._applied(resource, stored)
            return
        raise ConflictError(f"check update on {resource} kept conflicting; try again")


def _set_state(state: JSONObject, status: str, output: str, now: str) -> None:
    if state.get("status") != status:
        state["since"] = now
    state["status"] = status
    state["output"] = output


def _definition(owner: tuple[str, JSONObject], check_id: str) -> JSONObject:
    resource, obj = owner
    if resource == "healthchecks":
        spec: JSONObject = obj.get("spec") or {}
        return spec
    for check in (obj.get("spec") or {}).get("checks") or []:
        if check.get("checkID") == check_id:
            return dict(check)
    return {}
