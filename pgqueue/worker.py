"""The worker: claims jobs, runs them, writes outcomes, heartbeats, reaps, shuts down cleanly.

Threads of one worker process:
- main: claims as many jobs as there are free slots, then sleeps until woken by a
  notification, a freed slot, the next scheduled job, or the poll interval;
- runners (``concurrency`` threads, or in process isolation as many supervisor threads,
  each owning a child process; see pgqueue.isolation);
- reporter: writes outcomes in batches, fenced by worker and attempt, then frees slots;
- heartbeat: keeps the worker alive in the database, runs the reaper and pruning;
- listener (PostgreSQL with LISTEN on): turns NOTIFY into wake-ups.

The worker knows no SQL; every database operation goes through the driver.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from django.db import DatabaseError, DataError, IntegrityError, InterfaceError
from django.utils import timezone
from psycopg_pool import PoolTimeout

from pgqueue import registry
from pgqueue.api import pgqueue_backend
from pgqueue.backoff import Backoff
from pgqueue.checks import check_sql_version
from pgqueue.conf import WorkerSettings
from pgqueue.drivers import get_driver
from pgqueue.drivers.base import ClaimedJob, Driver
from pgqueue.exceptions import OutcomeNotStored, SchemaVersionMismatch, WorkerNotRegistered
from pgqueue.execution import Outcome, failure
from pgqueue.isolation import ProcessRunner, Runner, RunningJob, ThreadRunner

logger = logging.getLogger("pgqueue.worker")

#: What a lost or restarting database raises; the worker retries these, never crashes on them.
_DB_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseError,
    InterfaceError,
    psycopg.Error,
    PoolTimeout,
    OSError,
)

#: Errors no retry can cure when storing an outcome: the database refused a value. Every
#: other database error (an outage, a failover's read-only phase) is retried.
_REFUSED_BY_DATABASE: tuple[type[BaseException], ...] = (
    DataError,
    IntegrityError,
    psycopg.DataError,
    psycopg.IntegrityError,
)


def _refused(exc: Exception) -> bool:
    """Whether storing an outcome failed for good: refused, or not even sent (a bug)."""
    return isinstance(exc, _REFUSED_BY_DATABASE) or not isinstance(exc, _DB_ERRORS)


#: Exit statuses of ``run()``.
EXIT_OK = 0
EXIT_IMMEDIATE = 1
# Seconds between prunes (with PRUNE_AFTER set), and rows deleted per prune transaction.
PRUNE_EVERY = 10.0
PRUNE_BATCH = 10_000


class Worker:
    """One worker process's loop; ``run()`` returns the exit status."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        burst: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.burst = burst
        self.clock = clock
        self.driver: Driver = get_driver(settings.database)
        self.backend = pgqueue_backend()
        self.selectors = list(settings.queues)
        self.worker_id: str | None = None
        self._register_lock = threading.Lock()
        self.jobs_claimed = 0
        self._running: dict[int, RunningJob] = {}
        self._running_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stopped_claiming = threading.Event()
        self._outcomes: queue.SimpleQueue[tuple[RunningJob, Outcome] | None] = queue.SimpleQueue()
        self._signals = 0
        self._reporter: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._listener: Any = None
        self._runner = self._make_runner()

    def _make_runner(self) -> Runner:
        """Runner threads, or supervised child processes (isolation 'process')."""

        def deliver(running: RunningJob, outcome: Outcome) -> None:
            self._outcomes.put((running, outcome))

        if self.settings.isolation == "process":
            return ProcessRunner(
                self.settings.concurrency,
                alias=self.settings.database,
                allowed_tasks=self.settings.allowed_tasks,
                deliver=deliver,
                max_jobs_per_child=self.settings.max_jobs_per_child,
            )
        return ThreadRunner(
            self.settings.concurrency,
            backend=self.backend,
            driver=self.driver,
            allowed_tasks=self.settings.allowed_tasks,
            deliver=deliver,
            clock=self.clock,
        )

    # Lifecycle ---------------------------------------------------------------

    def run(self) -> int:
        """Start, process jobs until stopped (or idle, in burst mode), shut down; return exit status."""
        started = self.clock()
        if not self._wait_for_database():
            return EXIT_OK
        registry.autodiscover()
        self._runner.start()
        if not self._register():
            self._runner.shutdown()
            return EXIT_OK
        self._start_threads()
        logger.info(
            "worker %s started in %.3fs: queues=%s concurrency=%d isolation=%s listen=%s burst=%s",
            self.worker_id,
            self.clock() - started,
            ",".join(self.selectors),
            self.settings.concurrency,
            self.settings.isolation,
            self._listener is not None,
            self.burst,
        )
        try:
            self._loop()
        finally:
            self._shutdown()
        return EXIT_OK

    def request_stop(self, signum: int | None = None) -> None:
        """First call: drain and stop. Second call (a second signal): stop at once."""
        self._signals += 1
        if self._signals > 1:
            logger.warning("second stop signal: exiting now; the reaper will return running jobs")
            self._runner.kill()
            logging.shutdown()
            os._exit(EXIT_IMMEDIATE)
        logger.info(
            "stop requested; finishing running jobs (up to %gs)", self.settings.shutdown_timeout
        )
        self._stopping.set()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT drain gracefully; a second one stops at once."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda s, _frame: self.request_stop(s))

    def _wait_for_database(self) -> bool:
        """Wait until the database answers and has the right SQL API; False if stopped meanwhile."""
        backoff = Backoff(base=0.2, cap=5.0)
        while not self._stopping.is_set():
            try:
                check_sql_version(self.settings.database)
                return True
            except SchemaVersionMismatch as exc:
                if _is_connection_problem(exc):
                    delay = backoff.next_delay()
                    logger.warning(
                        "database unavailable at start-up (%s); retrying in %.1fs",
                        exc.__cause__,
                        delay,
                    )
                    self._close_django_connection()
                    self._stopping.wait(delay)
                    continue
                raise
        return False

    def _close_django_connection(self) -> None:
        from django.db import connections

        with contextlib.suppress(_DB_ERRORS):
            connections[self.settings.database].close()

    def _register(self, replacing: str | None = None) -> bool:
        """Take a fresh identity (at start, or after being reaped: then only once per identity).

        Retries through database errors; False if the worker was asked to stop meanwhile.
        """
        backoff = Backoff(base=0.2, cap=5.0)
        with self._register_lock:
            if self.worker_id != replacing:
                return True  # another thread already replaced it
            while True:
                try:
                    self.worker_id = self.driver.register_worker(
                        socket.gethostname(), os.getpid(), self.selectors, self.settings.concurrency
                    )
                    return True
                except _DB_ERRORS as exc:
                    delay = backoff.next_delay()
                    logger.warning(
                        "could not register the worker (%s); retrying in %.1fs", exc, delay
                    )
                    if self._stopping.wait(delay):
                        return False

    def _start_threads(self) -> None:
        self._reporter = threading.Thread(
            target=self._report_loop, name="pgqueue-reporter", daemon=True
        )
        self._reporter.start()
        heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="pgqueue-heartbeat", daemon=True
        )
        heartbeat.start()
        self._threads.append(heartbeat)
        maintenance = threading.Thread(
            target=self._maintenance_loop, name="pgqueue-maintenance", daemon=True
        )
        maintenance.start()
        self._threads.append(maintenance)
        if self.driver.supports_notify and self.settings.listen:
            from pgqueue.drivers.postgresql import connection_kwargs
            from pgqueue.listener import Listener

            self._listener = Listener(
                connection_kwargs(self.settings.database),
                self.selectors,
                self._wake.set,
                ping_interval=self.settings.heartbeat_interval,
                ping_timeout=self.settings.heartbeat_interval,
            )
            self._listener.start()

    # Claiming ----------------------------------------------------------------

    def _free_slots(self) -> int:
        with self._running_lock:
            return self.settings.concurrency - len(self._running)

    def _running_count(self) -> int:
        with self._running_lock:
            return len(self._running)

    def _claim_allowance(self) -> int:
        free = min(self._free_slots(), self.settings.claim_limit)
        if self.settings.max_jobs is not None:
            free = min(free, self.settings.max_jobs - self.jobs_claimed)
        return max(free, 0)

    def _loop(self) -> None:
        backoff = Backoff(base=0.1, cap=self.settings.poll_interval)
        while not self._stopping.is_set():
            self._wake.clear()
            self._runner.enforce_timeouts()
            want = self._claim_allowance()
            claimed: list[ClaimedJob] = []
            if want > 0:
                try:
                    claimed = self._claim(want)
                    backoff.reset()
                except _DB_ERRORS as exc:
                    delay = backoff.next_delay()
                    logger.warning("claim failed (%s); retrying in %.2fs", exc, delay)
                    self._wake.wait(delay)
                    continue
                self._dispatch(claimed)
                if len(claimed) == want:
                    continue  # there may be more ready jobs
            if self.settings.max_jobs is not None and self.jobs_claimed >= self.settings.max_jobs:
                if self._running_count() == 0:
                    logger.info("claimed --max-jobs=%d jobs; stopping", self.settings.max_jobs)
                    return
            elif self.burst and not claimed and self._running_count() == 0:
                logger.info("nothing ready: burst done")
                return
            self._wake.wait(self._sleep_time(idle=want > 0 and not claimed))

    def _claim(self, want: int) -> list[ClaimedJob]:
        worker_id = self.worker_id
        assert worker_id is not None
        try:
            jobs = self.driver.claim(worker_id, self.selectors, want)
        except WorkerNotRegistered:
            logger.error("worker %s was reaped (missed heartbeats); registering again", worker_id)
            self._register(replacing=worker_id)
            return []
        self.jobs_claimed += len(jobs)
        return jobs

    def _sleep_time(self, *, idle: bool) -> float:
        """How long to wait for a wake-up: the poll interval, or less if a job is due sooner."""
        sleep = self.settings.poll_interval
        if idle:
            try:
                next_scheduled = self.driver.next_run_after(self.selectors)
            except _DB_ERRORS:
                next_scheduled = None
            if next_scheduled is not None:
                until = (next_scheduled - timezone.now()).total_seconds()
                sleep = min(sleep, max(until, 0.0))
        deadline = self._runner.next_deadline()
        if deadline is not None:
            sleep = min(sleep, max(deadline - self.clock(), 0.0))
        return sleep

    def _dispatch(self, jobs: list[ClaimedJob]) -> None:
        if not jobs:
            return
        worker_id = self.worker_id
        assert worker_id is not None
        batch = [RunningJob(job=job, worker_id=worker_id) for job in jobs]
        with self._running_lock:
            for running in batch:
                self._running[running.job.id] = running
        self._runner.submit(batch)

    # Reporting ---------------------------------------------------------------

    def _report_loop(self) -> None:
        while True:
            first = self._outcomes.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 500:
                try:
                    item = self._outcomes.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._outcomes.put(None)
                    break
                batch.append(item)
            self._write_outcomes(batch)

    def _write_outcomes(self, batch: list[tuple[RunningJob, Outcome]]) -> None:
        """Store a batch of outcomes, retrying through database outages until all are written.

        An error a retry cannot cure (the database refused a value) would otherwise be
        retried forever, holding up every outcome of this worker: the batch is then
        written one outcome at a time, so that only the culprit's attempt is affected.
        """
        backoff = Backoff(base=0.1, cap=5.0)
        pending = list(batch)
        while pending:
            try:
                self._write_pending(pending)
            except Exception as exc:
                if _refused(exc):
                    logger.exception(
                        "could not store %d job outcome(s); storing them one at a time",
                        len(pending),
                    )
                    for item in list(pending):
                        self._write_alone(*item)
                        _forget(pending, [item])
                    continue
                _wait_to_retry(backoff, f"{len(pending)} job outcome(s)", exc)

    def _write_alone(self, running: RunningJob, outcome: Outcome) -> None:
        """Store one outcome; if the database refuses it for good, record the attempt as
        failed with OutcomeNotStored instead, and if even that is refused, give up on it
        (the job stays with this worker until it stops, when it is handled as lost)."""
        backoff = Backoff(base=0.1, cap=5.0)
        replaced = False
        while True:
            try:
                self._write_pending([(running, outcome)])
                return
            except Exception as exc:
                if not _refused(exc):
                    _wait_to_retry(backoff, f"the outcome of job {running.job.id}", exc)
                    continue
                if replaced:
                    logger.exception("could not record job %s as failed; giving up", running.job.id)
                    self._free([(running, outcome)])
                    return
                logger.error(
                    "job %s %s: the database refused its outcome '%s' (%s); recording the "
                    "attempt as failed",
                    running.job.id,
                    running.job.task_path,
                    outcome.summary,
                    exc,
                )
                outcome = failure(
                    OutcomeNotStored(
                        f"the worker could not store this attempt's outcome "
                        f"({outcome.summary}): {type(exc).__name__}: {exc}"
                    ),
                    outcome.duration,
                )
                replaced = True

    def _write_pending(self, pending: list[tuple[RunningJob, Outcome]]) -> None:
        """Write outcomes, removing each from ``pending`` once stored (so a retry skips it)."""
        successes: dict[str, list[tuple[RunningJob, Outcome]]] = {}
        for running, outcome in pending:
            if outcome.succeeded:
                successes.setdefault(running.worker_id, []).append((running, outcome))
        for worker_id, items in successes.items():
            done = self.driver.complete(
                worker_id, [(r.job.id, r.job.attempt, o.result) for r, o in items]
            )
            _forget(pending, items)
            for running, outcome in items:
                self._log_outcome(running, outcome, "succeeded" if running.job.id in done else None)
            self._free(items)
        for running, outcome in list(pending):
            assert outcome.error is not None
            status = self.driver.fail(
                running.worker_id,
                running.job.id,
                running.job.attempt,
                outcome.error,
                retry=outcome.retry,
                backoff_base=self.settings.backoff_base,
                backoff_max=self.settings.backoff_max,
            )
            _forget(pending, [(running, outcome)])
            self._log_outcome(running, outcome, status)
            self._free([(running, outcome)])

    def _log_outcome(self, running: RunningJob, outcome: Outcome, status: str | None) -> None:
        job = running.job
        if status is None:
            logger.warning(
                "job %s %s: lease lost (it was reaped or handed to another worker); outcome '%s' discarded",
                job.id,
                job.task_path,
                outcome.summary,
            )
        else:
            # One line per job at INFO would cost a busy worker more than running no-op
            # jobs does; successes are DEBUG (-v 2), failures and retries WARNING.
            level = logging.DEBUG if outcome.succeeded else logging.WARNING
            logger.log(
                level,
                "job %s %s queue=%s attempt=%d/%d %.3fs %s -> %s",
                job.id,
                job.task_path,
                job.queue_name,
                job.attempt,
                job.max_attempts,
                outcome.duration,
                outcome.summary,
                status,
            )

    def _free(self, written: list[tuple[RunningJob, Outcome]]) -> None:
        """Free the slots of jobs whose outcome is stored, and wake the loop once to refill them."""
        with self._running_lock:
            for running, _ in written:
                self._running.pop(running.job.id, None)
        self._wake.set()

    # Heartbeat, reaping, pruning --------------------------------------------------

    def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        while not self._stopped_claiming.wait(interval):
            worker_id = self.worker_id
            assert worker_id is not None
            try:
                if not self.driver.heartbeat(worker_id):
                    logger.error(
                        "worker %s was judged dead and reaped; its running jobs belong to others now",
                        worker_id,
                    )
                    self._register(replacing=worker_id)
                reaped = self.driver.reap(self.settings.orphan_after)
                if reaped:
                    logger.warning("reaped %d job(s) of dead workers", reaped)
            except _DB_ERRORS as exc:
                logger.warning("heartbeat failed (%s); will retry", exc)

    def _maintenance_loop(self) -> None:
        """Prune finished jobs and vacuum the job table, in a thread of its own so that a
        long VACUUM never delays a heartbeat."""
        last_prune = -PRUNE_EVERY
        while not self._stopped_claiming.wait(self.settings.heartbeat_interval):
            try:
                if self.settings.prune_after is not None and (
                    self.clock() - last_prune >= PRUNE_EVERY
                ):
                    last_prune = self.clock()
                    self._prune(self.settings.prune_after)
                if self.settings.vacuum_threshold:
                    dead = self.driver.vacuum_if_bloated(self.settings.vacuum_threshold)
                    if dead is not None:
                        logger.info("vacuumed the job table (%d dead rows)", dead)
            except _DB_ERRORS as exc:
                logger.warning("maintenance failed (%s); will retry", exc)

    def _prune(self, older_than: float) -> None:
        """Delete every job finished long enough ago, in short transactions of PRUNE_BATCH."""
        total = 0
        while not self._stopped_claiming.is_set():
            pruned = self.driver.prune(older_than, PRUNE_BATCH)
            total += pruned
            if pruned < PRUNE_BATCH:
                break
        if total:
            logger.info("pruned %d finished job(s)", total)

    # Shutdown ------------------------------------------------------------------

    def _shutdown(self) -> None:
        deadline = self.clock() + self.settings.shutdown_timeout
        while self._running_count() and self.clock() < deadline:
            self._runner.enforce_timeouts()
            self._wake.wait(min(0.05, max(deadline - self.clock(), 0)))
            self._wake.clear()
        # Stop what still runs (process isolation kills its children), store the outcomes
        # already delivered, and only then give back the jobs that truly did not finish.
        self._runner.shutdown()
        self._outcomes.put(None)
        if self._reporter is not None:
            self._reporter.join(timeout=5)
        self._release_unfinished()
        self._stopped_claiming.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._listener is not None:
            self._listener.stop()
            self._listener.join(timeout=5)
        try:
            if self.worker_id is not None:
                self.driver.deregister_worker(self.worker_id)
        except _DB_ERRORS as exc:
            logger.warning("could not deregister (%s); the reaper will clean up", exc)
        self.driver.close()
        logger.info("worker %s stopped after claiming %d job(s)", self.worker_id, self.jobs_claimed)

    def _release_unfinished(self) -> None:
        with self._running_lock:
            unfinished = list(self._running.values())
        if not unfinished:
            return
        by_worker: dict[str, list[tuple[int, int]]] = {}
        for running in unfinished:
            by_worker.setdefault(running.worker_id, []).append(
                (running.job.id, running.job.attempt)
            )
        for worker_id, jobs in by_worker.items():
            try:
                released = self.driver.release(worker_id, jobs)
                logger.warning(
                    "shutdown timeout: gave %d unfinished job(s) back to the queue: %s",
                    len(released),
                    ", ".join(map(str, sorted(released))),
                )
            except _DB_ERRORS as exc:
                logger.warning("could not give unfinished jobs back (%s); the reaper will", exc)


def _wait_to_retry(backoff: Backoff, what: str, exc: Exception) -> None:
    """Log a write that a retry may cure, and sleep the backoff's next delay."""
    delay = backoff.next_delay()
    logger.warning("could not store %s (%s); retrying in %.2fs", what, exc, delay)
    time.sleep(delay)


def _is_connection_problem(exc: SchemaVersionMismatch) -> bool:
    """Whether the version check failed because the database could not be reached."""
    return isinstance(exc.__cause__, _DB_ERRORS)


def _forget(
    pending: list[tuple[RunningJob, Outcome]], written: list[tuple[RunningJob, Outcome]]
) -> None:
    """Drop the written outcomes from ``pending``, by identity: comparing the dataclasses
    field by field, as list.remove would, made each batch of n outcomes cost n² compares."""
    gone = {id(running) for running, _ in written}
    pending[:] = [item for item in pending if id(item[0]) not in gone]
