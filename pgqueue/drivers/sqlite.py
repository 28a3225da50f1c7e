"""SQLite driver: the lifecycle of sql/0001_initial.sql, mirrored in Python on the same models.

For development and demos. Each method follows the SQL function of the same name
(see its header comment there), with the same transitions, return values and
error messages; tests/contract runs one suite against both drivers so they
cannot drift. The differences (the first two are in docs/operations.md, "SQLite"):

- times come from this process's clock (SQLite has no server clock), so the
  clocks of all processes sharing a file must agree;
- workers poll (no NOTIFY), and the raw SQL API (``SELECT pgqueue.enqueue``)
  does not exist;
- bad arguments to the worker operations raise InvalidJob where PostgreSQL
  raises psycopg's InvalidParameterValue (SQLSTATE 22023); the messages match.

Concurrency: every write this driver starts takes SQLite's write lock up front
(``BEGIN IMMEDIATE``), so two processes can never both read a job as ready and
claim it. A busy database is waited for (the connection's busy timeout,
``OPTIONS['timeout']``, 5 s unless set) and then retried with capped, jittered
backoff for up to LOCKED_PATIENCE seconds before the error is raised. Calls made
inside a caller's ``transaction.atomic()`` (enqueue, operator calls) join that
transaction under a savepoint and are not retried: the transaction is the
caller's (Django's SQLite notes advise ``OPTIONS['transaction_mode'] = 'IMMEDIATE'``
for applications that write from several processes).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import IntegrityError, OperationalError, connections, transaction
from django.db.models import Exists, F, JSONField, OuterRef, QuerySet, Value
from django.db.models.functions import Substr
from django.utils import timezone

from pgqueue import validation
from pgqueue.backoff import Backoff, jittered_delay
from pgqueue.conf import DEFAULT_MAX_ATTEMPTS
from pgqueue.drivers.base import ClaimedJob, Driver, Enqueued, NewJob
from pgqueue.exceptions import InvalidJob, JobNotFound, WorkerNotRegistered
from pgqueue.models import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    WAITING_STATUSES,
    Job,
    JobStatus,
    Queue,
    Worker,
)
from pgqueue.queues import is_valid_queue_name, validate_selectors

T = TypeVar("T")

logger = logging.getLogger("pgqueue.drivers.sqlite")

#: Due scheduled jobs promoted per claim, as in claim_v1.
PROMOTE_LIMIT = 1000
#: Seconds a write of ours keeps retrying while another connection holds the write lock.
LOCKED_PATIENCE = 30.0
#: JSON null, as PostgreSQL stores a task's None result (a plain None would be SQL NULL).
JSON_NULL = Value(None, output_field=JSONField())
#: _requeue_lost's reason when a stopping worker still held jobs (deregister_worker_v1).
STOPPED_REASON = "it stopped without finishing the job"


def _is_locked(exc: OperationalError) -> bool:
    """Whether SQLite refused because another connection holds a lock (SQLITE_BUSY/LOCKED)."""
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text or "busy" in text


def _invalid(message: str) -> InvalidJob:
    """The error SQL raises with SQLSTATE 22023 (invalid_parameter_value)."""
    return InvalidJob(message)


def _worker_uuid(worker_id: Any) -> uuid.UUID:
    """A worker id as PostgreSQL's uuid type reads it."""
    try:
        return uuid.UUID(str(worker_id))
    except ValueError:
        raise _invalid(f'invalid input syntax for type uuid: "{worker_id}"') from None


def pg_interval_text(seconds: float) -> str:
    """``interval::text`` of ``timedelta(seconds=...)`` as PostgreSQL prints it: '00:01:00', '1 day 01:00:00'."""
    delta = timedelta(seconds=seconds)
    days, secs, micros = delta.days, delta.seconds, delta.microseconds
    parts = []
    if days:
        parts.append(f"{days} day{'' if days == 1 else 's'}")
    if secs or micros or not days:
        # After a negative field PostgreSQL signs the (never negative) time part.
        clock = "+" if days < 0 else ""
        clock += f"{secs // 3600:02d}:{secs % 3600 // 60:02d}:{secs % 60:02d}"
        if micros:
            clock += "." + f"{micros:06d}".rstrip("0")
        parts.append(clock)
    return " ".join(parts)


def _quote_literal(value: Any) -> str:
    """``coalesce(quote_literal(value), 'NULL')`` as the SQL's messages show a value."""
    if value is None:
        return "NULL"
    text = str(value).replace("'", "''")
    if "\\" in text:
        return "E'" + text.replace("\\", "\\\\") + "'"
    return "'" + text + "'"


def _check_selectors(where: str, selectors: Any) -> list[str]:
    """As pgqueue._check_selectors."""
    if not isinstance(selectors, list | tuple) or not selectors:
        raise _invalid(f"{where}: selectors must be a non-empty array of queue selectors")
    for selector in selectors:
        try:
            validate_selectors([selector])
        except (ValueError, TypeError):
            raise _invalid(
                f"{where}: queue selector {_quote_literal(selector)} is invalid"
            ) from None
    return list(selectors)


def _check_queue_name(where: str, queue_name: Any) -> None:
    """As pgqueue._check_queue_name."""
    if not is_valid_queue_name(queue_name):
        raise _invalid(f"{where}: queue_name {_quote_literal(queue_name)} is invalid")


def _check_fence(where: str, worker_id: Any, pairs: Any) -> uuid.UUID:
    """As pgqueue._check_fence: the worker id and the (job_id, attempt) pairs are present."""
    if worker_id is None or pairs is None:
        raise _invalid(
            f"{where}: worker_id, job_ids and attempts are required and job_ids and attempts "
            "must have the same length"
        )
    return _worker_uuid(worker_id)


class SQLiteDriver(Driver):
    """Queue operations through the Django ORM on a SQLite database."""

    supports_notify = False

    # Transactions ----------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[None]:
        """A transaction that holds the write lock from its first statement.

        Inside a caller's transaction there is nothing to start: a savepoint is used.
        """
        connection = connections[self.alias]
        if connection.in_atomic_block:
            with transaction.atomic(using=self.alias):
                yield
            return
        connection.ensure_connection()
        previous = connection.transaction_mode
        connection.transaction_mode = "IMMEDIATE"
        try:
            with transaction.atomic(using=self.alias):
                connection.transaction_mode = previous
                yield
        finally:
            connection.transaction_mode = previous

    def _retrying(self, operation: Callable[[], T]) -> T:
        """Run ``operation`` in a write transaction, retrying while the database is locked.

        Only a transaction of our own is retried; in the caller's, the error propagates.
        """
        if connections[self.alias].in_atomic_block:
            with self._write():
                return operation()
        backoff = Backoff(base=0.05, cap=1.0)
        deadline = time.monotonic() + LOCKED_PATIENCE
        while True:
            try:
                with self._write():
                    return operation()
            except OperationalError as exc:
                if not _is_locked(exc) or time.monotonic() >= deadline:
                    raise
                delay = backoff.next_delay()
                logger.debug(
                    "database %r is locked (%s); retrying in %.2fs", self.alias, exc, delay
                )
                time.sleep(delay)

    def _jobs(self) -> QuerySet[Job]:
        return Job.objects.using(self.alias)

    def _workers(self) -> QuerySet[Worker]:
        return Worker.objects.using(self.alias)

    # Enqueue side ------------------------------------------------------------------

    def enqueue(self, job: NewJob) -> Enqueued:
        return self.enqueue_many([job], where="pgqueue.enqueue")[0]

    def enqueue_many(self, jobs: list[NewJob], *, where: str | None = None) -> list[Enqueued]:
        if not jobs:
            return []
        # As pgqueue._check_job: every job is valid before any is inserted.
        checked = [
            validation.new_job(
                job.task_path,
                job.args,
                job.kwargs,
                queue_name=job.queue_name,
                priority=job.priority,
                run_after=job.run_after,
                max_attempts=job.max_attempts,
                unique_key=job.unique_key,
                where=where or f"pgqueue.enqueue_many: jobs[{index}]",
            )
            for index, job in enumerate(jobs)
        ]

        def insert() -> list[Enqueued]:
            now = timezone.now()
            ids: list[int | None] = [None] * len(checked)
            plain = [(i, job) for i, job in enumerate(checked) if job.unique_key is None]
            created = self._jobs().bulk_create([self._row(job, now) for _, job in plain])
            for (index, _), row in zip(plain, created, strict=True):
                ids[index] = row.id
            for index, job in enumerate(checked):
                if job.unique_key is not None:
                    ids[index] = self._insert_unique(job, now)
            # As the PostgreSQL driver: enqueued_at is the call's time, also for a job
            # that a unique_key led back to an existing one.
            return [Enqueued(id=job_id, enqueued_at=now) for job_id in ids if job_id is not None]

        return self._retrying(insert)

    def _row(self, job: NewJob, now: datetime) -> Job:
        run_after = job.run_after
        if isinstance(run_after, timedelta):
            run_after = now + run_after
        return Job(
            task_path=job.task_path,
            args=job.args,
            kwargs=job.kwargs,
            queue_name=job.queue_name,
            priority=job.priority,
            status=JobStatus.SCHEDULED
            if run_after is not None and run_after > now
            else JobStatus.READY,
            run_after=now if run_after is None else run_after,
            enqueued_at=now,
            max_attempts=DEFAULT_MAX_ATTEMPTS if job.max_attempts is None else job.max_attempts,
            unique_key=job.unique_key,
        )

    def _insert_unique(self, job: NewJob, now: datetime) -> int:
        """As pgqueue._insert_unique: the id of the active job holding the key, or of a new job."""
        holder = self._jobs().filter(unique_key=job.unique_key, status__in=ACTIVE_STATUSES)
        found = holder.values_list("id", flat=True).first()
        if found is not None:
            return found
        row = self._row(job, now)
        try:
            with transaction.atomic(using=self.alias):
                row.save(using=self.alias, force_insert=True)
        except IntegrityError:
            # Under the write lock nobody can have taken the key since the look-up; this
            # is another constraint, which must not be hidden.
            found = holder.values_list("id", flat=True).first()
            if found is None:
                raise
            return found
        return row.id

    # Worker side -----------------------------------------------------------------

    def register_worker(
        self, hostname: str, pid: int, selectors: list[str], concurrency: int
    ) -> str:
        where = "pgqueue.register_worker_v1"
        selectors = _check_selectors(where, selectors)
        if concurrency is None or concurrency < 1:
            shown = "NULL" if concurrency is None else concurrency
            raise _invalid(f"{where}: concurrency must be at least 1, got {shown}")

        def register() -> str:
            now = timezone.now()
            worker = self._workers().create(
                hostname=hostname or "",
                pid=0 if pid is None else pid,
                queues=selectors,
                concurrency=concurrency,
                started_at=now,
                heartbeat_at=now,
            )
            return str(worker.id)

        return self._retrying(register)

    def heartbeat(self, worker_id: str) -> bool:
        worker = _worker_uuid(worker_id)
        return self._retrying(
            lambda: self._workers().filter(pk=worker).update(heartbeat_at=timezone.now()) > 0
        )

    def deregister_worker(self, worker_id: str) -> int:
        worker = _worker_uuid(worker_id)

        def deregister() -> int:
            self._workers().filter(pk=worker).delete()
            held = self._jobs().filter(status=JobStatus.RUNNING, worker_id=worker)
            return self._requeue_lost(held, STOPPED_REASON)

        return self._retrying(deregister)

    def _requeue_lost(self, running: QuerySet[Job], reason: str) -> int:
        """As pgqueue._requeue_lost: a WorkerLost error, then ready again, or failed at the last attempt."""
        now = timezone.now()
        changed = []
        for job in running.filter(status=JobStatus.RUNNING):
            message = (
                f"worker {job.worker_id} was lost while running attempt {job.attempts}: {reason}"
            )
            job.errors = [
                *job.errors,
                {
                    "exception_class_path": "pgqueue.exceptions.WorkerLost",
                    "message": message,
                    "traceback": f"pgqueue.exceptions.WorkerLost: {message}\n",
                    "attempt": job.attempts,
                    "worker_id": str(job.worker_id),
                    "at": now.isoformat(),
                },
            ]
            if job.attempts >= job.max_attempts:
                job.status, job.finished_at = JobStatus.FAILED, now
            else:
                job.status, job.finished_at = JobStatus.READY, None
            job.worker_id = None
            changed.append(job)
        self._jobs().bulk_update(changed, ["status", "finished_at", "errors", "worker_id"])
        return len(changed)

    def reap(self, orphan_after: float) -> int:
        if orphan_after is None or orphan_after <= 0:
            shown = "NULL" if orphan_after is None else pg_interval_text(orphan_after)
            raise _invalid(
                f"pgqueue.reap_v1: orphan_after must be a positive interval, got {shown}"
            )

        def reap() -> int:
            cutoff = timezone.now() - timedelta(seconds=orphan_after)
            self._workers().filter(heartbeat_at__lt=cutoff).delete()
            orphans = self._jobs().filter(
                ~Exists(self._workers().filter(pk=OuterRef("worker_id"))),
                status=JobStatus.RUNNING,
                last_attempted_at__lt=cutoff,
            )
            return self._requeue_lost(
                orphans, f"its heartbeat is older than {pg_interval_text(orphan_after)}"
            )

        return self._retrying(reap)

    def _matching(self, queryset: QuerySet[Job], selector: str) -> QuerySet[Job]:
        """The rows a selector matches. A prefix compares exactly: SQLite's LIKE ignores case."""
        if selector == "*":
            return queryset
        if selector.endswith("*"):
            prefix = selector[:-1]
            return queryset.annotate(queue_prefix=Substr("queue_name", 1, len(prefix))).filter(
                queue_prefix=prefix
            )
        return queryset.filter(queue_name=selector)

    def claim(self, worker_id: str, selectors: list[str], limit: int) -> list[ClaimedJob]:
        where = "pgqueue.claim_v1"
        selectors = _check_selectors(where, selectors)
        if limit is None or not 1 <= limit <= 1000:
            shown = "NULL" if limit is None else limit
            raise _invalid(f"{where}: limit must be from 1 to 1000, got {shown}")
        worker = _worker_uuid(worker_id)

        def claim() -> list[ClaimedJob]:
            if not self._workers().filter(pk=worker).exists():
                raise WorkerNotRegistered(f"{where}: worker {worker} is not registered")
            now = timezone.now()
            due = self._jobs().filter(status=JobStatus.SCHEDULED, run_after__lte=now)
            self._jobs().filter(
                id__in=due.order_by("run_after").values("id")[:PROMOTE_LIMIT]
            ).update(status=JobStatus.READY)
            paused = set(
                Queue.objects.using(self.alias).filter(paused=True).values_list("name", flat=True)
            )
            ids: list[int] = []
            for selector in selectors:
                want = limit - len(ids)
                if want <= 0:
                    break
                if selector in paused:
                    continue
                ready = self._matching(self._jobs().filter(status=JobStatus.READY), selector)
                ids += (
                    ready.exclude(queue_name__in=paused)
                    .exclude(id__in=ids)
                    .order_by("-priority", "run_after", "id")
                    .values_list("id", flat=True)[:want]
                )
            rows = self._jobs().in_bulk(ids)
            claimed = []
            for job_id in ids:
                job = rows[job_id]
                job.status = JobStatus.RUNNING
                job.attempts += 1
                job.worker_id = worker
                job.worker_ids = [*job.worker_ids, str(worker)]
                job.started_at = job.started_at or now
                job.last_attempted_at = now
                job.output = []
                claimed.append(job)
            self._jobs().bulk_update(
                claimed,
                [
                    "status",
                    "attempts",
                    "worker_id",
                    "worker_ids",
                    "started_at",
                    "last_attempted_at",
                    "output",
                ],
            )
            return [
                ClaimedJob(
                    id=job.id,
                    task_path=job.task_path,
                    args=job.args,
                    kwargs=job.kwargs,
                    queue_name=job.queue_name,
                    priority=job.priority,
                    run_after=job.run_after,
                    enqueued_at=job.enqueued_at,
                    started_at=job.started_at,
                    attempt=job.attempts,
                    max_attempts=job.max_attempts,
                    worker_ids=job.worker_ids,
                    errors=job.errors,
                )
                for job in claimed
            ]

        return self._retrying(claim)

    def _held(self, worker: uuid.UUID, job_id: int, attempt: int) -> QuerySet[Job]:
        """The fence of every write about a running job: this worker, this attempt."""
        return self._jobs().filter(
            id=job_id, status=JobStatus.RUNNING, worker_id=worker, attempts=attempt
        )

    def complete(self, worker_id: str, outcomes: list[tuple[int, int, Any]]) -> set[int]:
        worker = _check_fence("pgqueue.complete_v1", worker_id, outcomes)

        def complete() -> set[int]:
            now = timezone.now()
            done = set()
            for job_id, attempt, result in outcomes:
                if self._held(worker, job_id, attempt).update(
                    status=JobStatus.SUCCEEDED,
                    result=JSON_NULL if result is None else result,
                    finished_at=now,
                    worker_id=None,
                ):
                    done.add(job_id)
            return done

        return self._retrying(complete)

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
        where = "pgqueue.fail_v1"
        worker = _check_fence(where, worker_id, [(job_id, attempt)])
        if (
            not isinstance(error, dict)
            or not isinstance(error.get("exception_class_path"), str)
            or not isinstance(error.get("traceback"), str)
        ):
            raise _invalid(
                f"{where}: error must be a JSON object with string keys exception_class_path "
                "and traceback"
            )
        if (
            retry is None
            or backoff_base is None
            or backoff_base < 0
            or backoff_max is None
            or backoff_max < 0
        ):
            raise _invalid(
                f"{where}: retry, backoff_base and backoff_max are required and must not be negative"
            )

        def fail() -> str | None:
            job = self._held(worker, job_id, attempt).first()
            if job is None:
                return None
            now = timezone.now()
            job.errors = [
                *job.errors,
                {**error, "attempt": job.attempts, "worker_id": str(worker), "at": now.isoformat()},
            ]
            if retry and job.attempts < job.max_attempts:
                delay = jittered_delay(backoff_base, backoff_max, job.attempts - 1)
                job.status = JobStatus.SCHEDULED
                job.run_after = now + timedelta(seconds=delay)
                job.finished_at = None
            else:
                job.status, job.finished_at = JobStatus.FAILED, now
            job.worker_id = None
            job.save(
                using=self.alias,
                update_fields=["errors", "status", "run_after", "finished_at", "worker_id"],
            )
            return str(job.status)

        return self._retrying(fail)

    def release(self, worker_id: str, jobs: list[tuple[int, int]]) -> set[int]:
        worker = _check_fence("pgqueue.release_v1", worker_id, jobs)

        def release() -> set[int]:
            released = set()
            for job_id, attempt in jobs:
                job = self._held(worker, job_id, attempt).first()
                if job is None:
                    continue
                if job.attempts == 1:
                    job.started_at = None
                job.status = JobStatus.READY
                job.attempts -= 1
                job.worker_ids = job.worker_ids[:-1]
                job.worker_id = None
                job.save(
                    using=self.alias,
                    update_fields=["status", "attempts", "worker_ids", "started_at", "worker_id"],
                )
                released.add(job_id)
            return released

        return self._retrying(release)

    def append_output(self, worker_id: str, job_id: int, attempt: int, values: list[Any]) -> bool:
        where = "pgqueue.append_output_v1"
        worker = _check_fence(where, worker_id, [(job_id, attempt)])
        if not isinstance(values, list):
            raise _invalid(f"{where}: values must be a JSON array")

        def append() -> bool:
            job = self._held(worker, job_id, attempt).first()
            if job is None:
                return False
            job.output = [*job.output, *values]
            job.save(using=self.alias, update_fields=["output"])
            return True

        return self._retrying(append)

    def next_run_after(self, selectors: list[str]) -> datetime | None:
        selectors = _check_selectors("pgqueue.next_run_after_v1", selectors)
        earliest = None
        for selector in selectors:
            scheduled = self._matching(self._jobs().filter(status=JobStatus.SCHEDULED), selector)
            first = scheduled.order_by("run_after").values_list("run_after", flat=True).first()
            if first is not None and (earliest is None or first < earliest):
                earliest = first
        return earliest

    # Operator side -----------------------------------------------------------------

    def _raise_if_missing(self, job_id: int, where: str) -> None:
        if not self._jobs().filter(id=job_id).exists():
            shown = "NULL" if job_id is None else job_id
            raise JobNotFound(f"{where}: job {shown} does not exist")

    def cancel(self, job_id: int) -> bool:
        def cancel() -> bool:
            changed = (
                self._jobs()
                .filter(id=job_id, status__in=WAITING_STATUSES)
                .update(status=JobStatus.CANCELLED, finished_at=timezone.now())
            )
            if not changed:
                self._raise_if_missing(job_id, "pgqueue.cancel")
            return bool(changed)

        return self._retrying(cancel)

    def retry(self, job_id: int, extra_attempts: int = 1) -> bool:
        where = "pgqueue.retry"
        if extra_attempts is None or not 1 <= extra_attempts <= validation.MAX_ATTEMPTS_LIMIT:
            shown = "NULL" if extra_attempts is None else extra_attempts
            raise _invalid(
                f"{where}: extra_attempts must be from 1 to {validation.MAX_ATTEMPTS_LIMIT}, got {shown}"
            )

        def retry() -> bool:
            try:
                with transaction.atomic(using=self.alias):
                    changed = (
                        self._jobs()
                        .filter(id=job_id, status__in=(JobStatus.FAILED, JobStatus.CANCELLED))
                        .update(
                            status=JobStatus.READY,
                            max_attempts=F("attempts") + extra_attempts,
                            finished_at=None,
                            run_after=timezone.now(),
                            result=None,
                        )
                    )
            except IntegrityError as exc:
                raise IntegrityError(
                    f"{where}: job {job_id} cannot be retried: another waiting or running job "
                    "has the same unique_key"
                ) from exc
            if not changed:
                self._raise_if_missing(job_id, where)
            return bool(changed)

        return self._retrying(retry)

    def pause_queue(self, queue_name: str) -> None:
        _check_queue_name("pgqueue.pause_queue", queue_name)

        def pause() -> None:
            now = timezone.now()
            queue, created = Queue.objects.using(self.alias).get_or_create(
                name=queue_name, defaults={"paused": True, "paused_at": now}
            )
            if not created:
                queue.paused, queue.paused_at = True, queue.paused_at or now
                queue.save(using=self.alias, update_fields=["paused", "paused_at"])

        self._retrying(pause)

    def resume_queue(self, queue_name: str) -> None:
        _check_queue_name("pgqueue.resume_queue", queue_name)
        self._retrying(
            lambda: (
                Queue.objects.using(self.alias)
                .filter(name=queue_name)
                .update(paused=False, paused_at=None)
            )
        )

    def prune(self, older_than: float, max_jobs: int | None = None) -> int:
        where = "pgqueue.prune"
        if older_than is None or older_than < 0:
            shown = "NULL" if older_than is None else pg_interval_text(older_than)
            raise _invalid(f"{where}: older_than must be an interval of zero or more, got {shown}")
        if max_jobs is not None and max_jobs < 1:
            raise _invalid(f"{where}: max_jobs must be at least 1 or NULL, got {max_jobs}")

        def prune() -> int:
            cutoff = timezone.now() - timedelta(seconds=older_than)
            old = (
                self._jobs()
                .filter(status__in=FINISHED_STATUSES, finished_at__lt=cutoff)
                .order_by("finished_at")
                .values("id")
            )
            chosen = old if max_jobs is None else old[:max_jobs]
            deleted, _ = self._jobs().filter(id__in=chosen).delete()
            return deleted

        return self._retrying(prune)
