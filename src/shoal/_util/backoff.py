"""Exponential back-off with a cap, as used for restarts and reconnects."""

from __future__ import annotations

import random


class Backoff:
    """``next()`` returns initial, 2*initial, ... up to ``cap``; ``reset()`` starts over.

    ``jitter`` spreads each delay by up to that fraction so many clients do not retry in step.
    """

    def __init__(self, initial: float, cap: float, factor: float = 2.0, jitter: float = 0.0):
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self._current = 0.0

    def next(self) -> float:
        self._current = (
            self.initial if self._current == 0 else min(self.cap, self._current * self.factor)
        )
        if self.jitter:
            return self._current * (1 + random.uniform(-self.jitter, self.jitter))
        return self._current

    def peek(self) -> float:
        """The delay ``next()`` would return, without advancing."""
        return self.initial if self._current == 0 else min(self.cap, self._current * self.factor)

    def reset(self) -> None:
        self._current = 0.0
