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


@task
def sleep_for(seconds):
    """Keeps one of the worker's slots busy, for wake-up latency on a busy worker."""
    time.sleep(seconds)
