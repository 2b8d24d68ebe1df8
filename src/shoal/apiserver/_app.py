"""The HTTP face of the API server: Kubernetes REST paths onto the Registry.

One catch-all route per API prefix parses the path itself, because Kubernetes paths are
ambiguous for a router (``namespaces/x/pods`` vs ``nodes/x/status``) but not for a parser
that knows the kinds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse

from shoal.api import KindInfo, kind_by_plural
from shoal.apiserver import _discovery
from shoal.apiserver._patch import json_patch, merge_patch
from shoal.apiserver._proxy import AgentProxy
from shoal.apiserver._registry import Registry
from shoal.errors import (
    APIStatusError,
    BadRequestError,
    GoneError,
    NotFoundError,
    ShoalError,
    UnavailableError,
)
from shoal.store import Store, WatchEvent

log = logging.getLogger("shoal.apiserver")

_JSON = "application/json"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _ok(obj: Any, code: int = 200) -> Response:
    return Response(content=_dumps(obj), status_code=code, media_type=_JSON)


def _status_response(err: APIStatusError) -> Response:
    return Response(content=_dumps(err.to_status()), status_code=err.code, media_type=_JSON)


@dataclass
class Target:
    info: KindInfo
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_path(group: str, version: str, path: str) -> Target:
    """``namespaces/ns/pods/name/status`` -> Target. Raises NotFoundError."""
    parts = [p for p in path.split("/") if p]
    ns: str | None = None
    if len(parts) >= 3 and parts[0] == "namespaces":
        info = kind_by_plural(parts[2])
        if info is not None and info.namespaced and info.group == group:
            ns, parts = parts[1], parts[2:]
    if not parts:
        raise NotFoundError("the server could not find the requested resource")
    info = kind_by_plural(parts[0])
    if info is None or info.group != group or info.version != version:
        raise NotFoundError(f"the server could not find the requested resource ({'/'.join(parts)})")
    name = parts[1] if len(parts) > 1 else None
    sub = parts[2] if len(parts) > 2 else None
    if len(parts) > 3 or (sub is not None and sub not in info.subresources):
        raise NotFoundError(f"the server could not find the requested resource ({path})")
    return Target(info, ns, name, sub)


class _EventCache:
    """Serialised watch events by revision, so N watchers cost one json.dumps per event."""

    def __init__(self, size: int = 512) -> None:
        self._items: OrderedDict[tuple[int, str], bytes] = OrderedDict()
        self._size = size

    def line(self, ev: WatchEvent) -> bytes:
        key = (ev.revision, ev.type)
        data = self._items.get(key)
        if data is None:
            data = _dumps({"type": ev.type, "object": ev.object}) + b"\n"
            self._items[key] = data
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return data


class APIServer:
    """Owns the Registry and builds the ASGI app."""

    def __init__(self, store: Store, registry: Registry | None = None) -> None:
        self.store = store
        self.registry = registry or Registry(store)
        self.ready = False
        self._events = _EventCache()
        self.proxy = AgentProxy(store)
        """Logs, exec and node proxy requests, relayed to node agents."""

    async def startup(self) -> None:
        await self.registry.bootstrap()
        self.ready = True

    async def shutdown(self) -> None:
        self.ready = False
        await self.proxy.aclose()

    def app(self) -> FastAPI:
        app = FastAPI(title="shoal API server", docs_url=None, redoc_url=None, openapi_url=None)

        @app.exception_handler(APIStatusError)
        async def _api_error(_req: Request, exc: APIStatusError) -> Response:
            return _status_response(exc)

        @app.exception_handler(Exception)
        async def _internal(_req: Request, exc: Exception) -> Response:
            log.exception("internal error")
            err = APIStatusError(f"Internal error: {type(exc).__name__}: {exc}")
            return JSONResponse(err.to_status(), status_code=500)

        @app.get("/healthz")
        @app.get("/livez")
        async def healthz() -> Response:
            return Response("ok", media_type="text/plain")

        @app.get("/readyz")
        async def readyz() -> Response:
            if not self.ready:
                return Response("not ready", status_code=503, media_type="text/plain")
            return Response("ok", media_type="text/plain")

        @app.get("/version")
        async def version() -> Response:
            return _ok(_discovery.version_info())

        @app.get("/api")
        async def api_versions() -> Response:
            return _ok(_discovery.core_versions())

        @app.get("/apis")
        async def api_groups() -> Response:
            return _ok(_discovery.groups())

        @app.api_route("/api/v1", methods=["GET"])
        async def core_resources() -> Response:
            return _ok(_discovery.resource_list("", "v1"))

        @app.api_route("/apis/{group}/{version}", methods=["GET"])
        async def group_resources(group: str, version: str) -> Response:
            doc = _discovery.resource_list(group, version)
            if doc is None:
                raise NotFoundError("the server could not find the requested resource")
            return _ok(doc)

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]

        @app.websocket("/api/v1/namespaces/{namespace}/pods/{name}/exec")
        async def pod_exec(ws: WebSocket, namespace: str, name: str) -> None:
            if not self.ready:
                await ws.send_denial_response(
                    _status_response(UnavailableError("the API server is starting"))
                )
                return
            await self.proxy.exec(ws, namespace, name)

        @app.api_route("/api/v1/{path:path}", methods=methods)
        async def core(request: Request, path: str) -> Response:
            relayed = await self._agent_paths(request, path)
            if relayed is not None:
                return relayed
            return await self.handle(request, parse_path("", "v1", path))

        @app.api_route("/apis/{group}/{version}/{path:path}", methods=methods)
        async def grouped(request: Request, group: str, version: str, path: str) -> Response:
            return await self.handle(request, parse_path(group, version, path))

        return app

    # --- dispatch ---------------------------------------------------------------------------

    async def handle(self, request: Request, t: Target) -> Response:
        if not self.ready:
            raise UnavailableError("the API server is starting")
        method = request.method
        q = request.query_params
        reg = self.registry
        if t.name is None:
            if method == "GET":
                if q.get("watch") in ("1", "true", "True"):
                    return await self._watch(request, t)
                res = await reg.list(
                    t.info, t.namespace, q.get("labelSelector"), q.get("fieldSelector")
                )
                return self._list_response(t.info, res.items, res.revision)
            if method == "POST":
                if t.info.namespaced and t.namespace is None:
                    raise NotFoundError(
                        "create needs a namespace in the path (.../namespaces/NS/...)"
                    )
                return _ok(await reg.create(t.info, t.namespace, await _body(request)), 201)
            raise _method_not_allowed(method)
        sub = t.subresource
        if sub == "binding":
            if method != "POST":
                raise _method_not_allowed(method)
            return _ok(await reg.bind(t.namespace or "default", t.name, await _body(request)), 201)
        if sub == "log":
            return await self._logs(request, t)
        if sub == "scale":
            return await self._scale(request, t)
        if method == "GET":
            return _ok(await reg.get(t.info, t.namespace, t.name))
        if method == "PUT":
            return _ok(await reg.update(t.info, t.namespace, t.name, await _body(request), sub))
        if method == "PATCH":
            return _ok(await reg.patch(t.info, t.namespace, t.name, await _patcher(request), sub))
        if method == "DELETE" and sub is None:
            return await self._delete(request, t)
        raise _method_not_allowed(method)

    def _list_response(
        self, info: KindInfo, items: list[dict[str, Any]], revision: int
    ) -> Response:
        head = _dumps(
            {
                "apiVersion": info.api_version,
                "kind": f"{info.kind}List",
                "metadata": {"resourceVersion": str(revision)},
            }
        )
        body = head[:-1] + b',"items":[' + b",".join(_dumps(i) for i in items) + b"]}"
        return Response(content=body, media_type=_JSON)

    async def _delete(self, request: Request, t: Target) -> Response:
        assert t.name is not None
        q = request.query_params
        grace: int | None = None
        opts: Any = {}
        raw = await request.body()
        if raw.strip():
            try:
                opts = json.loads(raw)
            except ValueError:
                raise BadRequestError("the DeleteOptions body is not valid JSON") from None
            if not isinstance(opts, dict):
                raise BadRequestError("the DeleteOptions body must be a JSON object")
        g = q.get("gracePeriodSeconds", opts.get("gracePeriodSeconds"))
        if g is not None:
            try:
                grace = int(g)
            except (TypeError, ValueError):
                raise BadRequestError(f'invalid gracePeriodSeconds "{g}"') from None
        pre = opts.get("preconditions") or {}
        rv = pre.get("resourceVersion")
        obj = await self.registry.delete(
            t.info, t.namespace, t.name, grace, int(rv) if rv else None, pre.get("uid")
        )
        return _ok(obj)

    async def _scale(self, request: Request, t: Target) -> Response:
        assert t.name is not None
        ns = t.namespace or "default"
        if request.method == "GET":
            return _ok(await self.registry.get_scale(t.info, ns, t.name))
        if request.method == "PUT":
            return _ok(await self.registry.update_scale(t.info, ns, t.name, await _body(request)))
        if request.method == "PATCH":
            apply = await _patcher(request)
            current = await self.registry.get_scale(t.info, ns, t.name)
            patched = apply(current)
            patched.setdefault("metadata", {}).pop("resourceVersion", None)
            return _ok(await self.registry.update_scale(t.info, ns, t.name, patched))
        raise _method_not_allowed(request.method)

    async def _watch(self, request: Request, t: Target) -> Response:
        q = request.query_params
        rv_text = q.get("resourceVersion") or "0"
        try:
            since = int(rv_text)
        except ValueError:
            raise BadRequestError(f'invalid resourceVersion "{rv_text}"') from None
        timeout = float(q.get("timeoutSeconds") or 0) or None
        initial: list[dict[str, Any]] = []
        if since == 0:
            res = await self.registry.list(
                t.info, t.namespace, q.get("labelSelector"), q.get("fieldSelector")
            )
            initial, since = res.items, res.revision
        else:
            compacted = await self.store.compacted_revision()
            if since < compacted:
                raise GoneError(f"too old resource version: {since} ({compacted})")
        events = self.registry.watch(
            t.info, t.namespace, since, q.get("labelSelector"), q.get("fieldSelector")
        )
        return StreamingResponse(self._stream(initial, events, timeout), media_type=_JSON)

    async def _stream(
        self,
        initial: list[dict[str, Any]],
        events: AsyncIterator[WatchEvent],
        timeout: float | None,
    ) -> AsyncIterator[bytes]:
        try:
            for obj in initial:
                yield _dumps({"type": "ADDED", "object": obj}) + b"\n"
            it = aiter(events)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            while True:
                try:
                    if deadline is None:
                        ev = await anext(it)
                    else:
                        ev = await asyncio.wait_for(anext(it), max(0.0, deadline - loop.time()))
                except (StopAsyncIteration, TimeoutError):
                    return
                except GoneError as exc:
                    yield _dumps({"type": "ERROR", "object": exc.to_status()}) + b"\n"
                    return
                yield self._events.line(ev)
        finally:
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    async def _logs(self, request: Request, t: Target) -> Response:
        """Proxy to the node agent that runs the pod, as the Kubernetes API server does."""
        assert t.name is not None
        if request.method != "GET":
            raise _method_not_allowed(request.method)
        return await self.proxy.logs(t.namespace or "default", t.name, dict(request.query_params))

    async def _agent_paths(self, request: Request, path: str) -> Response | None:
        """The core paths that end at a node agent and are no kind's subresource:
        ``nodes/NAME/proxy/PATH`` and a plain-HTTP ``pods/NAME/exec`` (which needs a
        WebSocket upgrade). None for every other path."""
        parts = [p for p in path.split("/") if p]
        if len(parts) == 5 and parts[0] == "namespaces" and parts[2:5:2] == ["pods", "exec"]:
            raise BadRequestError("Upgrade request required")
        if len(parts) >= 3 and parts[0] == "nodes" and parts[2] == "proxy":
            if not self.ready:
                raise UnavailableError("the API server is starting")
            if request.method != "GET":
                raise _method_not_allowed(request.method)
            rest = "/".join(parts[3:])
            return await self.proxy.node_get(parts[1], rest, request.url.query)
        return None


def _method_not_allowed(method: str) -> APIStatusError:
    err = APIStatusError(
        f"the server does not allow this method on the requested resource ({method})"
    )
    err.code, err.reason = 405, "MethodNotAllowed"
    return err


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise BadRequestError("the request body is empty; send a JSON object")
    ctype = request.headers.get("content-type", "")
    try:
        if "yaml" in ctype:
            import yaml

            return yaml.safe_load(raw)
        return json.loads(raw)
    except ValueError as exc:
        raise BadRequestError(f"the request body is not valid JSON: {exc}") from None
    except Exception as exc:
        raise BadRequestError(f"the request body could not be parsed: {exc}") from None


async def _patcher(request: Request) -> Any:
    patch = await _body(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if ctype == "application/json-patch+json":
        return lambda doc: json_patch(doc, patch)
    if ctype in (
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json",
        "",
    ):
        if not isinstance(patch, dict):
            raise BadRequestError("a merge patch must be a JSON object")
        return lambda doc: merge_patch(doc, patch)
    err = APIStatusError(f'the content type "{ctype}" is not supported for PATCH')
    err.code, err.reason = 415, "UnsupportedMediaType"
    raise err


def build_app(store: Store) -> tuple[APIServer, FastAPI]:
    server = APIServer(store)
    return server, server.app()


__all__ = ["APIServer", "ShoalError", "build_app", "parse_path"]
