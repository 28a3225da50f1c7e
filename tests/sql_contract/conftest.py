"""Helpers for tests of the SQL functions themselves, through raw psycopg connections.

Every helper calls the public SQL API the way another service would: named
notation for enqueue(), JSON text for enqueue_many(), the worker protocol
functions with the worker id and attempt they are fenced by.
"""

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

#: An error object as a worker passes it to fail_v1.
ERROR = {
    "exception_class_path": "builtins.ValueError",
    "traceback": 'Traceback (most recent call last):\n  File "x.py"\nValueError: boom\n',
    "message": "boom",
}

#: The SQL type of each enqueue() parameter, so that None is sent as a typed NULL.
_ENQUEUE_TYPES = {
    "task_path": "text",
    "args": "jsonb",
    "kwargs": "jsonb",
    "queue_name": "text",
    "priority": "integer",
    "run_after": "timestamptz",
    "max_attempts": "integer",
    "unique_key": "text",
}


def scalar(conn: psycopg.Connection, sql: str, *params: Any) -> Any:
    """The single value a statement returns."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row[0]


def _as_dicts(cur: psycopg.Cursor) -> list[dict[str, Any]]:
    names = [c.name for c in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def job(conn: psycopg.Connection, job_id: int) -> dict[str, Any]:
    """One pgqueue_job row as a dict."""
    found = _as_dicts(conn.execute("SELECT * FROM pgqueue_job WHERE id = %s", (job_id,)))
    assert found, f"job {job_id} does not exist"
    return found[0]


def count_jobs(conn: psycopg.Connection) -> int:
    """How many rows pgqueue_job holds."""
    return scalar(conn, "SELECT count(*) FROM pgqueue_job")


def empty_tables(conn: psycopg.Connection) -> None:
    """Start a subtest from empty tables, as every test starts."""
    conn.execute("TRUNCATE pgqueue_job, pgqueue_worker, pgqueue_queue")


def enqueue(conn: psycopg.Connection, task_path: Any = "app.tasks.work", **named: Any) -> int:
    """Call pgqueue.enqueue with named notation; JSON values are passed as JSON text."""
    values = {"task_path": task_path, **named}
    parts = [f"%(task_path)s::{_ENQUEUE_TYPES['task_path']}"] + [
        f"{name} => %({name})s::{_ENQUEUE_TYPES[name]}" for name in named
    ]
    row = conn.execute(f"SELECT pgqueue.enqueue({', '.join(parts)})", values).fetchone()
    assert row is not None
    return row[0]


def enqueue_many(conn: psycopg.Connection, jobs: Any) -> list[int]:
    """Call pgqueue.enqueue_many with ``jobs`` serialised to JSON."""
    return scalar(conn, "SELECT pgqueue.enqueue_many(%s::jsonb)", json.dumps(jobs))


def register(conn: psycopg.Connection, selectors: tuple[str, ...] = ("*",)) -> str:
    """Register a worker and return its id (as text)."""
    return str(
        scalar(conn, "SELECT pgqueue.register_worker_v1('test-host', 1, %s, 8)", list(selectors))
    )


def claim(
    conn: psycopg.Connection, worker: str, selectors: tuple[str, ...] = ("*",), limit: int = 10
) -> list[dict[str, Any]]:
    """Claim jobs for a worker; each claimed job as a dict, in claim order."""
    return _as_dicts(
        conn.execute("SELECT * FROM pgqueue.claim_v1(%s, %s, %s)", (worker, list(selectors), limit))
    )


def claim_ids(
    conn: psycopg.Connection, worker: str, selectors: tuple[str, ...] = ("*",), limit: int = 10
) -> list[int]:
    """The ids claim_v1 returns, in claim order."""
    return [c["id"] for c in claim(conn, worker, selectors, limit)]


def complete(
    conn: psycopg.Connection, worker: str, job_id: int, attempt: int, result: Any = None
) -> list[int]:
    """complete_v1 for one job; the ids it completed."""
    return scalar(
        conn,
        "SELECT pgqueue.complete_v1(%s, %s, %s, ARRAY[%s::jsonb])",
        worker,
        [job_id],
        [attempt],
        json.dumps(result),
    )


def fail(
    conn: psycopg.Connection,
    worker: str,
    job_id: int,
    attempt: int,
    *,
    retry: bool = True,
    base: str = "1 second",
    maximum: str = "1 hour",
    error: dict[str, Any] | None = None,
) -> str | None:
    """fail_v1 for one job; the job's new status, or None when the lease was lost."""
    return scalar(
        conn,
        "SELECT pgqueue.fail_v1(%s, %s, %s, %s::jsonb, %s, %s::interval, %s::interval)",
        worker,
        job_id,
        attempt,
        json.dumps(error or ERROR),
        retry,
        base,
        maximum,
    )


def release(conn: psycopg.Connection, worker: str, job_id: int, attempt: int) -> list[int]:
    """release_v1 for one job; the ids it released."""
    return scalar(conn, "SELECT pgqueue.release_v1(%s, %s, %s)", worker, [job_id], [attempt])


def append_output(
    conn: psycopg.Connection, worker: str, job_id: int, attempt: int, values: Any
) -> bool:
    """append_output_v1; False when the lease was lost."""
    return scalar(
        conn,
        "SELECT pgqueue.append_output_v1(%s, %s, %s, %s::jsonb)",
        worker,
        job_id,
        attempt,
        json.dumps(values),
    )


def make_due(conn: psycopg.Connection, job_id: int) -> None:
    """Move a job's run_after an hour into the past (a retry's backoff is over)."""
    conn.execute(
        "UPDATE pgqueue_job SET run_after = now() - interval '1 hour' WHERE id = %s", (job_id,)
    )


def make_stale(conn: psycopg.Connection, worker: str, *job_ids: int) -> None:
    """Age a worker's heartbeat, and the claim time of the given jobs, by an hour."""
    conn.execute(
        "UPDATE pgqueue_worker SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
        (worker,),
    )
    conn.execute(
        "UPDATE pgqueue_job SET last_attempted_at = now() - interval '1 hour' WHERE id = ANY(%s)",
        (list(job_ids),),
    )


def reap(conn: psycopg.Connection, threshold: str | None = "1 minute") -> int:
    """reap_v1; how many jobs it requeued or failed."""
    return scalar(conn, "SELECT pgqueue.reap_v1(%s::interval)", threshold)


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, message: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something true, and return that; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(0.02)


def wait_until_blocked(observer: psycopg.Connection, blocked: psycopg.Connection) -> None:
    """Wait until ``blocked``'s backend waits for a lock (its statement is in a lock queue)."""
    pid = blocked.info.backend_pid
    wait_until(
        lambda: scalar(
            observer,
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
            pid,
        ),
        message=f"backend {pid} to wait for a lock",
    )


def run_in_threads(targets: list[Callable[[], Any]], timeout: float = 60) -> list[Any]:
    """Run each callable in its own thread, started together; return their results in order."""
    barrier = threading.Barrier(len(targets))
    results: list[Any] = [None] * len(targets)
    errors: list[BaseException] = []

    def run(index: int, target: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[index] = target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def worker(pg) -> str:
    """A registered worker taking every queue."""
    return register(pg)
