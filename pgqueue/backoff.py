"""Capped, jittered exponential delays for reconnecting and retrying database calls."""

import random


class Backoff:
    """Delays of ``base * 2**n`` seconds, capped, each drawn from [delay/2, delay]."""

    def __init__(self, base: float = 0.1, cap: float = 10.0):
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next try; grows with each call until reset()."""
        delay = min(self.cap, self.base * 2**self.failures)
        self.failures += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0
