"""The health-check runner: runs registered HTTP, TCP, TTL and script checks and reports
their results, the way a Consul agent does (``agent/checks/check.go``).

* HTTP: 2xx is passing, 429 warning, anything else (or no answer in time) critical; output
  ``HTTP GET URL: 200 OK Output: BODY`` with the body capped at 4 KiB.
* TCP: a connection within the timeout is passing (``TCP connect ADDR: Success``).
* TTL: critical with ``TTL expired`` unless refreshed through :meth:`CheckRunner.ttl_update`.
* Script (``Args``): exit 0 passing, 1 warning, anything else critical; killed (its whole
  process group) at the timeout. Only registrable when script checks are enabled.

Results are reported only when status or output change, as Consul writes them. The first
run of an interval check is staggered randomly within its interval. A service check
critical for longer than its ``DeregisterCriticalServiceAfter`` gets the service
deregistered; shoal applies no 1-minute minimum (Consul does), so tests can use seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import httpx

from shoal._util.duration import parse_duration
from shoal.errors import BadRequestError, NotFoundError

log = logging.getLogger("shoal.discovery.checks")

OUTPUT_LIMIT = 4096
DEFAULT_TIMEOUT = 10.0

Report = Callable[[str, str, str], Awaitable[None]]
Deregister = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class CheckSpec:
    """What the runner needs of a registered check (durations in seconds)."""

    check_id: str
    type: str
    service_id: str = ""
    interval: float = 0.0
    timeout: float = DEFAULT_TIMEOUT
    ttl: float = 0.0
    http: str = ""
    method: str = "GET"
    header: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    body: str = ""
    tls_skip_verify: bool = False
    tcp: str = ""
    args: tuple[str, ...] = ()
    deregister_after: float | None = None

    @classmethod
    def from_definition(cls, d: Mapping[str, Any]) -> CheckSpec:
        """From a stored check definition (the registry's camelCase form)."""

        def seconds(key: str, default: float = 0.0) -> float:
            raw = d.get(key) or ""
            return parse_duration(str(raw), key) if raw else default

        dereg = seconds("deregisterCriticalServiceAfter")
        return cls(
            check_id=str(d.get("checkID", "")),
            type=str(d.get("type", "ttl")),
            service_id=str(d.get("serviceID", "")),
            interval=seconds("interval"),
            timeout=seconds("timeout", DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT,
            ttl=seconds("ttl"),
            http=str(d.get("http", "")),
            method=str(d.get("method") or "GET"),
            header=MappingProxyType({k: tuple(v) for k, v in (d.get("header") or {}).items()}),
            body=str(d.get("body", "")),
            tls_skip_verify=bool(d.get("tlsSkipVerify", False)),
            tcp=str(d.get("tcp", "")),
            args=tuple(d.get("args") or ()),
            deregister_after=dereg if dereg > 0 else None,
        )


def parse_since(text: str) -> float | None:
    """An RFC 3339 timestamp as a time.time() value (None when empty or bad)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class _Running:
    spec: CheckSpec
    status: str
    output: str
    critical_since: float | None
    task: asyncio.Task[None] | None = None
    ttl_deadline: float = 0.0
    ttl_changed: asyncio.Event = field(default_factory=asyncio.Event)


class CheckRunner:
    """Runs checks given with :meth:`set`; reports through ``report(check_id, status,
    output)`` and deregisters services through ``deregister(service_id)``."""

    def __init__(
        self,
        report: Report,
        deregister: Deregister,
        *,
        enable_script_checks: bool = False,
        reap_interval: float = 1.0,
    ) -> None:
        self._report = report
        self._deregister = deregister
        self.enable_script_checks = enable_script_checks
        self._reap_interval = reap_interval
        self._checks: dict[str, _Running] = {}
        self._http: httpx.AsyncClient | None = None
        self._http_insecure: httpx.AsyncClient | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._reaped: set[str] = set()

    async def start(self) -> None:
        self._http = httpx.AsyncClient(follow_redirects=False)
        self._http_insecure = httpx.AsyncClient(follow_redirects=False, verify=False)
        self._reaper = asyncio.create_task(self._reap_loop(), name="check-reaper")

    async def close(self) -> None:
        tasks = [r.task for r in self._checks.values() if r.task is not None]
        if self._reaper is not None:
            tasks.append(self._reaper)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._checks.clear()
        for client in (self._http, self._http_insecure):
            if client is not None:
                await client.aclose()

    def ids(self) -> set[str]:
        return set(self._checks)

    def set(
        self, spec: CheckSpec, status: str = "critical", output: str = "", since: str = ""
    ) -> None:
        """Run ``spec`` (replacing a different definition under the same ID; an identical
        one keeps running undisturbed)."""
        if spec.type == "script" and not self.enable_script_checks:
            raise BadRequestError(
                "Scripts are disabled on this agent; to enable, configure "
                "'enable_script_checks' to true"
            )
        old = self._checks.get(spec.check_id)
        if old is not None and old.spec == spec:
            return
        if old is not None and old.task is not None:
            old.task.cancel()
        critical_since = (parse_since(since) or time.time()) if status == "critical" else None
        run = _Running(spec, status, output, critical_since)
        self._checks[spec.check_id] = run
        run.task = asyncio.create_task(self._run(run), name=f"check:{spec.check_id}")

    def remove(self, check_id: str) -> None:
        run = self._checks.pop(check_id, None)
        if run is not None and run.task is not None:
            run.task.cancel()

    async def ttl_update(self, check_id: str, status: str, output: str) -> None:
        run = self._checks.get(check_id)
        if run is None:
            raise NotFoundError(f'Unknown check ID "{check_id}"')
        if run.spec.type != "ttl":
            raise BadRequestError(f'CheckID "{check_id}" does not have associated TTL')
        run.ttl_deadline = time.monotonic() + run.spec.ttl
        run.ttl_changed.set()
        await self._result(run, status, output[:OUTPUT_LIMIT])

    # --- running -----------------------------------------------------------------------------

    async def _result(self, run: _Running, status: str, output: str) -> None:
        if status == "critical":
            if run.critical_since is None:
                run.critical_since = time.time()
        else:
            run.critical_since = None
            self._reaped.discard(run.spec.service_id)
        if (status, output) == (run.status, run.output) and run.status != "":
            return
        run.status, run.output = status, output
        try:
            await self._report(run.spec.check_id, status, output)
        except Exception:
            log.exception("recording the result of check %s failed", run.spec.check_id)

    async def _run(self, run: _Running) -> None:
        spec = run.spec
        if spec.type == "ttl":
            run.ttl_deadline = time.monotonic() + spec.ttl
            while True:
                remaining = run.ttl_deadline - time.monotonic()
                if remaining <= 0:
                    await self._result(run, "critical", "TTL expired")
                    run.ttl_changed.clear()
                    await run.ttl_changed.wait()
                    continue
                run.ttl_changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await run.ttl_changed.wait()
        await asyncio.sleep(random.uniform(0, min(spec.interval, 1.0)))
        while True:
            try:
                status, output = await self._probe(spec)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a check never kills the runner
                status, output = "critical", f"check failed: {exc}"
            await self._result(run, status, output[:OUTPUT_LIMIT])
            await asyncio.sleep(spec.interval)

    async def _probe(self, spec: CheckSpec) -> tuple[str, str]:
        if spec.type == "http":
            return await self._probe_http(spec)
        if spec.type == "tcp":
            return await _probe_tcp(spec)
        if spec.type == "script":
            return await _probe_script(spec)
        return "critical", f"unknown check type {spec.type!r}"

    async def _probe_http(self, spec: CheckSpec) -> tuple[str, str]:
        client = self._http_insecure if spec.tls_skip_verify else self._http
        assert client is not None, "start() the runner first"
        headers = [(k, v) for k, values in spec.header.items() for v in values]
        method = spec.method.upper()
        try:
            resp = await client.request(
                method, spec.http, headers=headers, content=spec.body or None, timeout=spec.timeout
            )
        except httpx.TimeoutException:
            return "critical", f"HTTP {method} {spec.http}: timed out after {spec.timeout:g}s"
        except httpx.HTTPError as exc:
            return "critical", f"HTTP {method} {spec.http}: {type(exc).__name__}: {exc}"
        body = resp.content[:OUTPUT_LIMIT].decode(errors="replace")
        output = (
            f"HTTP {method} {spec.http}: {resp.status_code} {resp.reason_phrase} Output: {body}"
        )
        if 200 <= resp.status_code < 300:
            return "passing", output
        if resp.status_code == 429:
            return "warning", output
        return "critical", output

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval)
            now = time.time()
            for run in list(self._checks.values()):
                spec = run.spec
                if (
                    spec.service_id
                    and spec.deregister_after is not None
                    and run.critical_since is not None
                    and now - run.critical_since > spec.deregister_after
                    and spec.service_id not in self._reaped
                ):
                    self._reaped.add(spec.service_id)
                    log.info(
                        "check %s critical for more than %gs: deregistering service %s",
                        spec.check_id,
                        spec.deregister_after,
                        spec.service_id,
                    )
                    try:
                        await self._deregister(spec.service_id)
                    except Exception:
                        log.exception("deregistering %s failed", spec.service_id)
                        self._reaped.discard(spec.service_id)


async def _probe_tcp(spec: CheckSpec) -> tuple[str, str]:
    host, _, port = spec.tcp.rpartition(":")
    host = host.strip("[]")
    try:
        async with asyncio.timeout(spec.timeout):
            _reader, writer = await asyncio.open_connection(host, int(port))
    except TimeoutError:
        return "critical", f"dial tcp {spec.tcp}: i/o timeout"
    except OSError as exc:
        return "critical", f"dial tcp {spec.tcp}: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return "passing", f"TCP connect {spec.tcp}: Success"


async def _probe_script(spec: CheckSpec) -> tuple[str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *spec.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return "critical", f"Check failed to start: {exc}"
    try:
        async with asyncio.timeout(spec.timeout):
            out, _ = await proc.communicate()
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        return "critical", f"Timed out ({spec.timeout:g}s) running check"
    text = out[:OUTPUT_LIMIT].decode(errors="replace")
    if proc.returncode == 0:
        return "passing", text
    if proc.returncode == 1:
        return "warning", text
    return "critical", text
