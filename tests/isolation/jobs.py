"""Tasks the isolation tests run, allowed by path in tests/isolation/settings.py.

They are @task objects outside any installed app's ``tasks`` module, so a worker
learns of them (and of their timeouts) only by importing them through
ALLOWED_TASKS when a job names one.
"""

import asyncio
import ctypes
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

from django.tasks import task


@task
def report_pid(seconds=0.0):
    time.sleep(seconds)
    return os.getpid()


@task
async def async_pid():
    await asyncio.sleep(0.01)
    return os.getpid()


@task(takes_context=True)
def attempt_number(context):
    return context.attempt


@task(timeout=1, max_attempts=2)
def sleep_in_c(seconds):
    """Blocks in C (time.sleep): only a process kill stops it at its timeout."""
    time.sleep(seconds)
    return "woke up"


@task(timeout=1, max_attempts=1)
def spin():
    """An infinite pure-Python loop."""
    while True:
        pass


@task(max_attempts=2)
def die(how, code=3):
    """End this process without a word: os._exit, SIGKILL to itself, or a segfault."""
    if how == "exit":
        os._exit(code)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        ctypes.string_at(0)
    raise ValueError(f"unknown way to die: {how!r}")


@task
def stream(n):
    for i in range(n):
        yield {"step": i}
    return n


@task
def wait_for_file(path, timeout=60):
    """Block until ``path`` exists (the test creates it to let the task finish); return the PID."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)
    return os.getpid()


@task
def rendezvous(mine, other, timeout=30):
    """Create ``mine``, then wait for ``other``: two of these finish only if they run at once."""
    Path(mine).touch()
    deadline = time.monotonic() + timeout
    while not Path(other).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{other} never appeared: the other job did not run at the same time"
            )
        time.sleep(0.02)
    return os.getpid()


@task(timeout=1, max_attempts=1)
def hang_with_a_subprocess(pid_file):
    """Start a long subprocess of its own, then hang; the timeout must stop both."""
    sleeper = subprocess.Popen(["sleep", "1000"])
    Path(pid_file).write_text(str(sleeper.pid))
    time.sleep(1000)
