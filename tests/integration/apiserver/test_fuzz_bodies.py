"""Bad input never gets a 500: a valid object of each kind with one field, at any depth,
replaced by arbitrary JSON (or removed) is answered with a Status body (400/404/409/422) or
accepted, through create, update and patch, and the server keeps serving."""

from __future__ import annotations

import asyncio
import copy
import json
import os
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.api import kind_info
from shoal.testing import running_api_server

CONTAINER = {"name": "c", "command": ["sleep", "1"], "env": [{"name": "A", "value": "1"}],
             "ports": [{"name": "http", "containerPort": 80}],
             "resources": {"requests": {"cpu": "100m", "memory": "1Mi"}, "limits": {"cpu": "1"}},
             "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}}  # fmt: skip
TEMPLATE = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [CONTAINER]}}
VALID: dict[str, dict[str, Any]] = {
    "Pod": {"metadata": {"name": "p", "labels": {"app": "x"}}, "spec": {"containers": [CONTAINER]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
    "Deployment": {"metadata": {"name": "d"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}},
                   "template": TEMPLATE, "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}}},
    "ReplicaSet": {"metadata": {"name": "r"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                   "template": TEMPLATE}},
    "Service": {"metadata": {"name": "s"}, "spec": {"selector": {"app": "x"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
    "Endpoints": {"metadata": {"name": "s"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]},
    "Node": {"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
             "status": {"capacity": {"cpu": "2", "memory": "1Gi", "pods": "110"},
                        "conditions": [{"type": "Ready", "status": "True"}]}},
    "Event": {"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "R", "message": "m"},
    "Namespace": {"metadata": {"name": "ns1"}},
}  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from(["", "1", "-1", "100m", "1Gi", "http", "Always", "x%"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(sorted(VALID)))
    doc = copy.deepcopy(VALID[kind])
    for _ in range(draw(st.integers(1, 2))):
        candidates = paths(doc)
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        if draw(st.booleans()) and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(json_values)
    return kind, doc


ALLOWED = {200, 201, 400, 404, 405, 409, 415, 422}
EXAMPLES = int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "300"))


async def test_corrupted_bodies_never_500() -> None:
    async with running_api_server() as srv, httpx.AsyncClient(base_url=srv.url, timeout=10) as h:
        loop = asyncio.get_running_loop()
        codes: set[int] = set()
        # Valid objects exist first, so updates and patches reach the validation of the body.
        for kind, doc in VALID.items():
            info = kind_info(kind)
            r = await h.post(info.collection_path("default" if info.namespaced else None),
                             json={"apiVersion": info.api_version, "kind": kind, **doc})  # fmt: skip
            assert r.status_code == 201, r.text

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @given(mutated(), st.sampled_from(["POST", "PUT", "PATCH", "STATUS"]))
        def check(case: tuple[str, dict[str, Any]], method: str) -> None:
            kind, doc = case
            info = kind_info(kind)
            body = {"apiVersion": info.api_version, "kind": kind, **doc}
            ns = "default" if info.namespaced else None
            name = VALID[kind]["metadata"]["name"]
            headers = {}
            if method == "POST":
                path = info.collection_path(ns)
            else:
                path = info.object_path(name, ns) + (
                    "/status" if method == "STATUS" and "status" in info.subresources else ""
                )
                headers = (
                    {"content-type": "application/merge-patch+json"} if method == "PATCH" else {}
                )
            verb = "PUT" if method == "STATUS" else method
            fut = asyncio.run_coroutine_threadsafe(
                h.request(verb, path, content=json.dumps(body), headers=headers), loop
            )
            r = fut.result(20)
            codes.add(r.status_code)
            assert r.status_code in ALLOWED, (verb, path, body, r.status_code, r.text)
            if r.status_code >= 400:
                assert r.json()["kind"] == "Status"

        await asyncio.to_thread(check)
        assert 422 in codes and (200 in codes or 201 in codes), codes
        assert (await h.get("/readyz")).status_code == 200
