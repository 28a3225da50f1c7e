"""The queue operations a database driver provides; one implementation per database.

PostgreSQL's driver calls the PL/pgSQL functions in sql/ (the source of truth for
lifecycle semantics); SQLite's mirrors them in Python, and the contract suite in
tests/contract runs against both so they cannot drift.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True, slots=True)
class NewJob:
    """A validated enqueue request (see pgqueue.validation.new_job)."""

    task_path: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue_name: str = "default"
    priority: int = 0
    #: An absolute time, a delay computed on the database clock, or None for now.
    run_after: datetime | timedelta | None = None
    #: None means the default (pgqueue.conf.DEFAULT_MAX_ATTEMPTS, applied by the database).
    max_attempts: int | None = None
    unique_key: str | None = None


@dataclass(frozen=True, slots=True)
class Enqueued:
    """What an enqueue returns: the job id and the database time it was enqueued at."""

    id: int
    enqueued_at: datetime


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker claimed; ``attempt`` fences every write the worker makes about it."""

    id: int
    task_path: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue_name: str
    priority: int
    run_after: datetime
    enqueued_at: datetime
    started_at: datetime
    attempt: int
    max_attempts: int
    worker_ids: list[str]
    errors: list[dict[str, Any]]


class Driver(ABC):
    """Queue operations on one Django database alias."""

    #: Whether workers can be woken by LISTEN/NOTIFY (otherwise they poll).
    supports_notify: bool = False

    def __init__(self, alias: str):
        self.alias = alias

    # Enqueue side: runs on the caller's Django connection, inside its transaction.

    @abstractmethod
    def enqueue(self, job: NewJob) -> Enqueued:
        """Insert one job (or find the active job holding its unique_key)."""

    @abstractmethod
    def enqueue_many(self, jobs: list[NewJob]) -> list[Enqueued]:
        """Insert many jobs in one call; results follow the input order."""

    # Worker side: runs on the worker's own connections.

    @abstractmethod
    def register_worker(
        self, hostname: str, pid: int, selectors: list[str], concurrency: int
    ) -> str:
        """Create a worker row with a fresh identity and return it."""

    @abstractmethod
    def heartbeat(self, worker_id: str) -> bool:
        """Refresh the worker's heartbeat; False if the worker row is gone (it was reaped)."""

    @abstractmethod
    def deregister_worker(self, worker_id: str) -> int:
        """Remove the worker row; jobs it still holds are handled as lost. Returns their number."""

    @abstractmethod
    def claim(self, worker_id: str, selectors: list[str], limit: int) -> list[ClaimedJob]:
        """Claim up to ``limit`` ready jobs; raises WorkerNotRegistered if the worker was reaped."""

    @abstractmethod
    def complete(self, worker_id: str, outcomes: list[tuple[int, int, Any]]) -> set[int]:
        """Store results of (job_id, attempt, result); return the ids whose lease still held."""

    @abstractmethod
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
        """Record a failed attempt; return the job's new status, or None if the lease was lost."""

    @abstractmethod
    def release(self, worker_id: str, jobs: list[tuple[int, int]]) -> set[int]:
        """Give (job_id, attempt) back without consuming the attempt; return the ids released."""

    @abstractmethod
    def append_output(self, worker_id: str, job_id: int, attempt: int, values: list[Any]) -> bool:
        """Append yielded values to the job's output; False if the lease was lost."""

    @abstractmethod
    def reap(self, orphan_after: float) -> int:
        """Requeue (or fail) jobs of workers whose heartbeat is older than orphan_after seconds."""

    @abstractmethod
    def next_run_after(self, selectors: list[str]) -> datetime | None:
        """The earliest run_after of a scheduled job the selectors match."""

    # Operator side.

    @abstractmethod
    def cancel(self, job_id: int) -> bool:
        """Cancel a job that has not started; False if it is running or finished."""

    @abstractmethod
    def retry(self, job_id: int, extra_attempts: int = 1) -> bool:
        """Requeue a failed or cancelled job; False if it is in another state."""

    @abstractmethod
    def pause_queue(self, queue_name: str) -> None:
        """Stop workers claiming from a queue."""

    @abstractmethod
    def resume_queue(self, queue_name: str) -> None:
        """Let workers claim from a queue again."""

    @abstractmethod
    def prune(self, older_than: float, max_jobs: int | None = None) -> int:
        """Delete jobs finished more than ``older_than`` seconds ago; return how many."""

    def vacuum_if_bloated(self, dead_rows: int) -> int | None:
        """Vacuum the job table if it holds at least ``dead_rows`` dead rows; return how many
        it held, or None when it did not vacuum. Only PostgreSQL needs this."""
        return None

    def close(self) -> None:  # noqa: B027 (a default for drivers without connections of their own)
        """Release the driver's own connections (worker side)."""
