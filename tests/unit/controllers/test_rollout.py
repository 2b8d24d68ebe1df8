"""The rollout arithmetic (shoal.controllers.rollout), checked against Kubernetes' rules."""

from __future__ import annotations

import pytest

from shoal.controllers import rollout
from shoal.controllers.rollout import Limits, RSInfo

# --- int-or-percent ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "total", "up", "expected"),
    [
        (3, 10, True, 3),
        (3, 10, False, 3),
        ("25%", 4, True, 1),
        ("25%", 4, False, 1),
        ("25%", 3, True, 1),  # 0.75 rounds up to 1
        ("25%", 3, False, 0),  # 0.75 rounds down to 0
        ("25%", 10, True, 3),
        ("25%", 10, False, 2),
        ("50%", 5, True, 3),
        ("50%", 5, False, 2),
        ("100%", 7, False, 7),
        ("0%", 7, True, 0),
        ("1%", 1, True, 1),
        ("1%", 1, False, 0),
        ("30%", 0, True, 0),
        ("12", 5, True, 12),  # a digit string is a plain number
    ],
)
def test_scaled_value(value: int | str, total: int, up: bool, expected: int) -> None:
    assert rollout.scaled_value(value, total, round_up=up) == expected


@pytest.mark.parametrize("bad", ["abc", "10 %x", "-5%", True])
def test_scaled_value_rejects_garbage(bad: int | str) -> None:
    with pytest.raises(ValueError):
        rollout.scaled_value(bad, 10, round_up=True)


def test_fenceposts_surge_rounds_up_unavailable_down() -> None:
    assert rollout.resolve_fenceposts("25%", "25%", 10) == (3, 2)
    assert rollout.resolve_fenceposts("25%", "25%", 3) == (1, 0)


def test_fenceposts_both_zero_makes_unavailable_one() -> None:
    assert rollout.resolve_fenceposts(0, 0, 5) == (0, 1)
    # Percentages that both round to zero count too.
    assert rollout.resolve_fenceposts("0%", "10%", 5) == (0, 1)


def test_rolling_limits_caps_unavailable_at_replicas() -> None:
    assert rollout.rolling_limits(2, 1, 5) == Limits(1, 2)


def test_rolling_limits_zero_replicas() -> None:
    assert rollout.rolling_limits(0, "25%", "25%") == Limits(0, 0)
    assert rollout.rolling_limits(0, 0, 0) == Limits(0, 0)


def test_rolling_limits_recreate_is_zero() -> None:
    assert rollout.rolling_limits(5, "50%", "50%", rolling=False) == Limits(0, 0)


# --- one step ---------------------------------------------------------------------------------


def test_new_rs_scales_up_within_surge() -> None:
    old = RSInfo("old", replicas=10, available=10, created=1)
    new = RSInfo("new", replicas=0, created=2)
    assert rollout.new_rs_target(10, Limits(3, 2), new, [old]) == 3


def test_new_rs_no_room_when_total_at_max() -> None:
    old = RSInfo("old", replicas=10, available=10, created=1)
    new = RSInfo("new", replicas=3, created=2)
    assert rollout.new_rs_target(10, Limits(3, 2), new, [old]) == 3


def test_new_rs_never_above_desired() -> None:
    new = RSInfo("new", replicas=2, created=2)
    assert rollout.new_rs_target(3, Limits(5, 0), new, []) == 3
    over = RSInfo("new", replicas=7, created=2)
    assert rollout.new_rs_target(3, Limits(1, 0), over, []) == 3


def test_old_rs_waits_while_new_pods_unavailable() -> None:
    old = RSInfo("old", replicas=3, available=3, created=1)
    new = RSInfo("new", replicas=1, available=0, created=2)
    assert rollout.old_rs_targets(3, Limits(1, 0), new, [old]) == {}


def test_old_rs_unhealthy_replicas_go_first() -> None:
    # Old RS has 2 of 4 unavailable: those can go without losing availability.
    old = RSInfo("old", replicas=4, available=2, created=1)
    new = RSInfo("new", replicas=1, available=0, created=2)
    # total 5, minAvailable 4-1=3, newUnavailable 1 -> maxScaledDown 1; cleanup takes 1.
    assert rollout.old_rs_targets(4, Limits(1, 1), new, [old]) == {"old": 3}


def test_old_rs_cleanup_not_limited_by_available_count() -> None:
    # Nothing available at all: unhealthy old replicas still get cleaned up, so a broken
    # old version cannot block the rollout forever.
    old = RSInfo("old", replicas=3, available=0, created=1)
    new = RSInfo("new", replicas=1, available=0, created=2)
    assert rollout.old_rs_targets(3, Limits(1, 1), new, [old]) == {"old": 2}


def test_old_rs_scale_down_oldest_first() -> None:
    a = RSInfo("a", replicas=2, available=2, created=1)
    b = RSInfo("b", replicas=2, available=2, created=2)
    new = RSInfo("new", replicas=2, available=2, created=3)
    # total 6, desired 4, unavailable 0 -> 2 can go, all from the oldest.
    assert rollout.old_rs_targets(4, Limits(2, 0), new, [b, a]) == {"a": 0}


def test_old_rs_scale_down_spans_replicasets() -> None:
    a = RSInfo("a", replicas=1, available=1, created=1)
    b = RSInfo("b", replicas=3, available=3, created=2)
    new = RSInfo("new", replicas=4, available=4, created=3)
    assert rollout.old_rs_targets(4, Limits(1, 1), new, [a, b]) == {"a": 0, "b": 0}


def test_available_above_spec_is_not_counted() -> None:
    # The old RS was just scaled 3 -> 1 but its 3 pods are still there; only 1 of them will
    # stay, so only 1 may count as available.
    old = RSInfo("old", replicas=1, available=1, created=1)  # callers cap available
    new = RSInfo("new", replicas=3, available=2, created=2)
    # total 4, min 3, new unavailable 1 -> maxScaledDown 0.
    assert rollout.old_rs_targets(3, Limits(1, 0), new, [old]) == {}


def test_rolling_step_scales_up_before_down() -> None:
    old = RSInfo("old", replicas=3, available=3, created=1)
    new = RSInfo("new", replicas=0, created=2)
    assert rollout.rolling_step(3, Limits(1, 1), new, [old]) == {"new": 1}


def _run_rollout(
    desired: int, limits: Limits, old_replicas: int
) -> tuple[list[tuple[int, int, int, int]], int]:
    """Simulate a rollout where every pod becomes available one sync after it exists.

    Returns the trajectory (old spec, old available, new spec, new available) after each
    step, and the minimum number of available pods observed.
    """
    old = RSInfo("old", replicas=old_replicas, available=old_replicas, created=1)
    new = RSInfo("new", replicas=0, available=0, created=2)
    # The new RS is created with the size of a first scale-up.
    new = RSInfo("new", replicas=rollout.new_rs_target(desired, limits, new, [old]), created=2)
    history = [(old.replicas, old.available, new.replicas, new.available)]
    min_available = old.available + new.available
    for _ in range(50):
        if rollout.rolling_complete(desired, new, [old]):
            break
        targets = rollout.rolling_step(desired, limits, new, [old])
        if not targets:
            # Nothing to do until pods become available: the agent marks them ready.
            new = RSInfo("new", replicas=new.replicas, available=new.replicas, created=2)
        else:
            if "new" in targets:
                new = RSInfo("new", replicas=targets["new"], available=new.available, created=2)
            if "old" in targets:
                old = RSInfo(
                    "old",
                    replicas=targets["old"],
                    available=min(old.available, targets["old"]),
                    created=1,
                )
        history.append((old.replicas, old.available, new.replicas, new.available))
        min_available = min(min_available, old.available + new.available)
        assert old.replicas + new.replicas <= desired + limits.surge
    return history, min_available


def test_three_replicas_25_percent_step_by_step() -> None:
    limits = rollout.rolling_limits(3, "25%", "25%")
    assert limits == Limits(surge=1, unavailable=0)
    history, min_available = _run_rollout(3, limits, 3)
    assert history == [
        (3, 3, 1, 0),  # new RS created with 1 (surge)
        (3, 3, 1, 1),  # its pod becomes available
        (2, 2, 1, 1),  # one old pod goes
        (2, 2, 2, 1),  # new grows
        (2, 2, 2, 2),
        (1, 1, 2, 2),
        (1, 1, 3, 2),
        (1, 1, 3, 3),
        (0, 0, 3, 3),
    ]
    assert min_available == 3


@pytest.mark.parametrize(
    ("desired", "surge", "unavailable"),
    [(4, "25%", "25%"), (10, "25%", "25%"), (10, 0, 3), (5, 5, 0), (7, "50%", "50%"), (1, 0, 1)],
)
def test_rollout_never_drops_below_min_available(
    desired: int, surge: int | str, unavailable: int | str
) -> None:
    limits = rollout.rolling_limits(desired, surge, unavailable)
    history, min_available = _run_rollout(desired, limits, desired)
    assert min_available >= desired - limits.unavailable
    assert history[-1][0] == 0 and history[-1][2] == desired


def test_rolling_complete() -> None:
    new = RSInfo("new", replicas=3, available=3)
    assert rollout.rolling_complete(3, new, [RSInfo("old", replicas=0)])
    assert not rollout.rolling_complete(3, new, [RSInfo("old", replicas=1, available=1)])
    assert not rollout.rolling_complete(3, RSInfo("new", replicas=3, available=2), [])


# --- recreate ---------------------------------------------------------------------------------


def test_recreate_phases() -> None:
    old = RSInfo("old", replicas=3, available=3, created=1)
    assert rollout.recreate_step(3, None, [old], True) == ("scale-down-old", {"old": 0})
    old0 = RSInfo("old", replicas=0, created=1)
    assert rollout.recreate_step(3, None, [old0], True) == ("wait-for-old-pods", {})
    assert rollout.recreate_step(3, None, [old0], False) == ("scale-up-new", {})
    new = RSInfo("new", replicas=0, created=2)
    assert rollout.recreate_step(3, new, [old0], False) == ("scale-up-new", {"new": 3})
    new3 = RSInfo("new", replicas=3, created=2)
    assert rollout.recreate_step(3, new3, [old0], False) == ("done", {})


# --- scaling events ---------------------------------------------------------------------------


def test_is_scaling_event() -> None:
    rs = RSInfo("a", replicas=3, desired_replicas=3)
    assert not rollout.is_scaling_event(3, rs, [])
    assert rollout.is_scaling_event(5, rs, [])
    # Inactive ReplicaSets and ones without the annotation do not count.
    assert not rollout.is_scaling_event(5, None, [RSInfo("b", replicas=0, desired_replicas=3)])
    assert not rollout.is_scaling_event(5, RSInfo("c", replicas=2), [])


def test_find_active_or_latest() -> None:
    a = RSInfo("a", replicas=0, created=1)
    b = RSInfo("b", replicas=0, created=2)
    assert rollout.find_active_or_latest(None, [a, b]) == b
    new = RSInfo("new", replicas=0, created=3)
    assert rollout.find_active_or_latest(new, [a, b]) == new
    a1 = RSInfo("a", replicas=1, created=1)
    assert rollout.find_active_or_latest(new, [a1, b]) == a1
    new1 = RSInfo("new", replicas=1, created=3)
    assert rollout.find_active_or_latest(new1, [a1]) is None
    assert rollout.find_active_or_latest(None, []) is None


def test_scale_single_active_takes_everything() -> None:
    new = RSInfo("new", replicas=3, available=3, desired_replicas=3, created=2)
    old = RSInfo("old", replicas=0, created=1)
    assert rollout.scale_targets(5, Limits(2, 1), new, [old]) == {"new": 5}


def test_scale_saturated_new_zeroes_old() -> None:
    new = RSInfo("new", replicas=5, available=5, desired_replicas=5, created=2)
    old = RSInfo("old", replicas=2, available=2, created=1)
    assert rollout.scale_targets(5, Limits(2, 1), new, [old]) == {"old": 0}


def test_proportional_scale_up_mid_rollout() -> None:
    # 10 replicas with surge 3 mid-rollout: old 8, new 5 (13 = 10 + 3). Scale to 20
    # (surge 5): 25 allowed, 12 to add, split 8:5 against the old size of 13.
    old = RSInfo("old", replicas=8, available=8, created=1, max_replicas=13, desired_replicas=10)
    new = RSInfo("new", replicas=5, available=0, created=2, max_replicas=13, desired_replicas=10)
    targets = rollout.scale_targets(20, Limits(5, 5), new, [old])
    assert targets == {"old": 15, "new": 10}
    assert sum(targets.values()) == 25


def test_proportional_scale_down_mid_rollout() -> None:
    old = RSInfo("old", replicas=8, available=8, created=1, max_replicas=13, desired_replicas=10)
    new = RSInfo("new", replicas=5, available=0, created=2, max_replicas=13, desired_replicas=10)
    # Down to 5 (surge 2 at 25%): 7 allowed, 6 to remove.
    targets = rollout.scale_targets(5, Limits(2, 1), new, [old])
    assert sum(targets.values()) == 7
    assert targets["old"] >= targets["new"]


def test_proportional_scale_to_zero() -> None:
    old = RSInfo("old", replicas=2, created=1, max_replicas=4)
    new = RSInfo("new", replicas=2, created=2, max_replicas=4)
    assert rollout.scale_targets(0, Limits(0, 0), new, [old]) == {"old": 0, "new": 0}


def test_proportional_leftover_goes_to_largest() -> None:
    a = RSInfo("a", replicas=1, created=1, max_replicas=3)
    b = RSInfo("b", replicas=1, created=2, max_replicas=3)
    c = RSInfo("c", replicas=1, created=3, max_replicas=3)
    # 3 -> allowed 4: fractions round to 0 each; the leftover 1 goes to the first in order
    # (equal sizes: the newest when scaling up).
    targets = rollout.scale_targets(4, Limits(0, 1), c, [a, b])
    assert targets == {"c": 2, "b": 1, "a": 1}


def test_recreate_scale_event_without_rolling_does_nothing_when_many_active() -> None:
    old = RSInfo("old", replicas=2, created=1)
    new = RSInfo("new", replicas=2, created=2)
    assert rollout.scale_targets(5, Limits(0, 0), new, [old], rolling=False) == {}


# --- history ----------------------------------------------------------------------------------


def test_history_deletes_oldest_revisions_beyond_limit() -> None:
    olds = [RSInfo(f"rs{i}", replicas=0, revision=i, created=i) for i in range(1, 6)]
    assert rollout.history_to_delete(olds, 2) == ["rs1", "rs2", "rs3"]
    assert rollout.history_to_delete(olds, 10) == []
    assert rollout.history_to_delete(olds, 0) == [f"rs{i}" for i in range(1, 6)]


def test_history_keeps_busy_or_unsettled_replicasets() -> None:
    olds = [
        RSInfo("scaled", replicas=1, revision=1),
        RSInfo("pods-left", replicas=0, actual=1, revision=2),
        RSInfo("unsettled", replicas=0, revision=3, settled=False),
        RSInfo("ok", replicas=0, revision=4),
    ]
    assert rollout.history_to_delete(olds, 0) == ["ok"]


def test_history_ignores_replicasets_being_deleted() -> None:
    olds = [
        RSInfo("going", replicas=0, revision=1, deleting=True),
        RSInfo("a", replicas=0, revision=2),
        RSInfo("b", replicas=0, revision=3),
    ]
    assert rollout.history_to_delete(olds, 1) == ["a"]
