"""What the API server relays to node agents, as the Kubernetes API server does to kubelets:
``pods/NAME/log`` (a stream), ``pods/NAME/exec`` (a WebSocket, relayed message by message)
and ``nodes/NAME/proxy/PATH`` (plain GETs, e.g. ``stats/summary``).

The agent is found through the Node object: its InternalIP and
``status.daemonEndpoints.kubeletEndpoint.Port``. Errors before a stream starts are Status
answers (an exec upgrade is refused with an HTTP Status, never accepted and then dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from shoal._util.remotecommand import exec_query, open_exec
from shoal.errors import APIStatusError, BadRequestError, ServerUnreachableError, UnavailableError
from shoal.store import Store

log = logging.getLogger("shoal.apiserver.proxy")

_JSON = "application/json"


def status_response(err: APIStatusError) -> Response:
    return Response(
        content=json.dumps(err.to_status(), separators=(",", ":")).encode(),
        status_code=err.code,
        media_type=_JSON,
    )


async def agent_base_url(store: Store, node_name: str) -> str:
    """``http://IP:PORT`` of the agent of ``node_name``. Raises NotFoundError for an unknown
    node and UnavailableError when it publishes no endpoint."""
    node = await store.get("nodes", "", node_name)
    status = node.get("status") or {}
    addrs = status.get("addresses") or []
    address = next((a["address"] for a in addrs if a.get("type") == "InternalIP"), None)
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    if not address or not port:
        raise UnavailableError(f'node "{node_name}" does not publish an agent endpoint')
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


def pick_container(pod: dict[str, Any], requested: str | None, name: str) -> str:
    """The container a log or exec request means: the one named, or the only one.
    Raises BadRequestError with the API server's wording."""
    containers = [c["name"] for c in (pod.get("spec") or {}).get("containers", [])]
    container = requested or (containers[0] if len(containers) == 1 else None)
    if container is None:
        raise BadRequestError(
            f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
        )
    if container not in containers:
        raise BadRequestError(f"container {container} is not valid for pod {name}")
    return container


def node_of(pod: dict[str, Any], name: str, what: str) -> str:
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        raise BadRequestError(f'pod "{name}" is not scheduled to a node yet; {what}')
    return str(node_name)


class AgentProxy:
    """The API server's side of every request that ends at a node agent."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), trust_env=False)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _open(self, node_name: str, url: str, params: Any = None) -> httpx.Response:
        """Start a GET to the agent; a non-200 answer is raised as the Status it carries."""
        try:
            upstream = await self.http.send(
                self.http.build_request("GET", url, params=params), stream=True
            )
        except httpx.HTTPError as exc:
            raise UnavailableError(f'cannot reach the agent of node "{node_name}": {exc}') from None
        if upstream.status_code != 200:
            body = await upstream.aread()
            await upstream.aclose()
            try:
                err = APIStatusError.from_status(json.loads(body), upstream.status_code)
            except (ValueError, AttributeError):
                err = UnavailableError(body.decode(errors="replace"))
                err.code = upstream.status_code
            raise err
        return upstream

    # --- logs --------------------------------------------------------------------------------

    async def logs(self, namespace: str, name: str, query: dict[str, str]) -> Response:
        pod = await self.store.get("pods", namespace, name)
        node_name = node_of(pod, name, "it has no logs")
        base = await agent_base_url(self.store, node_name)
        container = pick_container(pod, query.get("container"), name)
        params = {k: v for k, v in query.items() if k in ("follow", "previous", "tailLines")}
        params["uid"] = pod["metadata"].get("uid", "")
        upstream = await self._open(
            node_name, f"{base}/containerLogs/{namespace}/{name}/{container}", params
        )

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()

        return StreamingResponse(relay(), media_type="text/plain")

    # --- node proxy --------------------------------------------------------------------------

    async def node_get(self, node_name: str, path: str, query: str) -> Response:
        """``GET nodes/NAME/proxy/PATH``: the agent's answer, status and body as they are."""
        base = await agent_base_url(self.store, node_name)
        try:
            url = f"{base}/{path.lstrip('/')}" + (f"?{query}" if query else "")
            resp = await self.http.get(url)
        except httpx.HTTPError as exc:
            raise UnavailableError(f'cannot reach the agent of node "{node_name}": {exc}') from None
        return Response(
            content=resp.content,
            status_code=resp.status_code,
            media_type=resp.headers.get("content-type", "application/octet-stream"),
        )

    # --- exec --------------------------------------------------------------------------------

    async def exec(self, ws: WebSocket, namespace: str, name: str) -> None:
        """Check the request, open the agent's exec WebSocket with the client's offered
        subprotocols, accept the client with the one the agent chose, then relay messages
        both ways until either side closes."""
        q = ws.query_params
        try:
            upstream = await self._open_exec(ws, namespace, name)
        except APIStatusError as err:
            await ws.send_denial_response(status_response(err))
            return
        await ws.accept(subprotocol=upstream.subprotocol)
        await _relay(ws, upstream)
        log.debug("exec %s/%s %s ended", namespace, name, q.getlist("command"))

    async def _open_exec(self, ws: WebSocket, namespace: str, name: str) -> ClientConnection:
        q = ws.query_params
        command = q.getlist("command")
        if not command:
            raise BadRequestError("you must specify at least 1 command")
        pod = await self.store.get("pods", namespace, name)
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            raise BadRequestError(
                f"cannot exec into a container in a completed pod; current phase is {phase}"
            )
        node_name = node_of(pod, name, "there is nothing to exec into")
        container = pick_container(pod, q.get("container"), name)
        base = await agent_base_url(self.store, node_name)
        flags = {k: q[k] for k in ("stdin", "stdout", "stderr", "tty") if k in q}
        query = exec_query(command, extra={**flags, "uid": pod["metadata"].get("uid", "")})
        url = "ws" + base[len("http") :] + f"/exec/{namespace}/{name}/{container}?{query}"
        offered = ws.scope.get("subprotocols") or []
        try:
            return await open_exec(url, offered)
        except ServerUnreachableError as exc:
            raise UnavailableError(f'cannot reach the agent of node "{node_name}": {exc}') from None


async def _relay(client: WebSocket, upstream: ClientConnection) -> None:
    """Copy binary messages both ways; when one side closes, close the other with the same
    code, so the client sees the agent's normal close right after the exit Status."""

    async def down() -> None:
        try:
            async for message in upstream:
                if isinstance(message, bytes):
                    await client.send_bytes(message)
                else:
                    await client.send_text(message)
        except ConnectionClosed:
            pass
        code = upstream.close_code or 1000
        with contextlib.suppress(Exception):
            await client.close(code if code in (1000, 1001, 1011) else 1011)

    async def up() -> None:
        try:
            while True:
                message = await client.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                payload: bytes | str | None = data if data is not None else message.get("text")
                if payload is not None:
                    await upstream.send(payload)
        except (WebSocketDisconnect, ConnectionClosed, RuntimeError):
            pass
        await upstream.close()

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()


__all__ = ["AgentProxy", "agent_base_url", "pick_container", "status_response"]
