"""Reconnect delays grow, stay within their cap however long an outage lasts, and reset."""

from pgqueue.backoff import Backoff


def test_delays_double_with_jitter_and_stay_capped_through_a_long_outage():
    backoff = Backoff(base=0.1, cap=5.0)
    delays = [backoff.next_delay() for _ in range(5000)]
    for n, delay in enumerate(delays[:5]):
        nominal = 0.1 * 2**n
        assert nominal / 2 <= delay <= nominal
    assert all(2.5 <= delay <= 5.0 for delay in delays[10:])
    backoff.reset()
    assert 0.05 <= backoff.next_delay() <= 0.1
