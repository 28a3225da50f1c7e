"""PostgreSQL driver: every operation is one call of a pgqueue.* function from sql/.

Enqueue and operator calls run on the caller's Django connection, so they join its
transaction. Worker calls run on a psycopg-pool pool of autocommit connections
built from the same DATABASES entry; the pool checks a connection before lending
it, so a terminated backend is replaced instead of failing a job.
"""

from __future__ import annotations

import json
import logging
import select
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
import psycopg.sql
import psycopg.types.json
from django.db import DatabaseError, connections, transaction
from psycopg_pool import ConnectionPool

from pgqueue.drivers.base import ClaimedJob, Driver, Enqueued, NewJob
from pgqueue.exceptions import JobNotFound, WorkerNotRegistered
from pgqueue.models import Job

logger = logging.getLogger("pgqueue.worker")

# now() is the transaction's start, which is what enqueue stores as enqueued_at.
_ENQUEUE = """
SELECT pgqueue.enqueue(
    %s, %s::jsonb, %s::jsonb, %s, %s,
    coalesce(%s::timestamptz, statement_timestamp() + %s::interval), %s, %s), now()
"""
_ENQUEUE_MANY = "SELECT pgqueue.enqueue_many(%s::jsonb), now()"
_CLAIM = "SELECT * FROM pgqueue.claim_v1(%s, %s, %s)"
# Results travel as one JSON array, serialised in one call, and are split apart in SQL.
_COMPLETE = """
SELECT pgqueue.complete_v1(
    %s, %s, %s, ARRAY(SELECT r FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(r, n) ORDER BY n))
"""
_FAIL = "SELECT pgqueue.fail_v1(%s, %s, %s, %s::jsonb, %s, %s, %s)"
_RELEASE = "SELECT pgqueue.release_v1(%s, %s, %s)"
_APPEND_OUTPUT = "SELECT pgqueue.append_output_v1(%s, %s, %s, %s::jsonb)"
_REGISTER = "SELECT pgqueue.register_worker_v1(%s, %s, %s, %s)"
_HEARTBEAT = "SELECT pgqueue.heartbeat_v1(%s)"
_DEREGISTER = "SELECT pgqueue.deregister_worker_v1(%s)"
_REAP = "SELECT pgqueue.reap_v1(%s)"
_NEXT_RUN_AFTER = "SELECT pgqueue.next_run_after_v1(%s)"
_CANCEL = "SELECT pgqueue.cancel(%s)"
_RETRY = "SELECT pgqueue.retry(%s, %s)"
_PAUSE = "SELECT pgqueue.pause_queue(%s)"
_RESUME = "SELECT pgqueue.resume_queue(%s)"
_PRUNE = "SELECT pgqueue.prune(%s, %s)"
_DATABASE_NOW = "SELECT statement_timestamp()"
# Maintenance of the job table: the statistics collector's dead-row estimate, and a
# VACUUM that never waits for another one (SKIP_LOCKED) and always cleans the indexes,
# since the dead entries at the head of the ready index are what slows claims down.
_DEAD_ROWS = """
SELECT coalesce(s.n_dead_tup, 0), pg_has_role(c.relowner, 'USAGE')
  FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
 WHERE c.oid = %s::regclass
"""
_VACUUM = "VACUUM (INDEX_CLEANUP ON, SKIP_LOCKED) {}"

#: The LISTEN channel; versioned with the SQL API that sends on it.
NOTIFY_CHANNEL = "pgqueue_v1"


def connection_kwargs(alias: str) -> dict[str, Any]:
    """psycopg.connect() keywords for a Django database alias (the same server, user and options)."""
    params = connections[alias].get_connection_params()
    return {
        k: v
        for k, v in params.items()
        if k not in ("cursor_factory", "context", "prepare_threshold")
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)


_json_decoder = json.JSONDecoder()


def _load_json(data: bytes) -> Any:
    """jsonb column values as the worker reads them, most often '[]' or '{}' (a job's
    errors, kwargs, args): those skip the decoder, the rest skip json.loads's encoding
    detection. About a quarter of the CPU a worker spends reading claimed jobs."""
    if data == b"[]":
        return []
    if data == b"{}":
        return {}
    return _json_decoder.decode(data.decode())


def _configure_worker_connection(conn: psycopg.Connection) -> None:
    psycopg.types.json.set_json_loads(_load_json, conn)


def _split_run_after(
    run_after: datetime | timedelta | None,
) -> tuple[datetime | None, timedelta | None]:
    if isinstance(run_after, timedelta):
        return None, run_after
    return run_after, None


#: A pooled connection that sat idle longer than this is pinged before it is lent out.
PING_IF_IDLE_FOR = 1.0


class _PingIfIdle:
    """The pool's check and reset callbacks: ping a connection only when it may be dead.

    A ping on every checkout doubled the round trips of a busy worker. So a connection
    is pinged when it sat idle for a while (a server restart or a cut link may have
    passed unnoticed), or when its socket has something to read although no statement
    is running: a terminated backend says goodbye (or closes) at once, and lending that
    connection out would fail the call, a job's output among them.
    """

    def __init__(self) -> None:
        self._returned_at: weakref.WeakKeyDictionary[psycopg.Connection, float] = (
            weakref.WeakKeyDictionary()
        )

    def returned(self, conn: psycopg.Connection) -> None:
        self._returned_at[conn] = time.monotonic()

    def check(self, conn: psycopg.Connection) -> None:
        returned_at = self._returned_at.get(conn)
        if (
            returned_at is None
            or time.monotonic() - returned_at > PING_IF_IDLE_FOR
            or select.select([conn.fileno()], [], [], 0)[0]
        ):
            ConnectionPool.check_connection(conn)


class PostgresDriver(Driver):
    """Queue operations through the pgqueue.* SQL functions."""

    supports_notify = True

    def __init__(self, alias: str, *, pool_size: int = 4):
        super().__init__(alias)
        self._pool_size = pool_size
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()
        self._warned_vacuum = False
        self._ping_if_idle = _PingIfIdle()

    # Connections -----------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool:
        """The worker-side pool, opened on first use."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    kwargs={**connection_kwargs(self.alias), "autocommit": True},
                    min_size=1,
                    max_size=self._pool_size,
                    configure=_configure_worker_connection,
                    check=self._ping_if_idle.check,
                    reset=self._ping_if_idle.returned,
                    # Wait this long for a connection, then raise PoolTimeout: callers retry
                    # with backoff, and a stopping worker is not held up by a dead database.
                    timeout=5.0,
                    name=f"pgqueue-{self.alias}",
                    open=True,
                )
            return self._pool

    @contextmanager
    def _worker_cursor(self) -> Iterator[psycopg.Cursor]:
        with self.pool.connection() as conn, conn.cursor() as cursor:
            yield cursor

    def _worker_value(self, sql: str, params: tuple) -> Any:
        with self._worker_cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()[0]

    def _django_value(self, sql: str, params: tuple) -> Any:
        with connections[self.alias].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()[0]

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    # Enqueue side ------------------------------------------------------------

    def enqueue(self, job: NewJob) -> Enqueued:
        run_at, delay = _split_run_after(job.run_after)
        with connections[self.alias].cursor() as cursor:
            cursor.execute(
                _ENQUEUE,
                (
                    job.task_path,
                    _dumps(job.args),
                    _dumps(job.kwargs),
                    job.queue_name,
                    job.priority,
                    run_at,
                    delay,
                    job.max_attempts,
                    job.unique_key,
                ),
            )
            job_id, enqueued_at = cursor.fetchone()
        return Enqueued(id=job_id, enqueued_at=enqueued_at)

    def enqueue_many(self, jobs: list[NewJob]) -> list[Enqueued]:
        if not jobs:
            return []
        with connections[self.alias].cursor() as cursor:
            db_now = None
            if any(isinstance(job.run_after, timedelta) for job in jobs):
                cursor.execute(_DATABASE_NOW)
                db_now = cursor.fetchone()[0]
            payload = []
            for job in jobs:
                item: dict[str, Any] = {
                    "task_path": job.task_path,
                    "args": job.args,
                    "kwargs": job.kwargs,
                    "queue_name": job.queue_name,
                    "priority": job.priority,
                }
                run_after = job.run_after
                if isinstance(run_after, timedelta):
                    run_after = db_now + run_after
                if run_after is not None:
                    item["run_after"] = run_after.isoformat()
                if job.max_attempts is not None:
                    item["max_attempts"] = job.max_attempts
                if job.unique_key is not None:
                    item["unique_key"] = job.unique_key
                payload.append(item)
            cursor.execute(_ENQUEUE_MANY, (_dumps(payload),))
            ids, enqueued_at = cursor.fetchone()
        return [Enqueued(id=job_id, enqueued_at=enqueued_at) for job_id in ids]

    # Worker side ---------------------------------------------------------------

    def register_worker(
        self, hostname: str, pid: int, selectors: list[str], concurrency: int
    ) -> str:
        return str(self._worker_value(_REGISTER, (hostname, pid, selectors, concurrency)))

    def heartbeat(self, worker_id: str) -> bool:
        return self._worker_value(_HEARTBEAT, (worker_id,))

    def deregister_worker(self, worker_id: str) -> int:
        return self._worker_value(_DEREGISTER, (worker_id,))

    def claim(self, worker_id: str, selectors: list[str], limit: int) -> list[ClaimedJob]:
        with self._worker_cursor() as cursor:
            try:
                cursor.execute(_CLAIM, (worker_id, selectors, limit))
            except psycopg.errors.NoDataFound as exc:
                raise WorkerNotRegistered(str(exc)) from exc
            rows = cursor.fetchall()
        return [
            ClaimedJob(
                id=row[0],
                task_path=row[1],
                args=row[2],
                kwargs=row[3],
                queue_name=row[4],
                priority=row[5],
                run_after=row[6],
                enqueued_at=row[7],
                started_at=row[8],
                attempt=row[9],
                max_attempts=row[10],
                worker_ids=row[11],
                errors=row[12],
            )
            for row in rows
        ]

    def complete(self, worker_id: str, outcomes: list[tuple[int, int, Any]]) -> set[int]:
        done = self._worker_value(
            _COMPLETE,
            (
                worker_id,
                [job_id for job_id, _, _ in outcomes],
                [attempt for _, attempt, _ in outcomes],
                _dumps([result for _, _, result in outcomes]),
            ),
        )
        return set(done)

    def fail(
        self,
        worker_id: str,
        job_id: int,
        attempt: int,
        error: dict[str, Any],
        *,
        retry: bool,
        backoff_base: float,
        backoff_max: float,
    ) -> str | None:
        return self._worker_value(
            _FAIL,
            (
                worker_id,
                job_id,
                attempt,
                _dumps(error),
                retry,
                timedelta(seconds=backoff_base),
                timedelta(seconds=backoff_max),
            ),
        )

    def release(self, worker_id: str, jobs: list[tuple[int, int]]) -> set[int]:
        released = self._worker_value(
            _RELEASE, (worker_id, [job_id for job_id, _ in jobs], [attempt for _, attempt in jobs])
        )
        return set(released)

    def append_output(self, worker_id: str, job_id: int, attempt: int, values: list[Any]) -> bool:
        return self._worker_value(_APPEND_OUTPUT, (worker_id, job_id, attempt, _dumps(values)))

    def reap(self, orphan_after: float) -> int:
        return self._worker_value(_REAP, (timedelta(seconds=orphan_after),))

    def next_run_after(self, selectors: list[str]) -> datetime | None:
        return self._worker_value(_NEXT_RUN_AFTER, (selectors,))

    def prune(self, older_than: float, max_jobs: int | None = None) -> int:
        return self._worker_value(_PRUNE, (timedelta(seconds=older_than), max_jobs))

    def vacuum_if_bloated(self, dead_rows: int) -> int | None:
        table = Job._meta.db_table
        with self.pool.connection() as conn:
            dead, may_vacuum = conn.execute(_DEAD_ROWS, (table,)).fetchone()
            if dead < dead_rows:
                return None
            if not may_vacuum:
                if not self._warned_vacuum:
                    self._warned_vacuum = True
                    logger.warning(
                        "cannot vacuum %s: this role does not own it; autovacuum must keep up "
                        "(or set VACUUM_THRESHOLD to 0 to silence this)",
                        table,
                    )
                return None
            conn.execute(psycopg.sql.SQL(_VACUUM).format(psycopg.sql.Identifier(table)))
            return dead

    # Operator side -------------------------------------------------------------

    def cancel(self, job_id: int) -> bool:
        return self._operator(_CANCEL, (job_id,))

    def retry(self, job_id: int, extra_attempts: int = 1) -> bool:
        return self._operator(_RETRY, (job_id, extra_attempts))

    def pause_queue(self, queue_name: str) -> None:
        self._django_value(_PAUSE, (queue_name,))

    def resume_queue(self, queue_name: str) -> None:
        self._django_value(_RESUME, (queue_name,))

    def _operator(self, sql: str, params: tuple) -> Any:
        # A savepoint keeps an unknown id from aborting the caller's transaction.
        try:
            with transaction.atomic(using=self.alias):
                return self._django_value(sql, params)
        except DatabaseError as exc:
            if isinstance(exc.__cause__, psycopg.errors.NoDataFound):
                raise JobNotFound(str(exc.__cause__).splitlines()[0]) from exc
            raise
