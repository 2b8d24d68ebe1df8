"""The HTTP client SDK: typed CRUD on every kind, watch streams, subresources.

Every shoal component (scheduler, controllers, agent, CLI) talks to the API server through
this module and nothing else; errors come back as the exceptions of ``shoal.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Generic, TypeVar

import httpx
from httpx_aiohttp import AiohttpTransport

from shoal._util import format_time
from shoal._util.remotecommand import (
    ExecInput,
    Sink,
    exec_query,
    open_exec,
    run_session,
    websocket_url,
)
from shoal.api import (
    Deployment,
    Endpoints,
    Event,
    KindInfo,
    Namespace,
    Network,
    Node,
    ObjectMeta,
    ObjectReference,
    Pod,
    ReplicaSet,
    Resource,
    Service,
    kind_info,
)
from shoal.api import EventSource as _EventSource
from shoal.errors import APIStatusError, GoneError, ServerUnreachableError

T = TypeVar("T", bound=Resource)

DEFAULT_SERVER = "http://127.0.0.1:6440"


def server_url(server: str | None = None) -> str:
    """``--server`` if given, else ``$SHOAL_SERVER``, else the local default."""
    return (server or os.environ.get("SHOAL_SERVER") or DEFAULT_SERVER).rstrip("/")


class Client:
    """An async client for one API server. Use as ``async with Client(url) as c: ...``."""

    def __init__(
        self,
        server: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server = server_url(server)
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=20)
        if transport is None:
            # aiohttp's C HTTP parser under the httpx API: a quarter of the CPU per request of
            # httpx's default pure-Python stack, which dominated every component's profile.
            transport = AiohttpTransport(limits=limits, trust_env=False)
        self._http = httpx.AsyncClient(
            base_url=self.server,
            timeout=timeout,
            transport=transport,
            limits=limits,
            trust_env=False,
        )
        self._events_out: asyncio.Queue[Event] = asyncio.Queue()
        self._event_sender: asyncio.Task[None] | None = None
        self.namespaces: ResourceClient[Namespace] = ResourceClient(self, Namespace)
        self.nodes: ResourceClient[Node] = ResourceClient(self, Node)
        self.pods: ResourceClient[Pod] = ResourceClient(self, Pod)
        self.services: ResourceClient[Service] = ResourceClient(self, Service)
        self.endpoints: ResourceClient[Endpoints] = ResourceClient(self, Endpoints)
        self.events: ResourceClient[Event] = ResourceClient(self, Event)
        self.deployments: ResourceClient[Deployment] = ResourceClient(self, Deployment)
        self.replicasets: ResourceClient[ReplicaSet] = ResourceClient(self, ReplicaSet)
        self.networks: ResourceClient[Network] = ResourceClient(self, Network)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.flush_events(timeout=2.0)
        if self._event_sender is not None:
            self._event_sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._event_sender
        await self._http.aclose()

    def resource(self, model: type[T]) -> ResourceClient[T]:
        return ResourceClient(self, model)

    # --- transport --------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request; returns the decoded JSON body. Raises APIStatusError subclasses for
        Status answers and ServerUnreachableError when nothing answers."""
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"content-type": content_type} if content is not None else None
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = await self._http.request(
                method, path, content=content, params=clean, headers=headers
            )
        except httpx.TransportError as exc:
            raise ServerUnreachableError(
                f"cannot reach the API server at {self.server}: {exc}"
            ) from exc
        return _decode(resp)

    async def stream_lines(
        self, path: str, params: dict[str, Any] | None = None
    ) -> AsyncIterator[bytes]:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        timeout = httpx.Timeout(10.0, read=None)
        try:
            async with self._http.stream("GET", path, params=clean, timeout=timeout) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    _decode(resp)
                async for line in resp.aiter_lines():
                    if line:
                        yield line.encode()
        except httpx.TransportError as exc:
            raise ServerUnreachableError(f"lost the stream from {self.server}: {exc}") from exc

    async def healthy(self) -> bool:
        try:
            resp = await self._http.get("/readyz", timeout=2.0)
        except httpx.TransportError:
            return False
        return resp.status_code == 200

    # --- subresources and helpers -----------------------------------------------------------

    async def bind(
        self, pod_name: str, namespace: str, node_name: str, uid: str | None = None
    ) -> None:
        """Assign a pod to a node (the scheduler's write). ConflictError if already bound."""
        meta: dict[str, Any] = {"name": pod_name, "namespace": namespace}
        if uid:
            meta["uid"] = uid
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": meta,
                "target": {"apiVersion": "v1", "kind": "Node", "name": node_name}}  # fmt: skip
        await self.request(
            "POST", kind_info("Pod").object_path(pod_name, namespace) + "/binding", body=body
        )

    async def get_scale(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
        info = kind_info(kind)
        result: dict[str, Any] = await self.request(
            "GET", info.object_path(name, namespace) + "/scale"
        )
        return result

    async def scale(
        self, kind: str, name: str, replicas: int, namespace: str = "default"
    ) -> dict[str, Any]:
        info = kind_info(kind)
        result: dict[str, Any] = await self.request(
            "PATCH",
            info.object_path(name, namespace) + "/scale",
            body={"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )
        return result

    async def logs(
        self,
        pod: str,
        namespace: str = "default",
        container: str | None = None,
        *,
        follow: bool = False,
        previous: bool = False,
        tail_lines: int | None = None,
    ) -> AsyncIterator[bytes]:
        """The container's log, chunk by chunk; with ``follow`` until the stream ends."""
        path = kind_info("Pod").object_path(pod, namespace) + "/log"
        params = {
            "container": container,
            "follow": "true" if follow else None,
            "previous": "true" if previous else None,
            "tailLines": tail_lines,
        }
        clean = {k: v for k, v in params.items() if v is not None}
        try:
            async with self._http.stream(
                "GET", path, params=clean, timeout=httpx.Timeout(10.0, read=None)
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    _decode(resp)
                async for chunk in resp.aiter_raw():
                    yield chunk
        except httpx.TransportError as exc:
            raise ServerUnreachableError(
                f"cannot reach the API server at {self.server}: {exc}"
            ) from exc

    async def exec(
        self,
        name: str,
        namespace: str = "default",
        command: Sequence[str] = (),
        *,
        container: str | None = None,
        stdin: ExecInput = None,
        stdout: Sink | None = None,
        stderr: Sink | None = None,
    ) -> int:
        """Run ``command`` in a running container of pod ``name`` and return its exit code.

        ``stdin`` (bytes, or an async iterator of chunks) is sent and then closed; None sends
        no input. Output arrives as it is produced through the ``stdout``/``stderr``
        callbacks. Refusals (no such pod, container not running) raise the server's
        APIStatusError; a command that cannot be started raises the Status it failed with."""
        path = kind_info("Pod").object_path(name, namespace) + "/exec"
        query = exec_query(command, container=container, stdin=stdin is not None)
        ws = await open_exec(f"{websocket_url(self.server)}{path}?{query}")
        return await run_session(ws, stdin, stdout, stderr)

    async def node_proxy(self, node: str, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``path`` on a node's agent through the API server (``nodes/NAME/proxy/PATH``,
        as Kubernetes proxies to the kubelet); the decoded JSON answer."""
        target = kind_info("Node").object_path(node) + "/proxy/" + path.lstrip("/")
        return await self.request("GET", target, params=params)

    async def stats_summary(self, node: str) -> dict[str, Any]:
        """The node agent's resource usage summary (the kubelet's ``/stats/summary`` shape:
        ``node`` and ``pods`` with cpu ``usageNanoCores`` and memory ``workingSetBytes``)."""
        result: dict[str, Any] = await self.node_proxy(node, "stats/summary")
        return result

    async def record_event(
        self,
        involved: Resource,
        reason: str,
        message: str,
        type: str = "Normal",
        component: str = "shoal",
        host: str | None = None,
    ) -> None:
        """Record an Event about ``involved``. Returns at once; a background task writes it
        (best effort: failures are swallowed; ``flush_events`` waits for the backlog)."""
        now = format_time(time.time())
        ev = Event(
            metadata=ObjectMeta(
                generate_name=f"{involved.metadata.name}.",
                namespace=involved.metadata.namespace or "default",
            ),
            involved_object=ObjectReference(
                kind=involved.kind,
                namespace=involved.metadata.namespace,
                name=involved.metadata.name,
                uid=involved.metadata.uid,
                api_version=involved.api_version,
            ),
            reason=reason,
            message=message,
            type="Warning" if type == "Warning" else "Normal",
            first_timestamp=now,
            last_timestamp=now,
            source=_EventSource(component=component, host=host),
            reporting_component=component,
        )
        self._events_out.put_nowait(ev)
        if self._event_sender is None or self._event_sender.done():
            self._event_sender = asyncio.create_task(self._send_events(), name="event-sender")

    async def _send_events(self) -> None:
        """Drain the event queue one write at a time, as Kubernetes' event broadcaster does:
        events are best effort and must never hold up scheduling or a pod's start."""
        while not self._events_out.empty():
            ev = self._events_out.get_nowait()
            with contextlib.suppress(APIStatusError, ServerUnreachableError):
                await self.events.create(ev)

    async def flush_events(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout``) until every recorded event has been sent."""
        if self._event_sender is not None and not self._event_sender.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._event_sender), timeout)


def _decode(resp: httpx.Response) -> Any:
    try:
        data = resp.json() if resp.content else None
    except ValueError:
        data = None
    if resp.status_code >= 400:
        if isinstance(data, dict) and data.get("kind") == "Status":
            raise APIStatusError.from_status(data, resp.status_code)
        err = APIStatusError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        err.code = resp.status_code
        raise err
    return data


class ResourceClient(Generic[T]):
    """Typed CRUD for one kind. ``namespace=None`` means "default" for one object and "all
    namespaces" for list and watch."""

    def __init__(self, client: Client, model: type[T]) -> None:
        self.client = client
        self.model = model
        self.info: KindInfo = kind_info(str(model.model_fields["kind"].default))

    def _ns(self, namespace: str | None) -> str | None:
        return (namespace or "default") if self.info.namespaced else None

    def _parse(self, data: Any) -> T:
        return self.model.model_validate(data)

    async def get(self, name: str, namespace: str | None = None) -> T:
        return self._parse(
            await self.client.request("GET", self.info.object_path(name, self._ns(namespace)))
        )

    async def list_with_revision(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[T], int]:
        ns = namespace if self.info.namespaced else None
        data = await self.client.request(
            "GET",
            self.info.collection_path(ns),
            params={"labelSelector": label_selector, "fieldSelector": field_selector},
        )
        items = [self._parse(i) for i in data.get("items", [])]
        return items, int(data.get("metadata", {}).get("resourceVersion") or 0)

    async def list(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[T]:
        return (await self.list_with_revision(namespace, label_selector, field_selector))[0]

    async def create(self, obj: T | dict[str, Any]) -> T:
        body = obj if isinstance(obj, dict) else obj.to_dict()
        ns = self._ns((body.get("metadata") or {}).get("namespace"))
        return self._parse(
            await self.client.request("POST", self.info.collection_path(ns), body=body)
        )

    async def update(self, obj: T | dict[str, Any]) -> T:
        """PUT the whole object; a stale metadata.resourceVersion raises ConflictError."""
        body = obj if isinstance(obj, dict) else obj.to_dict()
        meta = body.get("metadata") or {}
        path = self.info.object_path(meta["name"], self._ns(meta.get("namespace")))
        return self._parse(await self.client.request("PUT", path, body=body))

    async def update_status(self, obj: T | dict[str, Any]) -> T:
        body = obj if isinstance(obj, dict) else obj.to_dict()
        meta = body.get("metadata") or {}
        path = self.info.object_path(meta["name"], self._ns(meta.get("namespace"))) + "/status"
        return self._parse(await self.client.request("PUT", path, body=body))

    async def patch(
        self,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        content_type: str = "application/merge-patch+json",
    ) -> T:
        path = self.info.object_path(name, self._ns(namespace))
        if subresource:
            path += f"/{subresource}"
        return self._parse(
            await self.client.request("PATCH", path, body=patch, content_type=content_type)
        )

    async def delete(
        self,
        name: str,
        namespace: str | None = None,
        *,
        grace_period_seconds: int | None = None,
        uid: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] | None = None
        if uid:
            body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}}
        result: dict[str, Any] = await self.client.request(
            "DELETE",
            self.info.object_path(name, self._ns(namespace)),
            params={"gracePeriodSeconds": grace_period_seconds},
            body=body,
        )
        return result

    async def watch(
        self,
        namespace: str | None = None,
        resource_version: int | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int | None = None,
    ) -> AsyncIterator[tuple[str, T]]:
        """(type, object) pairs. Without resource_version: the current objects as ADDED, then
        changes. Raises GoneError when the revision is older than the server's history."""
        ns = namespace if self.info.namespaced else None
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "timeoutSeconds": timeout_seconds,
        }
        async for line in self.client.stream_lines(self.info.collection_path(ns), params):
            ev = json.loads(line)
            if ev.get("type") == "ERROR":
                obj = ev.get("object") or {}
                err = APIStatusError.from_status(obj, int(obj.get("code") or 500))
                if isinstance(err, GoneError) or err.code == 410:
                    raise GoneError(err.message)
                raise err
            yield ev["type"], self._parse(ev["object"])
