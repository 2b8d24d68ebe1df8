"""The Consul-compatible HTTP API (default 127.0.0.1:8500), as a Starlette app.

Paths, JSON field names, status codes and error texts follow Consul's HTTP API so that
existing clients (py-consul, consul-template, the Go api package) work unchanged. Errors are
plain text, as Consul's are. Every list endpoint supports blocking queries: responses carry
``X-Consul-Index``; ``?index=N&wait=D`` holds the request until the answer's index moves
past N or the wait (default 5 min, at most 10 min, plus up to 1/16 of it as jitter) runs out.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shoal._util.duration import parse_duration
from shoal.discovery._catalog import Instance
from shoal.discovery._source import ObjectSource
from shoal.discovery._state import RegistryState
from shoal.discovery.consul import _render as render
from shoal.discovery.consul._agent import ConsulAgent
from shoal.discovery.consul._kv import KVStore, entry_json, raw_value
from shoal.discovery.consul._register import fold
from shoal.errors import APIStatusError, BadRequestError, NotFoundError

log = logging.getLogger("shoal.discovery.consul")

VERSION = "1.17.0"
"""The Consul version shoal's API answers as (``/v1/agent/self``)."""
DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0

Handler = Callable[[Request], Awaitable[Response]]


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _json(data: Any, index: int | None = None, status: int = 200) -> Response:
    headers = {"X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}
    if index is not None:
        headers["X-Consul-Index"] = str(index)
    return Response(_dumps(data), status, headers=headers, media_type="application/json")


def _text(message: str, status: int) -> Response:
    return Response(message, status, media_type="text/plain; charset=utf-8")


def _flag(request: Request, name: str) -> bool:
    """Consul's boolean query flags: present (``?passing``) means true unless "false"/"0"."""
    if name not in request.query_params:
        return False
    return request.query_params[name].lower() not in ("false", "0")


def _tags(request: Request) -> list[str]:
    return request.query_params.getlist("tag")


def _filter_tags(instances: list[Instance], tags: list[str]) -> list[Instance]:
    return [i for i in instances if all(t in i.tags for t in tags)]


class ConsulAPI:
    """Routes of the Consul HTTP API over a :class:`RegistryState`."""

    def __init__(
        self,
        source: ObjectSource,
        state: RegistryState,
        *,
        enable_script_checks: bool = False,
        server_address: str = "127.0.0.1:8300",
    ) -> None:
        self.state = state
        self.agent = ConsulAgent(source, state, enable_script_checks=enable_script_checks)
        self.kv = KVStore(source, state)
        self.server_address = server_address

    # --- plumbing ----------------------------------------------------------------------------

    def _wrap(self, handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            dc = request.query_params.get("dc")
            if dc and dc != self.state.datacenter:
                return _text(f'No path to datacenter "{dc}"', 400)
            if "filter" in request.query_params:
                return _text("the filter parameter is not supported by shoal", 400)
            try:
                return await handler(request)
            except NotFoundError as exc:
                return _text(exc.message, 404)
            except APIStatusError as exc:
                code = exc.code if 400 <= exc.code < 500 else 400
                return _text(exc.message, code)
            except TimeoutError:
                return _text("the registry did not apply the change in time; retry", 503)

        return run

    async def _block(self, request: Request, topic: str | Callable[[], int]) -> int:
        """Wait as a blocking query asks; return the index to answer with."""
        q = request.query_params
        current: Callable[[], int]
        if isinstance(topic, str):
            name = topic

            def current() -> int:
                return self.state.index(name)
        else:
            current = topic
        if "index" not in q:
            return current()
        try:
            index = int(q["index"])
        except ValueError:
            raise BadRequestError(f'Invalid index "{q["index"]}"') from None
        wait = DEFAULT_WAIT
        if q.get("wait"):
            wait = min(parse_duration(q["wait"], "wait"), MAX_WAIT)
        wait += random.uniform(0, wait / 16)
        if index <= 0 or current() > index:
            return current()
        loop_deadline = time.monotonic() + wait
        while current() <= index and not self.state.closing:
            remaining = loop_deadline - time.monotonic()
            if remaining <= 0:
                break
            watch = topic if isinstance(topic, str) else "kv"
            await self.state.wait_change(watch, self.state.index(watch), remaining)
        return current()

    def app(self) -> Starlette:
        w = self._wrap
        routes = [
            Route("/v1/agent/self", w(self.agent_self)),
            Route("/v1/agent/members", w(self.agent_members)),
            Route("/v1/agent/services", w(self.agent_services)),
            Route("/v1/agent/service/register", w(self.service_register), methods=["PUT"]),
            Route(
                "/v1/agent/service/deregister/{id:path}",
                w(self.service_deregister),
                methods=["PUT"],
            ),
            Route("/v1/agent/service/{id:path}", w(self.agent_service)),
            Route("/v1/agent/checks", w(self.agent_checks)),
            Route("/v1/agent/check/register", w(self.check_register), methods=["PUT"]),
            Route(
                "/v1/agent/check/deregister/{id:path}", w(self.check_deregister), methods=["PUT"]
            ),
            Route("/v1/agent/check/pass/{id:path}", w(self.check_pass), methods=["PUT"]),
            Route("/v1/agent/check/warn/{id:path}", w(self.check_warn), methods=["PUT"]),
            Route("/v1/agent/check/fail/{id:path}", w(self.check_fail), methods=["PUT"]),
            Route("/v1/agent/check/update/{id:path}", w(self.check_update), methods=["PUT"]),
            Route("/v1/catalog/datacenters", w(self.catalog_datacenters)),
            Route("/v1/catalog/services", w(self.catalog_services)),
            Route("/v1/catalog/service/{name:path}", w(self.catalog_service)),
            Route("/v1/catalog/nodes", w(self.catalog_nodes)),
            Route("/v1/catalog/node/{node:path}", w(self.catalog_node)),
            Route("/v1/health/service/{name:path}", w(self.health_service)),
            Route("/v1/health/checks/{name:path}", w(self.health_checks)),
            Route("/v1/health/node/{node:path}", w(self.health_node)),
            Route("/v1/health/state/{state:path}", w(self.health_state)),
            Route("/v1/kv/{key:path}", w(self.kv_route), methods=["GET", "PUT", "DELETE"]),
            Route("/v1/status/leader", w(self.status_leader)),
            Route("/v1/status/peers", w(self.status_peers)),
        ]
        return Starlette(routes=routes)

    # --- agent -------------------------------------------------------------------------------

    async def agent_self(self, _request: Request) -> Response:
        st = self.state
        node = st.catalog.node(st.node_name)
        address = node.address if node is not None else st.node_address
        return _json(
            {
                "Config": {
                    "Datacenter": st.datacenter,
                    "PrimaryDatacenter": st.datacenter,
                    "NodeName": st.node_name,
                    "NodeID": node.id if node is not None else st.node_name,
                    "Server": True,
                    "Revision": "shoal",
                    "Version": VERSION,
                },
                "Member": {
                    "Name": st.node_name,
                    "Addr": address,
                    "Port": 8301,
                    "Tags": {"dc": st.datacenter, "role": "consul", "build": VERSION},
                    "Status": 1,
                },
                "Meta": {},
                "xDS": None,
            }
        )

    async def agent_members(self, _request: Request) -> Response:
        return _json(
            [
                {
                    "Name": n.name,
                    "Addr": n.address,
                    "Port": 8301,
                    "Tags": {"dc": self.state.datacenter},
                    "Status": 1 if self._node_alive(n.name) else 4,
                }
                for n in self.state.catalog.nodes()
            ]
        )

    def _node_alive(self, node: str) -> bool:
        return all(c.status == "passing" for c in self.state.catalog.node_checks(node))

    def _local(self) -> list[Instance]:
        """Services registered through this agent (pods behind Services are cluster state,
        not agent-local, as in consul-k8s's catalog sync)."""
        return [
            i
            for i in self.state.catalog.all_instances()
            if i.namespace is None and i.node == self.state.node_name
        ]

    async def agent_services(self, request: Request) -> Response:
        index = await self._block(request, "catalog")
        dc = self.state.datacenter
        return _json({i.id: render.agent_service_json(i, dc) for i in self._local()}, index)

    async def agent_service(self, request: Request) -> Response:
        sid = request.path_params["id"]
        index = await self._block(request, "catalog")
        for inst in self._local():
            if inst.id == sid:
                return _json(render.agent_service_json(inst, self.state.datacenter), index)
        return _text(f"unknown service ID: {sid}", 404)

    async def agent_checks(self, request: Request) -> Response:
        index = await self._block(request, "checks")
        checks = {
            c.check_id: render.check_json(c)
            for c in self.state.catalog.node_checks(self.state.node_name)
            if c.type
        }
        for inst in self._local():
            for c in inst.checks:
                if c.service_id:
                    checks[c.check_id] = render.check_json(c, inst)
        return _json(checks, index)

    async def _body(self, request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            raise BadRequestError("Request decode failed: empty body")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise BadRequestError(f"Request decode failed: {exc}") from None

    async def service_register(self, request: Request) -> Response:
        body = await self._body(request)
        await self.agent.register_service(
            body, replace_existing_checks=_flag(request, "replace-existing-checks")
        )
        return _json(None)

    async def service_deregister(self, request: Request) -> Response:
        await self.agent.deregister_service(request.path_params["id"])
        return _json(None)

    async def check_register(self, request: Request) -> Response:
        await self.agent.register_check(await self._body(request))
        return _json(None)

    async def check_deregister(self, request: Request) -> Response:
        await self.agent.deregister_check(request.path_params["id"])
        return _json(None)

    async def _ttl(self, request: Request, status: str) -> Response:
        note = request.query_params.get("note", "")
        await self.agent.update_ttl(request.path_params["id"], status, note)
        return _json(None)

    async def check_pass(self, request: Request) -> Response:
        return await self._ttl(request, "passing")

    async def check_warn(self, request: Request) -> Response:
        return await self._ttl(request, "warning")

    async def check_fail(self, request: Request) -> Response:
        return await self._ttl(request, "critical")

    async def check_update(self, request: Request) -> Response:
        folded = fold(await self._body(request))
        status = folded.get("status", "")
        output = folded.get("output", "")
        if not isinstance(status, str) or not isinstance(output, str):
            raise BadRequestError("Request decode failed: Status and Output must be strings")
        await self.agent.update_ttl(request.path_params["id"], status, output)
        return _json(None)

    # --- catalog -----------------------------------------------------------------------------

    async def catalog_datacenters(self, _request: Request) -> Response:
        return _json([self.state.datacenter])

    async def catalog_services(self, request: Request) -> Response:
        index = await self._block(request, "catalog")
        return _json(self.state.catalog.services(), index)

    async def catalog_service(self, request: Request) -> Response:
        name = request.path_params["name"]
        index = await self._block(request, f"service:{name}")
        cat = self.state.catalog
        found = _filter_tags(cat.instances(name), _tags(request))
        dc = self.state.datacenter
        return _json([render.catalog_service_json(i, cat, dc) for i in found], index)

    async def catalog_nodes(self, request: Request) -> Response:
        index = await self._block(request, "nodes")
        dc = self.state.datacenter
        return _json([render.node_json(n, dc) for n in self.state.catalog.nodes()], index)

    async def catalog_node(self, request: Request) -> Response:
        name = request.path_params["node"]
        index = await self._block(request, "catalog")
        cat = self.state.catalog
        node = cat.node(name)
        if node is None:
            return _json(None, index)
        dc = self.state.datacenter
        services = {
            i.id: render.agent_service_json(i, dc) for i in cat.all_instances() if i.node == name
        }
        return _json({"Node": render.node_json(node, dc), "Services": services}, index)

    # --- health ------------------------------------------------------------------------------

    async def health_service(self, request: Request) -> Response:
        name = request.path_params["name"]
        index = await self._block(request, f"service:{name}")
        cat = self.state.catalog
        found = cat.instances(name, passing_only=_flag(request, "passing"), include_warning=False)
        found = _filter_tags(found, _tags(request))
        dc = self.state.datacenter
        return _json([render.service_entry_json(i, cat, dc) for i in found], index)

    async def health_checks(self, request: Request) -> Response:
        name = request.path_params["name"]
        index = await self._block(request, f"service:{name}")
        return _json(
            [
                render.check_json(c, inst)
                for inst in self.state.catalog.instances(name)
                for c in inst.checks
                if c.service_id
            ],
            index,
        )

    async def health_node(self, request: Request) -> Response:
        node = request.path_params["node"]
        index = await self._block(request, "checks")
        cat = self.state.catalog
        result = [render.check_json(c) for c in cat.node_checks(node)]
        for inst in cat.all_instances():
            if inst.node == node:
                result.extend(render.check_json(c, inst) for c in inst.checks if c.service_id)
        return _json(result, index)

    async def health_state(self, request: Request) -> Response:
        wanted = request.path_params["state"]
        if wanted not in ("any", "passing", "warning", "critical"):
            return _text("Bad state", 400)
        index = await self._block(request, "checks")
        checks = render.all_checks_json(self.state.catalog)
        if wanted != "any":
            checks = [c for c in checks if c["Status"] == wanted]
        return _json(checks, index)

    # --- kv ----------------------------------------------------------------------------------

    async def kv_route(self, request: Request) -> Response:
        key = request.path_params["key"]
        q = request.query_params
        for unsupported in ("acquire", "release"):
            if unsupported in q:
                return _text(f"?{unsupported} needs sessions, which shoal does not have", 400)
        if request.method == "PUT":
            flags = _int_param(request, "flags", 0)
            cas = _int_param(request, "cas", None)
            value = await request.body()
            return _json(await self.kv.put(key, value, flags=flags or 0, cas=cas))
        if request.method == "DELETE":
            cas = _int_param(request, "cas", None)
            return _json(await self.kv.delete(key, recurse=_flag(request, "recurse"), cas=cas))
        recurse, keys = _flag(request, "recurse"), _flag(request, "keys")
        exact = not (recurse or keys)
        index = await self._block(request, lambda: self.kv.index(key, exact))
        if keys:
            separator = q.get("separator", "")
            listed: list[str] = []
            for obj in self.kv.under(key):
                k = str(obj["spec"]["key"])
                if separator:
                    cut = k.find(separator, len(key))
                    if cut >= 0:
                        k = k[: cut + len(separator)]
                if not listed or listed[-1] != k:
                    listed.append(k)
            if not listed:
                return Response(b"", 404, headers={"X-Consul-Index": str(index)})
            return _json(listed, index)
        if recurse:
            entries = self.kv.under(key)
        else:
            one = self.kv.get(key)
            entries = [one] if one is not None else []
        if not entries:
            return Response(b"", 404, headers={"X-Consul-Index": str(index)})
        if _flag(request, "raw") and not recurse:
            return Response(
                raw_value(entries[0]), 200, headers={"X-Consul-Index": str(index)},
                media_type="application/octet-stream",
            )  # fmt: skip
        return _json([entry_json(o) for o in entries], index)

    # --- status ------------------------------------------------------------------------------

    async def status_leader(self, _request: Request) -> Response:
        return _json(self.server_address)

    async def status_peers(self, _request: Request) -> Response:
        return _json([self.server_address])


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequestError(f'Invalid {name} "{raw}": not an integer') from None
