"""The health-check runner: runs Consul-style HTTP, TCP, TTL and script checks and reports
their results through callbacks, independent of how registrations are stored.

The registry owns one :class:`CheckRunner`, feeds it a :class:`CheckDefinition` per
registered check (:meth:`CheckRunner.set` / :meth:`CheckRunner.remove`) and records what
comes back through ``report(check_id, status, output)``. Keeping storage out of the runner
means its timing rules can be tested against real servers with plain callbacks, and the
same runner can serve an agent that owns instances on its node.

Behaviour follows a Consul agent (``agent/checks/check.go``, ``agent/agent.go``):

* interval checks (HTTP, TCP, script) make their first run at a random point within their
  interval (``lib.RandomStagger``), so checks registered together do not fire together, and
  then run ``interval`` after the previous run *finished* — a slow target is never probed
  twice at once;
* a TTL check turns critical (``TTL expired``) unless :meth:`CheckRunner.ttl_update`
  refreshes it in time; after expiring it waits for the next update;
* results are reported only when status or output change (Consul writes on change), plus
  the first result after :meth:`~CheckRunner.set`, so a restarted registry re-confirms the
  state it restored;
* a service check critical for longer than its ``deregister_critical_after`` gets
  ``deregister(service_id)`` called once. Consul enforces a one-minute minimum here; shoal
  does not, so tests can use a second. Node-level checks are never reaped.

Timeouts default per type as in Consul: 10 s for HTTP and TCP, 30 s for scripts. Consul's
one-second minimum interval is not applied either, for the same reason as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, cast

import httpx

from shoal._util.clock import parse_time
from shoal._util.duration import parse_duration
from shoal.discovery._catalog import HealthStatus
from shoal.discovery._probes import (
    DEFAULT_SCRIPT_TIMEOUT,
    DEFAULT_TIMEOUT,
    Result,
    cap_output,
    probe_http,
    probe_script,
    probe_tcp,
)
from shoal.errors import BadRequestError, NotFoundError

log = logging.getLogger("shoal.discovery.checks")

CheckType = Literal["http", "tcp", "ttl", "script"]
Report = Callable[[str, HealthStatus, str], Awaitable[None]]
Deregister = Callable[[str], Awaitable[None]]

_STATUSES: frozenset[str] = frozenset({"passing", "warning", "critical"})
_TYPES: frozenset[str] = frozenset({"http", "tcp", "ttl", "script"})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
SCRIPTS_DISABLED = (
    "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' to true"
)


def _empty_header() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True)
class CheckDefinition:
    """What a check does (durations in seconds), plus the state it (re)starts from.

    Equality compares only what the check *does*: ``status``, ``output`` and
    ``critical_since`` are excluded, so feeding the runner the same definition with a newer
    result (as a watch on stored registrations does) leaves the running check undisturbed.

    Construction validates, raising :class:`~shoal.errors.BadRequestError` with Consul's
    wording where Consul has one, so a registration endpoint can pass the message on as a
    400 body.
    """

    check_id: str
    name: str
    type: CheckType
    service_id: str = ""
    """Empty for a node-level check."""
    interval: float = 10.0
    """Seconds between the end of one run and the start of the next (HTTP, TCP, script)."""
    timeout: float = 0.0
    """Seconds one run may take; 0 means Consul's default (10 s; 30 s for scripts)."""
    ttl: float = 0.0
    """TTL checks: seconds an update keeps the check from expiring."""
    http: str = ""
    method: str = "GET"
    header: Mapping[str, Sequence[str]] = field(default_factory=_empty_header)
    """HTTP headers, each with one or more values (Consul's ``map[string][]string``)."""
    body: str = ""
    tls_skip_verify: bool = False
    tcp: str = ""
    """``host:port`` (``[v6]:port``) to connect to."""
    args: tuple[str, ...] = ()
    """Script checks: the command and its arguments, run without a shell."""
    deregister_critical_after: float | None = None
    """Deregister the service after this many seconds of continuous critical."""
    status: HealthStatus = field(default="critical", compare=False)
    output: str = field(default="", compare=False)
    critical_since: float | None = field(default=None, compare=False)
    """When the check last turned critical, on the runner's clock (wall time by default,
    so the value survives a restart of the process)."""

    def __post_init__(self) -> None:
        # Normalise so two equal definitions compare equal however they were spelled.
        header = MappingProxyType({str(k): tuple(v) for k, v in self.header.items()})
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "method", (self.method or "GET").upper())
        self._validate()

    def _validate(self) -> None:
        where = f"check {self.check_id!r}"
        if not self.check_id:
            raise BadRequestError("CheckID missing")
        if self.type not in _TYPES:
            raise BadRequestError(
                f"{where}: type {self.type!r} is not one of http, tcp, ttl, script"
            )
        if self.type == "ttl":
            if self.ttl <= 0:
                raise BadRequestError("Check is not valid: TTL must be > 0 for TTL checks")
        elif self.interval <= 0:
            raise BadRequestError(
                "Check is not valid: Interval must be > 0 for Script, HTTP, or TCP checks"
            )
        if self.type == "http" and not self.http:
            raise BadRequestError(f"{where}: an HTTP check needs an http URL")
        if self.type == "tcp" and not self.tcp:
            raise BadRequestError(f"{where}: a TCP check needs a tcp address (host:port)")
        if self.type == "script" and not self.args:
            raise BadRequestError(f"{where}: a script check needs args (the command to run)")
        if self.timeout < 0:
            raise BadRequestError(f"{where}: timeout {self.timeout:g}s is negative")
        if self.deregister_critical_after is not None and self.deregister_critical_after < 0:
            raise BadRequestError(
                f"{where}: deregister_critical_after {self.deregister_critical_after:g}s "
                "is negative"
            )
        if not _TOKEN.match(self.method):
            raise BadRequestError(f"{where}: method {self.method!r} is not an HTTP method")
        if self.status not in _STATUSES:
            raise BadRequestError(
                f"{where}: status {self.status!r} is not one of passing, warning, critical"
            )

    @property
    def effective_timeout(self) -> float:
        """``timeout``, or Consul's default for this check type when it is 0."""
        if self.timeout > 0:
            return self.timeout
        return DEFAULT_SCRIPT_TIMEOUT if self.type == "script" else DEFAULT_TIMEOUT

    @classmethod
    def from_stored(
        cls, spec: Mapping[str, Any], state: Mapping[str, Any] | None = None
    ) -> CheckDefinition:
        """From a stored check (``consul.shoal.dev/v1`` camelCase: ``checkID``,
        ``interval: "10s"``, ...) and its last recorded state (``status``, ``output``,
        ``since`` as RFC 3339). Bad durations raise BadRequestError naming the field."""

        def seconds(key: str) -> float:
            raw = spec.get(key)
            return parse_duration(str(raw), key) if raw not in (None, "") else 0.0

        state = state or {}
        status = str(state.get("status") or "critical")
        since = _parse_rfc3339(str(state.get("since") or ""))
        dereg = seconds("deregisterCriticalServiceAfter")
        check_type = str(spec.get("type") or "")
        return cls(
            check_id=str(spec.get("checkID") or ""),
            name=str(spec.get("name") or ""),
            type=cast(CheckType, check_type),  # validated in __post_init__
            service_id=str(spec.get("serviceID") or ""),
            interval=seconds("interval"),
            timeout=seconds("timeout"),
            ttl=seconds("ttl"),
            http=str(spec.get("http") or ""),
            method=str(spec.get("method") or "GET"),
            header={str(k): tuple(v) for k, v in (spec.get("header") or {}).items()},
            body=str(spec.get("body") or ""),
            tls_skip_verify=bool(spec.get("tlsSkipVerify", False)),
            tcp=str(spec.get("tcp") or ""),
            args=tuple(str(a) for a in spec.get("args") or ()),
            deregister_critical_after=dereg if dereg > 0 else None,
            status=cast(HealthStatus, status),
            output=str(state.get("output") or ""),
            critical_since=since if status == "critical" else None,
        )


def _parse_rfc3339(text: str) -> float | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


@dataclass(eq=False)
class _Check:
    """A running check: its definition, latest result and the task that produces results."""

    definition: CheckDefinition
    status: HealthStatus
    output: str
    critical_since: float | None
    reported: bool = False
    """False until a result has been reported (and again after a report failed), so the
    next result is reported even when it equals the current one."""
    task: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ttl_deadline: float = 0.0
    ttl_touched: asyncio.Event = field(default_factory=asyncio.Event)
    ttl_last_output: str = ""


class CheckRunner:
    """Runs the checks given with :meth:`set` until :meth:`remove` or :meth:`close`.

    ``report(check_id, status, output)`` records a result; ``deregister(service_id)``
    removes a service whose check stayed critical too long. Either may fail: the failure is
    logged, the runner carries on, and a failed report is retried with the next result.
    ``clock`` measures critical time for reaping (seconds; wall time by default so that a
    ``critical_since`` restored after a restart stays meaningful); scheduling itself uses
    the event loop's clock.
    """

    def __init__(
        self,
        report: Report,
        deregister: Deregister,
        *,
        enable_script_checks: bool = False,
        clock: Callable[[], float] = time.time,
        reap_interval: float = 1.0,
    ) -> None:
        self._report = report
        self._deregister = deregister
        self._reapable: set[str] = set()
        self.enable_script_checks = enable_script_checks
        self._clock = clock
        self._reap_interval = reap_interval
        self._checks: dict[str, _Check] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._reaped: set[str] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._http_insecure: httpx.AsyncClient | None = None
        self._started = False
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start running: checks :meth:`set` before now start too."""
        if self._started:
            return
        self._started = True
        self._reaper = asyncio.create_task(self._reap_loop(), name="checks-reaper")
        for check in self._checks.values():
            self._launch(check)

    async def close(self) -> None:
        """Stop every check and wait for them: no task or child process is left behind
        (a script being run has its process group killed)."""
        self._closed = True
        tasks = [c.task for c in self._checks.values() if c.task is not None]
        tasks.extend(self._stopping)
        if self._reaper is not None:
            tasks.append(self._reaper)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._checks.clear()
        self._reapable.clear()
        self._stopping.clear()
        for client in (self._http, self._http_insecure):
            if client is not None:
                await client.aclose()
        self._http = self._http_insecure = None

    # --- definitions -------------------------------------------------------------------------

    def ids(self) -> frozenset[str]:
        """IDs of the checks being run."""
        return frozenset(self._checks)

    def result(self, check_id: str) -> tuple[HealthStatus, str] | None:
        """The latest (status, output) of a check, or None when it is not run here."""
        check = self._checks.get(check_id)
        return None if check is None else (check.status, check.output)

    def set(self, definition: CheckDefinition) -> None:
        """Run ``definition``, replacing (and restarting) a different one under its ID.

        An equal definition — state fields aside — keeps running undisturbed. A script
        check raises BadRequestError unless script checks are enabled, as in Consul.
        """
        if definition.type == "script" and not self.enable_script_checks:
            raise BadRequestError(SCRIPTS_DISABLED)
        if self._closed:
            log.debug("runner closed: not running check %s", definition.check_id)
            return
        old = self._checks.get(definition.check_id)
        if old is not None and old.definition == definition:
            return
        if old is not None:
            self._stop(old)
        if definition.service_id:
            self._reaped.discard(definition.service_id)
        critical_since = definition.critical_since
        if definition.status == "critical" and critical_since is None:
            critical_since = self._clock()
        elif definition.status != "critical":
            critical_since = None
        check = _Check(definition, definition.status, definition.output, critical_since)
        self._checks[definition.check_id] = check
        if definition.service_id and definition.deregister_critical_after is not None:
            self._reapable.add(definition.check_id)
        else:
            self._reapable.discard(definition.check_id)
        if self._started:
            self._launch(check)

    def remove(self, check_id: str) -> None:
        """Stop running a check (unknown IDs are ignored: removal is idempotent)."""
        self._reapable.discard(check_id)
        check = self._checks.pop(check_id, None)
        if check is None:
            return
        self._stop(check)
        service_id = check.definition.service_id
        if service_id and not any(
            c.definition.service_id == service_id for c in self._checks.values()
        ):
            self._reaped.discard(service_id)

    async def ttl_update(self, check_id: str, status: str, output: str) -> None:
        """Set a TTL check's status and output and restart its TTL (Consul's
        ``/v1/agent/check/pass|warn|fail|update``). Output longer than 4 KiB is cut.

        Raises NotFoundError for an unknown check and BadRequestError for a check without
        a TTL or an invalid status; a failing ``report`` propagates, so the caller can
        answer its client with an error instead of claiming the update was stored.
        """
        if status not in _STATUSES:
            raise BadRequestError(f"Invalid check status: '{status}'")
        check = self._checks.get(check_id)
        if check is None:
            raise NotFoundError(
                f'Unknown check ID "{check_id}". Ensure that the check ID is passed, '
                "not the check name."
            )
        if check.definition.type != "ttl":
            raise BadRequestError(f'CheckID "{check_id}" does not have associated TTL')
        output = cap_output(output)
        check.ttl_last_output = output
        check.ttl_deadline = asyncio.get_running_loop().time() + check.definition.ttl
        check.ttl_touched.set()
        await self._record(check, cast(HealthStatus, status), output, propagate=True)

    # --- running -----------------------------------------------------------------------------

    def _launch(self, check: _Check) -> None:
        name = f"check:{check.definition.check_id}"
        if check.definition.type == "ttl":
            check.ttl_deadline = asyncio.get_running_loop().time() + check.definition.ttl
            check.task = asyncio.create_task(self._run_ttl(check), name=name)
        else:
            check.task = asyncio.create_task(self._run_interval(check), name=name)

    def _stop(self, check: _Check) -> None:
        task = check.task
        if task is None or task.done():
            return
        task.cancel()
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _record(
        self, check: _Check, status: HealthStatus, output: str, *, propagate: bool = False
    ) -> None:
        """Take a result; report it when it differs from the last one (or nothing has been
        reported yet). The lock keeps a TTL update and an expiry from interleaving."""
        async with check.lock:
            if status == "critical":
                if check.status != "critical" or check.critical_since is None:
                    check.critical_since = self._clock()
            else:
                check.critical_since = None
                if check.definition.service_id:
                    self._reaped.discard(check.definition.service_id)
            changed = (status, output) != (check.status, check.output)
            check.status, check.output = status, output
            if not changed and check.reported:
                return
            try:
                await self._report(check.definition.check_id, status, output)
            except Exception:
                check.reported = False
                if propagate:
                    raise
                log.exception("recording the result of check %s failed", check.definition.check_id)
            else:
                check.reported = True

    async def _run_ttl(self, check: _Check) -> None:
        """Wait out the TTL; on expiry report critical once and wait for the next update.

        ``ttl_deadline`` is the truth and ``ttl_touched`` only a wake-up call, so an update
        landing at any point (even while the expiry is being reported) is never lost.
        """
        loop = asyncio.get_running_loop()
        while True:
            check.ttl_touched.clear()
            remaining = check.ttl_deadline - loop.time()
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await check.ttl_touched.wait()
                continue
            output = "TTL expired"
            if check.ttl_last_output:
                output += f" (last output before timeout follows): {check.ttl_last_output}"
            await self._record(check, "critical", output)
            # Consul's timer fires once; the next update re-arms it.
            await check.ttl_touched.wait()

    async def _run_interval(self, check: _Check) -> None:
        definition = check.definition
        await asyncio.sleep(random.uniform(0, definition.interval))
        while True:
            try:
                status, output = await self._probe(definition)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken probe is a critical result, not a dead runner
                log.exception("check %s failed to run", definition.check_id)
                status, output = "critical", f"check failed to run: {exc}"
            await self._record(check, status, output)
            await asyncio.sleep(definition.interval)

    async def _probe(self, definition: CheckDefinition) -> Result:
        timeout = definition.effective_timeout
        if definition.type == "http":
            return await probe_http(
                self._client(insecure=definition.tls_skip_verify),
                definition.http,
                method=definition.method,
                header=definition.header,
                body=definition.body,
                timeout=timeout,
            )
        if definition.type == "tcp":
            return await probe_tcp(definition.tcp, timeout=timeout)
        return await probe_script(definition.args, timeout=timeout)

    def _client(self, *, insecure: bool) -> httpx.AsyncClient:
        """The shared HTTP client (a second one skips TLS verification). Keep-alive is off,
        as in Consul, so a check never passes on a connection opened before the server went
        away; the environment's proxy settings are ignored, since a check means *this* URL."""
        current = self._http_insecure if insecure else self._http
        if current is None:
            current = httpx.AsyncClient(
                follow_redirects=False,
                verify=not insecure,
                trust_env=False,
                timeout=None,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
            )
            if insecure:
                self._http_insecure = current
            else:
                self._http = current
        return current

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval)
            try:
                await self._reap_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reaping critical services failed")

    async def _reap_once(self) -> None:
        now = self._clock()
        due: dict[str, CheckDefinition] = {}
        # Only checks with DeregisterCriticalServiceAfter: a scan of every check each second
        # stalled the loop ~7 ms with 11,000 checks registered.
        for check_id in list(self._reapable):
            check = self._checks.get(check_id)
            if check is None:
                continue
            definition = check.definition
            limit = definition.deregister_critical_after
            if (
                definition.service_id
                and limit is not None
                and check.status == "critical"
                and check.critical_since is not None
                and now - check.critical_since > limit
                and definition.service_id not in self._reaped
            ):
                due.setdefault(definition.service_id, definition)
        for service_id, definition in due.items():
            self._reaped.add(service_id)
            log.info(
                "check %s has been critical for more than %gs: deregistering service %s",
                definition.check_id,
                definition.deregister_critical_after or 0.0,
                service_id,
            )
            try:
                await self._deregister(service_id)
            except Exception:
                log.exception("deregistering service %s failed; will retry", service_id)
                self._reaped.discard(service_id)
