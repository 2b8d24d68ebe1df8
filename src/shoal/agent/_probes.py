"""Container probes: the pure bookkeeping of thresholds and timing (``Prober``, driven by an
injectable clock), the I/O of one check (``run_check``: httpGet, tcpSocket, exec), and the
small loop joining them (``probe_loop``).

Semantics follow the kubelet: nothing is probed before ``initialDelaySeconds``; a readiness
probe starts failed and needs ``successThreshold`` consecutive successes to pass; a liveness
probe starts passing and needs ``failureThreshold`` consecutive failures to fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from shoal import __version__
from shoal._util import Clock
from shoal.agent._spec import resolve_port
from shoal.api import Container, Probe
from shoal.network import NetnsDialer

_OUTPUT_LIMIT = 1024


@dataclass(frozen=True)
class ProbeOutcome:
    """One check's result; ``message`` says why it failed (shown in the Unhealthy event)."""

    ok: bool
    message: str = ""


class Prober:
    """Thresholds and schedule of one probe for one run of a container. No I/O.

    ``started`` is the monotonic time the container started (so an adopted container that
    has run for an hour is probed at once, not after initialDelaySeconds).
    """

    def __init__(self, spec: Probe, *, started: float, initial: bool, clock: Clock) -> None:
        self.spec = spec
        self.clock = clock
        self.result = initial
        self.successes = 0
        self.failures = 0
        self._next = started + max(0, spec.initial_delay_seconds)

    @property
    def period(self) -> float:
        return float(max(1, self.spec.period_seconds))

    def next_due(self) -> float:
        """Monotonic time of the next check."""
        return self._next

    def due(self) -> bool:
        return self.clock.monotonic() >= self._next

    def record(self, ok: bool) -> bool:
        """Count one check's result and schedule the next; True when ``result`` flipped."""
        self._next = self.clock.monotonic() + self.period
        if ok:
            self.successes += 1
            self.failures = 0
            if not self.result and self.successes >= max(1, self.spec.success_threshold):
                self.result = True
                return True
        else:
            self.failures += 1
            self.successes = 0
            if self.result and self.failures >= max(1, self.spec.failure_threshold):
                self.result = False
                return True
        return False


@dataclass(frozen=True)
class ProbeTarget:
    """Where one container can be checked: its spec (for named ports), the host ports it got,
    and the env/working dir an exec probe runs with."""

    container: Container
    host_ports: dict[int, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""
    pod: PodAddress | None = None
    """Set when the pod has its own network namespace: probes connect to its address (as the
    kubelet probes the pod IP); None means the host (127.0.0.1)."""


@dataclass(frozen=True)
class PodAddress:
    """Where a pod with its own network namespace is probed: ``ip``, reached from the node's
    network namespace, through ``dialer`` and ``http`` when that is not the agent's own (an
    agent with ``--node-netns``; None: connect as usual)."""

    ip: str
    dialer: NetnsDialer | None = None
    http: httpx.AsyncClient | None = None


async def run_check(probe: Probe, target: ProbeTarget, http: httpx.AsyncClient) -> ProbeOutcome:
    """Run one check of ``probe``. Failures are outcomes, never exceptions."""
    timeout = float(max(1, probe.timeout_seconds))
    if probe.exec is not None:
        return await _exec_check(probe.exec.command, target, timeout)
    if probe.http_get is not None:
        action = probe.http_get
        port = resolve_port(target.container, action.port, target.host_ports)
        if port is None:
            return ProbeOutcome(False, f'unknown port name "{action.port}"')
        pod = target.pod
        host = action.host or (pod.ip if pod is not None else "127.0.0.1")
        host = f"[{host}]" if ":" in host else host
        if pod is not None and pod.http is not None:
            http = pod.http
        path = action.path if action.path.startswith("/") else "/" + action.path
        url = f"{action.scheme.lower()}://{host}:{port}{path}"
        headers = {"User-Agent": f"shoal-probe/{__version__}"}
        headers.update({h.name: h.value for h in action.http_headers})
        try:
            resp = await http.get(url, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            return ProbeOutcome(
                False, f'Get "{url}": context deadline exceeded (timeout {timeout:g}s)'
            )
        except httpx.HTTPError as exc:
            return ProbeOutcome(False, f'Get "{url}": {exc or type(exc).__name__}')
        if 200 <= resp.status_code < 400:
            return ProbeOutcome(True)
        return ProbeOutcome(False, f"HTTP probe failed with statuscode: {resp.status_code}")
    if probe.tcp_socket is not None:
        action2 = probe.tcp_socket
        port = resolve_port(target.container, action2.port, target.host_ports)
        if port is None:
            return ProbeOutcome(False, f'unknown port name "{action2.port}"')
        pod = target.pod
        host = action2.host or (pod.ip if pod is not None else "127.0.0.1")
        dialer = pod.dialer if pod is not None else None
        opened = (
            asyncio.open_connection(host, port)
            if dialer is None
            else dialer.open_connection(host, port)
        )
        try:
            _, writer = await asyncio.wait_for(opened, timeout)
        except TimeoutError:
            return ProbeOutcome(False, f"dial tcp {host}:{port}: i/o timeout")
        except OSError as exc:
            return ProbeOutcome(False, f"dial tcp {host}:{port}: {exc.strerror or exc}")
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return ProbeOutcome(True)
    return ProbeOutcome(False, "probe has no handler (httpGet, tcpSocket or exec)")


async def _exec_check(command: list[str], target: ProbeTarget, timeout: float) -> ProbeOutcome:
    """Run the command on the host, in its own session so a timeout kills its whole tree."""
    if not command:
        return ProbeOutcome(False, "exec probe has an empty command")
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            env=target.env,
            cwd=target.working_dir or "/",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        where = f" (in {target.working_dir})" if target.working_dir else ""
        return ProbeOutcome(False, f'exec: "{command[0]}"{where}: {exc.strerror or exc}')
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        if isinstance(exc, asyncio.CancelledError):
            raise
        return ProbeOutcome(False, f"command timed out after {timeout:g}s")
    text = out[-_OUTPUT_LIMIT:].decode(errors="replace").strip()
    if proc.returncode == 0:
        return ProbeOutcome(True, text)
    return ProbeOutcome(False, text or f"command exited with code {proc.returncode}")


ResultHook = Callable[[bool, bool, ProbeOutcome], None]
"""Called after each check with (current result, whether it flipped, this check's outcome)."""


async def probe_loop(
    prober: Prober,
    check: Callable[[], Awaitable[ProbeOutcome]],
    on_result: ResultHook,
) -> None:
    """Check whenever the prober says so, forever (the owner cancels the task)."""
    while True:
        delay = prober.next_due() - prober.clock.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        outcome = await check()
        changed = prober.record(outcome.ok)
        on_result(prober.result, changed, outcome)
