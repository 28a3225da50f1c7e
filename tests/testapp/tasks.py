"""Tasks the worker tests run; the worker registers them by autodiscovery."""

import asyncio
import os
import threading
import time
from pathlib import Path

from django.tasks import task


@task
def add(a, b):
    return a + b


@task(queue_name="email", priority=5)
def send_email(to):
    return f"sent to {to}"


@task(max_attempts=2)
def always_fails():
    raise ValueError("boom")


@task(takes_context=True, max_attempts=5)
def flaky(context, fail_times):
    """Fails on its first ``fail_times`` attempts."""
    if context.attempt <= fail_times:
        raise ConnectionError(f"attempt {context.attempt} failed")
    return context.attempt


@task
def sleepy(seconds):
    time.sleep(seconds)
    return seconds


@task
def stream(n):
    for i in range(n):
        yield {"step": i}
    return n


@task(timeout=0.5, max_attempts=2)
def busy_loop(seconds):
    """Pure-Python work that never returns in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return "finished"


@task
def returns_object():
    return object()


@task
def returns_char(code):
    """A result holding chr(code): a character PostgreSQL may not be able to store."""
    return {"text": f"a{chr(code)}b"}


@task(max_attempts=1)
def raises_char(code):
    raise ValueError(f"bad {chr(code)} here")


@task
async def async_add(a, b):
    await asyncio.sleep(0.01)
    return a + b


@task(unique=True)
def unique_add(a, b):
    return a + b


@task
def record(ledger, label, pause=0.0):
    """Append one line per execution to ``ledger`` (a file), to count real runs."""
    time.sleep(pause)
    with open(ledger, "a") as f:
        f.write(f"{label} {os.getpid()}\n")
    return label


@task
def wait_for_file(path, timeout=60):
    """Block until ``path`` exists (the test creates it to let the task finish)."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)
    return "released"


@task
def stream_until_file(path, timeout=60):
    """Yield once, then wait for ``path`` before yielding again and finishing."""
    yield "started"
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)
    yield "finished"
    return 2


@task(timeout=1, max_attempts=2)
def sleep_in_c(seconds):
    """Blocks in C (time.sleep): only process isolation can stop it at its timeout."""
    time.sleep(seconds)
    return "woke up"


@task(max_attempts=2)
def exit_hard(code):
    """Ends its own process without a word, like a crash."""
    os._exit(code)


@task
def report_pid(seconds=0.0):
    time.sleep(seconds)
    return os.getpid()


_ledger_connections = threading.local()


def _ledger(label):
    """Record one execution on an autocommit connection of its own (one per runner thread),
    so the record stands whatever then happens to the job or its worker."""
    import psycopg

    from pgqueue.drivers.postgresql import connection_kwargs

    conn = getattr(_ledger_connections, "conn", None)
    if conn is None or conn.closed:
        conn = _ledger_connections.conn = psycopg.connect(
            **connection_kwargs("default"), autocommit=True
        )
    conn.execute("INSERT INTO fault_ledger (label, pid) VALUES (%s, %s)", (label, os.getpid()))


@task
def ledger_record(label):
    _ledger(label)
    return label


@task
def ledger_wait(label, path, timeout=60):
    """Record the execution, then block until ``path`` exists."""
    _ledger(label)
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)
    return label
