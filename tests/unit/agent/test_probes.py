"""The prober's thresholds and schedule, driven by a fake clock (no I/O)."""

from __future__ import annotations

from shoal._util import FakeClock
from shoal.agent._probes import Prober
from shoal.api import ExecAction, Probe


def _probe(**kw: int) -> Probe:
    return Probe(exec=ExecAction(command=["true"]), **kw)


def test_nothing_is_probed_before_the_initial_delay() -> None:
    clock = FakeClock()
    prober = Prober(
        _probe(initial_delay_seconds=5, period_seconds=2),
        started=clock.monotonic(),
        initial=False,
        clock=clock,
    )
    assert not prober.due()
    clock.advance(4.9)
    assert not prober.due()
    clock.advance(0.1)
    assert prober.due()
    prober.record(True)
    assert not prober.due()
    assert prober.next_due() == clock.monotonic() + 2
    clock.advance(2)
    assert prober.due()


def test_initial_delay_counts_from_the_container_start() -> None:
    clock = FakeClock()
    clock.advance(100)
    # A container adopted after running for a minute is probed at once.
    prober = Prober(
        _probe(initial_delay_seconds=30), started=clock.monotonic() - 60, initial=True, clock=clock
    )
    assert prober.due()


def test_readiness_needs_success_threshold_consecutive_successes() -> None:
    clock = FakeClock()
    prober = Prober(_probe(success_threshold=3), started=0, initial=False, clock=clock)
    assert prober.record(True) is False
    assert prober.record(True) is False
    assert prober.record(False) is False  # streak broken
    assert prober.record(True) is False
    assert prober.record(True) is False
    assert prober.result is False
    assert prober.record(True) is True
    assert prober.result is True


def test_failure_threshold_consecutive_failures_flip_the_result() -> None:
    clock = FakeClock()
    prober = Prober(_probe(failure_threshold=3), started=0, initial=True, clock=clock)
    assert [prober.record(False), prober.record(False)] == [False, False]
    assert prober.record(True) is False  # a success resets the count
    assert [prober.record(False), prober.record(False)] == [False, False]
    assert prober.result is True
    assert prober.record(False) is True
    assert prober.result is False
    assert prober.failures == 3
    assert prober.record(False) is False  # already failed: no second flip


def test_thresholds_below_one_act_as_one() -> None:
    prober = Prober(
        _probe(failure_threshold=0, success_threshold=0), started=0, initial=True, clock=FakeClock()
    )
    assert prober.record(False) is True
    assert prober.record(True) is True


def test_period_is_at_least_one_second() -> None:
    clock = FakeClock()
    prober = Prober(_probe(period_seconds=0), started=0, initial=True, clock=clock)
    prober.record(True)
    assert prober.next_due() == clock.monotonic() + 1
