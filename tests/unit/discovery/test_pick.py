"""Pick strategies of shoal.discovery.client, as pure functions of (instances, in-flight)."""

from __future__ import annotations

from collections import Counter

import pytest

from shoal.discovery.client import LeastRequests, Random, RoundRobin, ServiceInstance


def _insts(n: int, node: str = "n1") -> list[ServiceInstance]:
    return [ServiceInstance(f"s-{i}", "s", "10.0.0.1", 8000 + i, node=node) for i in range(n)]


def test_round_robin_cycles_and_carries_on_when_the_list_changes() -> None:
    insts = _insts(3)
    rr = RoundRobin()
    assert [rr.pick(insts, {}).id for _ in range(7)] == [
        "s-0", "s-1", "s-2", "s-0", "s-1", "s-2", "s-0"
    ]  # fmt: skip
    # One instance leaves: the rotation continues over the rest, every one still chosen.
    fewer = insts[:2]
    assert Counter(rr.pick(fewer, {}).id for _ in range(10)) == {"s-0": 5, "s-1": 5}


def test_random_is_reproducible_with_a_seed_and_covers_all() -> None:
    insts = _insts(4)
    a, b = Random(seed=7), Random(seed=7)
    seq_a = [a.pick(insts, {}).id for _ in range(50)]
    assert seq_a == [b.pick(insts, {}).id for _ in range(50)]
    rnd = Random(seed=1)
    counts = Counter(rnd.pick(insts, {}).id for _ in range(2000))
    assert set(counts) == {i.id for i in insts}
    assert min(counts.values()) > 400  # about 500 each


def test_least_requests_prefers_the_idle_and_spreads_ties() -> None:
    insts = _insts(3)
    keys = [i.key for i in insts]
    lr = LeastRequests(seed=3)
    assert lr.pick(insts, {keys[0]: 2, keys[1]: 1, keys[2]: 5}).id == "s-1"
    assert lr.pick(insts, {keys[0]: 1, keys[2]: 1}).id == "s-1"  # absent means idle
    tied = Counter(lr.pick(insts, {keys[1]: 4}).id for _ in range(400))
    assert set(tied) == {"s-0", "s-2"} and min(tied.values()) > 150


def test_least_requests_keys_by_node_and_id() -> None:
    a, b = _insts(1, node="n1")[0], _insts(1, node="n2")[0]
    assert a.id == b.id and a.key != b.key
    assert LeastRequests(seed=0).pick([a, b], {a.key: 3}).node == "n2"


def test_power_of_two_choices_never_picks_the_busiest_of_its_sample() -> None:
    insts = _insts(10)
    busy = {i.key: n for n, i in enumerate(insts)}  # s-9 is the busiest
    p2c = LeastRequests(seed=5, choices=2)
    picks = Counter(p2c.pick(insts, busy).id for _ in range(2000))
    assert "s-9" not in picks  # it can only win a sample against a less busy one
    assert picks["s-0"] > picks["s-8"]
    with pytest.raises(ValueError, match="choices must be at least 1"):
        LeastRequests(choices=0)


@pytest.mark.parametrize("strategy", [RoundRobin(), Random(seed=0), LeastRequests(seed=0)])
def test_empty_list_is_a_clear_error(strategy: RoundRobin | Random | LeastRequests) -> None:
    with pytest.raises(ValueError, match="no instances to pick from"):
        strategy.pick([], {})
