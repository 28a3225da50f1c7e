"""Tasks the benchmark runs."""

import time

from django.tasks import task


@task
def noop():
    return None


@task
def stamp():
    """Returns the wall-clock time at its first line, for wake-up latency."""
    return time.time()
