"""The check runner without the network: definitions and their validation, Consul's output
texts and caps, TTL checks, reporting on change, DeregisterCriticalServiceAfter, and a
runner that survives failing callbacks. HTTP/TCP/script probes against real servers and
processes are in tests/integration/discovery/test_checks_probes.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from shoal.discovery._checks import CheckDefinition, CheckRunner
from shoal.discovery._probes import OutputTail, cap_output, go_duration, split_host_port
from shoal.errors import BadRequestError, NotFoundError


class Recorder:
    """The runner's two callbacks, recording every call; ``fail_reports`` makes the next
    N reports raise, ``fail_deregisters`` likewise for deregistrations."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, str, str, str]] = []
        self.deregistered: list[str] = []
        self.fail_reports = 0
        self.fail_deregisters = 0
        self.report_attempts = 0
        self._changed = asyncio.Event()
        self._t0 = time.monotonic()

    async def report(self, check_id: str, status: str, output: str) -> None:
        self.report_attempts += 1
        self._changed.set()
        if self.fail_reports > 0:
            self.fail_reports -= 1
            raise RuntimeError("store unavailable")
        self.reports.append((time.monotonic() - self._t0, check_id, status, output))
        self._changed.set()

    async def deregister(self, service_id: str) -> None:
        if self.fail_deregisters > 0:
            self.fail_deregisters -= 1
            raise RuntimeError("store unavailable")
        self.deregistered.append(service_id)
        self._changed.set()

    def of(self, check_id: str) -> list[tuple[str, str]]:
        return [(s, o) for _, c, s, o in self.reports if c == check_id]

    async def until(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait for ``cond``: woken by every callback, and polled for conditions that
        depend on something else (a server's request log)."""
        async with asyncio.timeout(timeout):
            while not cond():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.02)

    async def until_status(self, check_id: str, status: str, timeout: float = 5.0) -> str:
        """The output of the first report of ``status`` for ``check_id``."""
        await self.until(lambda: any(s == status for s, _ in self.of(check_id)), timeout)
        return next(o for s, o in self.of(check_id) if s == status)


@pytest.fixture
async def rec() -> Recorder:
    return Recorder()


@pytest.fixture
async def runner(rec: Recorder) -> AsyncIterator[CheckRunner]:
    r = CheckRunner(rec.report, rec.deregister, reap_interval=0.05)
    await r.start()
    try:
        yield r
    finally:
        await r.close()


def ttl_check(cid: str, ttl: float, **kw: object) -> CheckDefinition:
    return CheckDefinition(cid, cid, "ttl", ttl=ttl, **kw)  # type: ignore[arg-type]


# --- definitions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "ttl"}, "Check is not valid: TTL must be > 0 for TTL checks"),
        (
            {"type": "http", "http": "http://x/", "interval": 0},
            "Check is not valid: Interval must be > 0 for Script, HTTP, or TCP checks",
        ),
        ({"type": "http", "interval": 1}, "check 'c1': an HTTP check needs an http URL"),
        ({"type": "tcp", "interval": 1}, "check 'c1': a TCP check needs a tcp address"),
        ({"type": "script", "interval": 1}, "check 'c1': a script check needs args"),
        ({"type": "grpc", "interval": 1}, "check 'c1': type 'grpc' is not one of"),
        ({"type": "ttl", "ttl": 1, "status": "ok"}, "check 'c1': status 'ok' is not one of"),
        ({"type": "ttl", "ttl": 1, "timeout": -1}, "check 'c1': timeout -1s is negative"),
        (
            {"type": "http", "http": "http://x/", "method": "GE T"},
            "check 'c1': method 'GE T' is not an HTTP method",
        ),
    ],
)
def test_bad_definitions_are_refused_naming_the_problem(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(BadRequestError) as info:
        CheckDefinition("c1", "c1", **kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
    assert info.value.code == 400


def test_missing_check_id_uses_consul_wording() -> None:
    with pytest.raises(BadRequestError, match=r"^CheckID missing$"):
        ttl_check("", 1.0)


def test_equality_ignores_state_but_not_behaviour() -> None:
    a = ttl_check("a", 5.0)
    assert a == ttl_check("a", 5.0, status="passing", output="ok", critical_since=1.0)
    assert a != ttl_check("a", 6.0)
    h1 = CheckDefinition("h", "h", "http", http="http://x/", header={"A": ["1", "2"]})
    h2 = CheckDefinition("h", "h", "http", http="http://x/", header={"A": ("1", "2")})
    assert h1 == h2 and h1.method == "GET"
    assert CheckDefinition("h", "h", "http", http="http://x/", method="post").method == "POST"


def test_timeouts_default_per_type_as_in_consul() -> None:
    assert CheckDefinition("h", "h", "http", http="http://x/").effective_timeout == 10.0
    assert CheckDefinition("t", "t", "tcp", tcp="x:1").effective_timeout == 10.0
    assert CheckDefinition("s", "s", "script", args=("true",)).effective_timeout == 30.0
    assert CheckDefinition("s", "s", "script", args=("true",), timeout=2).effective_timeout == 2


def test_from_stored_reads_camel_case_durations_and_state() -> None:
    spec = {
        "checkID": "service:web",
        "name": "web check",
        "type": "http",
        "serviceID": "web",
        "interval": "1m30s",
        "timeout": "500ms",
        "http": "http://127.0.0.1:8080/health",
        "method": "post",
        "header": {"X-A": ["1", "2"]},
        "body": "hi",
        "tlsSkipVerify": True,
        "deregisterCriticalServiceAfter": "1h",
    }
    state = {"checkID": "service:web", "status": "critical", "output": "down",
             "since": "2026-01-02T03:04:05Z"}  # fmt: skip
    d = CheckDefinition.from_stored(spec, state)
    assert (d.check_id, d.name, d.type, d.service_id) == ("service:web", "web check", "http", "web")
    assert (d.interval, d.timeout, d.deregister_critical_after) == (90.0, 0.5, 3600.0)
    assert (d.method, dict(d.header), d.body, d.tls_skip_verify) == (
        "POST",
        {"X-A": ("1", "2")},
        "hi",
        True,
    )
    assert (d.status, d.output) == ("critical", "down")
    assert d.critical_since == 1767323045.0

    passing = CheckDefinition.from_stored(
        {"checkID": "t", "type": "ttl", "ttl": "10s"}, {"status": "passing", "since": "x"}
    )
    assert (passing.ttl, passing.status, passing.critical_since) == (10.0, "passing", None)
    assert passing.deregister_critical_after is None


@pytest.mark.parametrize("bad", ["10 parsecs", "s", "1.5.3s", "ten"])
def test_from_stored_names_a_bad_duration(bad: str) -> None:
    with pytest.raises(BadRequestError) as info:
        CheckDefinition.from_stored({"checkID": "t", "type": "ttl", "ttl": bad})
    assert "ttl" in str(info.value) and bad in str(info.value)


def test_from_stored_refuses_an_unknown_type() -> None:
    with pytest.raises(BadRequestError, match="type 'docker' is not one of"):
        CheckDefinition.from_stored({"checkID": "d", "type": "docker", "interval": "1s"})


# --- output texts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (0.0015, "1.5ms"),
        (2e-6, "2µs"),
        (1, "1s"),
        (1.5, "1.5s"),
        (30, "30s"),
        (90, "1m30s"),
        (3600, "1h0m0s"),
        (3723.25, "1h2m3.25s"),
    ],
)
def test_durations_are_written_as_go_does(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_ttl_output_cap_keeps_the_head_and_says_so() -> None:
    assert cap_output("short") == "short"
    long = "x" * 5000
    assert cap_output(long) == "x" * 4096 + " ... (captured 4096 of 5000 bytes)"
    # Bytes, not characters, as Consul counts; a cut multi-byte character is dropped.
    capped = cap_output("é" * 3000)
    assert capped.startswith("é" * 2048 + " ... (captured 4096 of 6000 bytes)")


def test_output_tail_keeps_the_last_bytes() -> None:
    tail = OutputTail(limit=8)
    tail.write(b"0123")
    assert (tail.text(), tail.truncated) == ("0123", False)
    tail.write(b"456789ab")
    assert tail.text() == "456789ab"
    assert tail.annotated() == "Captured 8 of 12 bytes\n...\n456789ab"
    utf = OutputTail(limit=4)
    utf.write("aé€".encode())  # 1 + 2 + 3 bytes: the cut lands inside "é"
    assert utf.text() == "€"
    assert utf.annotated() == "Captured 4 of 6 bytes\n...\n€"


@pytest.mark.parametrize(
    ("address", "result"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:8500", ("::1", 8500)), ("db:0", ("db", 0))],
)
def test_split_host_port(address: str, result: tuple[str, int]) -> None:
    assert split_host_port(address) == result


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("localhost", "address localhost: missing port in address"),
        ("::1:80", "address ::1:80: too many colons in address"),
        ("h:http", 'address h:http: invalid port "http"'),
        ("h:70000", 'address h:70000: invalid port "70000"'),
    ],
)
def test_split_host_port_errors_read_like_go(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        split_host_port(address)


# --- TTL checks --------------------------------------------------------------------------------


async def test_ttl_goes_critical_then_passing_then_expires_again(
    runner: CheckRunner, rec: Recorder
) -> None:
    runner.set(ttl_check("t1", 0.2, status="passing"))
    assert await rec.until_status("t1", "critical") == "TTL expired"
    await runner.ttl_update("t1", "passing", "all good")
    assert rec.of("t1")[-1] == ("passing", "all good")
    assert runner.result("t1") == ("passing", "all good")
    await rec.until(lambda: len(rec.of("t1")) == 3)
    assert rec.of("t1")[-1] == (
        "critical",
        "TTL expired (last output before timeout follows): all good",
    )
    # Expired once, it stays quiet until the next update re-arms the timer.
    await asyncio.sleep(0.4)
    assert len(rec.of("t1")) == 3


async def test_heartbeats_in_time_keep_a_ttl_check_passing(
    runner: CheckRunner, rec: Recorder
) -> None:
    runner.set(ttl_check("t2", 0.3))
    for _ in range(10):
        await runner.ttl_update("t2", "passing", "beat")
        await asyncio.sleep(0.1)
    # One report: passing. Identical heartbeats are not re-reported; none expired.
    assert rec.of("t2") == [("passing", "beat")]
    await runner.ttl_update("t2", "warning", "slow")
    await runner.ttl_update("t2", "warning", "slow")
    assert rec.of("t2") == [("passing", "beat"), ("warning", "slow")]


async def test_ttl_update_caps_output(runner: CheckRunner, rec: Recorder) -> None:
    runner.set(ttl_check("t3", 5))
    await runner.ttl_update("t3", "passing", "y" * 5000)
    assert rec.of("t3") == [("passing", "y" * 4096 + " ... (captured 4096 of 5000 bytes)")]


async def test_ttl_update_errors_use_consul_wording(runner: CheckRunner) -> None:
    runner.set(CheckDefinition("tcp1", "tcp1", "tcp", tcp="127.0.0.1:9", interval=60))
    runner.set(ttl_check("t4", 5))
    with pytest.raises(NotFoundError) as missing:
        await runner.ttl_update("nope", "passing", "")
    assert str(missing.value) == (
        'Unknown check ID "nope". Ensure that the check ID is passed, not the check name.'
    )
    with pytest.raises(BadRequestError, match=r'^CheckID "tcp1" does not have associated TTL$'):
        await runner.ttl_update("tcp1", "passing", "")
    with pytest.raises(BadRequestError, match=r"^Invalid check status: 'great'$"):
        await runner.ttl_update("t4", "great", "")


async def test_same_definition_keeps_running_a_changed_one_restarts(
    runner: CheckRunner, rec: Recorder
) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    runner.set(ttl_check("same", 0.4))
    runner.set(ttl_check("changed", 0.4))
    await asyncio.sleep(0.2)
    # The registry re-feeds definitions whenever a stored result changes: no restart.
    runner.set(ttl_check("same", 0.4, status="passing", output="x"))
    runner.set(ttl_check("changed", 1.0))
    await rec.until_status("same", "critical")
    assert loop.time() - t0 < 0.6
    assert rec.of("changed") == []
    await rec.until_status("changed", "critical")
    assert loop.time() - t0 >= 1.1


async def test_removed_check_reports_nothing_more(runner: CheckRunner, rec: Recorder) -> None:
    runner.set(ttl_check("gone", 0.15))
    runner.remove("gone")
    runner.remove("gone")  # idempotent
    assert "gone" not in runner.ids()
    with pytest.raises(NotFoundError):
        await runner.ttl_update("gone", "passing", "")
    await asyncio.sleep(0.3)
    assert rec.of("gone") == []


async def test_checks_set_before_start_run_after_it(rec: Recorder) -> None:
    r = CheckRunner(rec.report, rec.deregister)
    try:
        r.set(ttl_check("early", 0.1))
        await asyncio.sleep(0.2)
        assert rec.of("early") == []
        await r.start()
        assert await rec.until_status("early", "critical") == "TTL expired"
    finally:
        await r.close()


def test_script_checks_need_the_flag() -> None:
    async def nothing(*_: str) -> None:
        return None

    r = CheckRunner(nothing, nothing)
    with pytest.raises(BadRequestError) as info:
        r.set(CheckDefinition("s", "s", "script", args=("true",)))
    assert str(info.value) == (
        "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' to true"
    )
    assert r.ids() == frozenset()


# --- failing callbacks -------------------------------------------------------------------------


async def test_failed_report_is_retried_with_the_next_result(
    runner: CheckRunner, rec: Recorder
) -> None:
    runner.set(ttl_check("f1", 5))
    rec.fail_reports = 1
    with pytest.raises(RuntimeError, match="store unavailable"):
        await runner.ttl_update("f1", "passing", "ok")
    assert rec.of("f1") == []
    # The same result again: reported now, because the first one never got through.
    await runner.ttl_update("f1", "passing", "ok")
    assert rec.of("f1") == [("passing", "ok")]


async def test_failing_report_on_expiry_does_not_kill_the_check(
    runner: CheckRunner, rec: Recorder
) -> None:
    runner.set(ttl_check("f2", 0.1))
    rec.fail_reports = 1
    await rec.until(lambda: rec.report_attempts >= 1)
    await asyncio.sleep(0.05)
    assert rec.of("f2") == []
    await runner.ttl_update("f2", "passing", "back")
    assert await rec.until_status("f2", "critical") == (
        "TTL expired (last output before timeout follows): back"
    )


# --- DeregisterCriticalServiceAfter ------------------------------------------------------------


async def test_critical_service_is_deregistered_once(runner: CheckRunner, rec: Recorder) -> None:
    definition = ttl_check(
        "svc-a:ttl", 0.1, service_id="svc-a", deregister_critical_after=0.3, status="passing"
    )
    runner.set(definition)
    await rec.until_status("svc-a:ttl", "critical")
    t_critical = time.monotonic()
    await rec.until(lambda: rec.deregistered == ["svc-a"])
    assert time.monotonic() - t_critical >= 0.25
    # The callback did not remove the check; it is not reaped a second time.
    await asyncio.sleep(0.3)
    assert rec.deregistered == ["svc-a"]
    # Passing resets it; critical for long enough again reaps again.
    await runner.ttl_update("svc-a:ttl", "passing", "")
    await runner.ttl_update("svc-a:ttl", "critical", "down")
    await rec.until(lambda: rec.deregistered == ["svc-a", "svc-a"])


async def test_passing_in_time_is_not_reaped_and_node_checks_never_are(
    runner: CheckRunner, rec: Recorder
) -> None:
    runner.set(ttl_check("svc-b:ttl", 0.1, service_id="svc-b", deregister_critical_after=0.4))
    runner.set(ttl_check("node-ttl", 0.1, deregister_critical_after=0.1))
    await rec.until_status("svc-b:ttl", "critical")
    await runner.ttl_update("svc-b:ttl", "passing", "")  # within 0.4 s of going critical
    await asyncio.sleep(0.5)
    assert rec.of("node-ttl")[0][0] == "critical"
    assert rec.deregistered == []


async def test_restored_critical_since_counts(rec: Recorder) -> None:
    """A restart keeps the time a check went critical: a service critical long enough
    before the restart is reaped at once, not a whole timeout later."""
    now = [1000.0]
    r = CheckRunner(rec.report, rec.deregister, clock=lambda: now[0], reap_interval=0.05)
    await r.start()
    try:
        r.set(ttl_check("old", 60, service_id="old-svc", deregister_critical_after=30,
                        critical_since=960.0))  # fmt: skip
        r.set(ttl_check("new", 60, service_id="new-svc", deregister_critical_after=30))
        await rec.until(lambda: rec.deregistered == ["old-svc"])
        now[0] += 31  # the new check has been critical since set()
        await rec.until(lambda: rec.deregistered == ["old-svc", "new-svc"])
    finally:
        await r.close()


async def test_failed_deregistration_is_retried(runner: CheckRunner, rec: Recorder) -> None:
    rec.fail_deregisters = 2
    runner.set(ttl_check("svc-c:ttl", 0.05, service_id="svc-c", deregister_critical_after=0.05))
    await rec.until(lambda: rec.deregistered == ["svc-c"])
    assert rec.fail_deregisters == 0


async def test_removing_a_reaped_service_lets_a_reregistration_be_reaped(
    runner: CheckRunner, rec: Recorder
) -> None:
    definition = ttl_check("svc-d:ttl", 0.05, service_id="svc-d", deregister_critical_after=0.1)
    runner.set(definition)
    await rec.until(lambda: rec.deregistered == ["svc-d"])
    runner.remove("svc-d:ttl")  # what the registry does once the service is gone
    runner.set(definition)  # the program registers itself again, and dies again
    await rec.until(lambda: rec.deregistered == ["svc-d", "svc-d"])
