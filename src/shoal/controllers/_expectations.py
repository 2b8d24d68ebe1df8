"""Expectations (Kubernetes' ``ControllerExpectations``): what a controller has just asked the
API server to do and has not yet seen come back through its informer.

Without them a controller that creates 3 pods and is woken again before its pod cache shows
them would create 3 more. While a key has unmet expectations the controller does not add or
remove pods for it; every create and delete it observes lowers the count. Expectations expire
after ``ttl`` so a missed event cannot wedge a controller forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal._util import Clock


@dataclass
class _Pending:
    adds: int = 0
    deletes: set[str] = field(default_factory=set)
    at: float = 0.0


class Expectations:
    def __init__(self, clock: Clock, ttl: float = 30.0) -> None:
        self._clock = clock
        self._ttl = ttl
        self._pending: dict[str, _Pending] = {}

    def satisfied(self, key: str) -> bool:
        p = self._pending.get(key)
        if p is None:
            return True
        if (p.adds <= 0 and not p.deletes) or self._clock.monotonic() - p.at > self._ttl:
            del self._pending[key]
            return True
        return False

    def expect_creations(self, key: str, count: int) -> None:
        p = self._pending.setdefault(key, _Pending())
        p.adds += count
        p.at = self._clock.monotonic()

    def expect_deletions(self, key: str, pod_keys: list[str]) -> None:
        p = self._pending.setdefault(key, _Pending())
        p.deletes.update(pod_keys)
        p.at = self._clock.monotonic()

    def creation_observed(self, key: str, count: int = 1) -> None:
        p = self._pending.get(key)
        if p is not None and p.adds > 0:
            p.adds = max(0, p.adds - count)

    def deletion_observed(self, key: str, pod_key: str) -> None:
        p = self._pending.get(key)
        if p is not None:
            p.deletes.discard(pod_key)

    def forget(self, key: str) -> None:
        self._pending.pop(key, None)
