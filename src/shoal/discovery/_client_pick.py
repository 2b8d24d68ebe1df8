"""Pick strategies for client-side load balancing: pure, small and pluggable.

A strategy is anything with ``pick(instances, in_flight) -> instance`` (the :class:`Strategy`
protocol). It gets the current healthy instances (sorted by node and id, never empty) and the
number of requests in flight per :attr:`ServiceInstance.key`, and does no I/O, so it is tested
with plain lists and a seeded random generator.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Protocol

from shoal.discovery._client_instances import ServiceInstance


class Strategy(Protocol):
    """Chooses one of ``instances``; ``in_flight`` counts open requests by instance key.

    ``instances`` is never empty when :class:`~shoal.discovery.client.Discovery` calls it."""

    def pick(
        self, instances: Sequence[ServiceInstance], in_flight: Mapping[str, int]
    ) -> ServiceInstance: ...


def _nonempty(instances: Sequence[ServiceInstance]) -> None:
    if not instances:
        raise ValueError("no instances to pick from")


class RoundRobin:
    """Each instance in turn. The position is a counter modulo the list's length, so when an
    instance comes or goes the rotation carries on rather than restarting at the first."""

    def __init__(self) -> None:
        self._next = 0

    def pick(
        self, instances: Sequence[ServiceInstance], in_flight: Mapping[str, int]
    ) -> ServiceInstance:
        _nonempty(instances)
        chosen = instances[self._next % len(instances)]
        self._next = (self._next + 1) % (1 << 30)
        return chosen


class Random:
    """Uniformly at random; pass ``seed`` for a reproducible sequence."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def pick(
        self, instances: Sequence[ServiceInstance], in_flight: Mapping[str, int]
    ) -> ServiceInstance:
        _nonempty(instances)
        return instances[self._rng.randrange(len(instances))]


class LeastRequests:
    """The instance with the fewest requests in flight, ties broken at random (so idle
    instances share the load instead of the first one taking it all).

    With ``choices`` set (2 is "power of two choices") it compares only that many instances
    drawn at random: cheaper for long lists and less herd-like when many clients share stale
    counts, at the price of sometimes missing the global minimum."""

    def __init__(self, seed: int | None = None, *, choices: int | None = None) -> None:
        if choices is not None and choices < 1:
            raise ValueError(f"LeastRequests choices must be at least 1, got {choices}")
        self._rng = random.Random(seed)
        self._choices = choices

    def pick(
        self, instances: Sequence[ServiceInstance], in_flight: Mapping[str, int]
    ) -> ServiceInstance:
        _nonempty(instances)
        pool: Sequence[ServiceInstance] = instances
        if self._choices is not None and self._choices < len(instances):
            pool = self._rng.sample(list(instances), self._choices)
        low = min(in_flight.get(i.key, 0) for i in pool)
        tied = [i for i in pool if in_flight.get(i.key, 0) == low]
        return tied[self._rng.randrange(len(tied))]
