"""Capped, jittered exponential delays for reconnecting and retrying."""

import random

# 2**100 times any positive base is beyond every sensible cap; stopping the exponent
# there keeps the arithmetic finite however many failures there have been.
_MAX_EXPONENT = 100


def jittered_delay(base: float, cap: float, exponent: int) -> float:
    """``min(cap, base * 2**exponent)`` seconds, drawn from [delay/2, delay].

    The same formula as pgqueue.fail_v1's retry delay, so SQLite retries like PostgreSQL.
    """
    delay = min(cap, base * 2 ** min(max(exponent, 0), _MAX_EXPONENT))
    return delay * (0.5 + random.random() / 2)


class Backoff:
    """Delays of ``base * 2**n`` seconds, capped, each drawn from [delay/2, delay]."""

    def __init__(self, base: float = 0.1, cap: float = 10.0):
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next try; grows with each call until reset()."""
        delay = jittered_delay(self.base, self.cap, self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
