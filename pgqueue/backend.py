"""pgqueue as a backend of Django's tasks framework (django.tasks).

    TASKS = {"default": {"BACKEND": "pgqueue.backend.PgQueueBackend"}}

``@task`` then builds PgQueueTask objects, which accept pgqueue's own options:
``@task(max_attempts=5, timeout=30, unique=True)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.tasks import Task, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTask

from pgqueue import jsonutil, registry
from pgqueue.queues import QUEUE_NAME_RULE, is_valid_queue_name
from pgqueue.validation import MAX_ATTEMPTS_LIMIT, is_attempt_count

_REFRESHED_EXTRAS = ("job_status", "output", "max_attempts", "run_after")


@dataclass(frozen=True, slots=True, kw_only=True)
class PgQueueTask(Task):
    """Django's Task with pgqueue's options.

    max_attempts: attempts before the job ends failed (None: the default, 3).
    timeout: seconds an attempt may run before it is stopped and counted as failed.
    unique: while a job of this task with the same arguments waits or runs,
    enqueueing it again returns that job instead of adding one.
    """

    max_attempts: int | None = None
    timeout: float | None = None
    unique: bool = False

    def __post_init__(self) -> None:
        Task.__post_init__(self)
        registry.register(self)

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: datetime | timedelta | None = None,
        backend: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        unique: bool | None = None,
    ) -> PgQueueTask:
        """Return a copy with changed defaults (Django's options and pgqueue's)."""
        changes = {
            name: value
            for name, value in (
                ("priority", priority),
                ("queue_name", queue_name),
                ("run_after", run_after),
                ("backend", backend),
                ("max_attempts", max_attempts),
                ("timeout", timeout),
                ("unique", unique),
            )
            if value is not None
        }
        return dataclasses.replace(self, **changes)


def unvalidated_task(**values: Any) -> PgQueueTask:
    """Build a PgQueueTask without the backend's validation or registration.

    For tasks describing stored jobs: a job may sit in a queue outside Django's
    QUEUES (pgqueue.enqueue and SQL accept any valid queue) or name a task this
    process does not know.
    """
    task = object.__new__(PgQueueTask)
    for f in dataclasses.fields(PgQueueTask):
        object.__setattr__(task, f.name, values.get(f.name, f.default))
    return task


@dataclass(frozen=True, slots=True, kw_only=True)
class PgQueueTaskResult(TaskResult):
    """Django's TaskResult with what pgqueue stores besides.

    job_status: pgqueue's own status (scheduled, ready, running, succeeded, failed,
    cancelled); Django's ``status`` maps scheduled and ready to READY, and
    cancelled to FAILED.
    output: the values a generator task has yielded so far (readable while it runs).
    """

    job_status: str = ""
    output: list[Any] = field(default_factory=list)
    max_attempts: int = 0
    run_after: datetime | None = None

    def __post_init__(self) -> None:
        # Django copies args and kwargs into their JSON form; flat ones (most) are in it
        # already, and the copy was a tenth of a bulk enqueue's Python time.
        if not (jsonutil.is_flat(self.args) and jsonutil.is_flat(self.kwargs)):
            TaskResult.__post_init__(self)

    def refresh(self) -> None:
        """Reload the stored job, pgqueue's fields included."""
        fresh = self.task.get_backend().get_result(self.id)
        self._copy_from(fresh)

    async def arefresh(self) -> None:
        """See refresh()."""
        fresh = await self.task.get_backend().aget_result(self.id)
        self._copy_from(fresh)

    def _copy_from(self, fresh: TaskResult) -> None:
        from django.tasks.base import TASK_REFRESH_ATTRS

        for attr in (*TASK_REFRESH_ATTRS, *_REFRESHED_EXTRAS):
            object.__setattr__(self, attr, getattr(fresh, attr))


def job_result(
    backend_alias: str,
    task: Task,
    job: Any,
    *,
    status: TaskResultStatus,
    job_status: str,
    finished_at: datetime | None,
    last_attempted_at: datetime | None,
    output: list[Any],
) -> PgQueueTaskResult:
    """A result describing a job; ``job`` is a stored Job or a ClaimedJob (both carry its columns)."""
    return PgQueueTaskResult(
        task=task,
        id=str(job.id),
        status=status,
        enqueued_at=job.enqueued_at,
        started_at=job.started_at,
        finished_at=finished_at,
        last_attempted_at=last_attempted_at,
        args=job.args,
        kwargs=job.kwargs,
        backend=backend_alias,
        errors=[
            TaskError(
                exception_class_path=e["exception_class_path"], traceback=e.get("traceback", "")
            )
            for e in job.errors
        ],
        worker_ids=list(job.worker_ids),
        job_status=job_status,
        output=list(output),
        max_attempts=job.max_attempts,
        run_after=job.run_after,
    )


class PgQueueBackend(BaseTaskBackend):
    """Stores tasks as pgqueue jobs; ``pgqueue_worker`` runs them."""

    task_class = PgQueueTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def validate_task(self, task: Task) -> None:
        """Django's checks (with run_after also allowed as a delay), then pgqueue's options."""
        if isinstance(task.run_after, timedelta):
            if task.run_after < timedelta(0):
                raise InvalidTask("run_after must not be a negative delay.")
            task = unvalidated_task(
                **{f.name: getattr(task, f.name) for f in dataclasses.fields(task)}
                | {"run_after": None}
            )
        super().validate_task(task)
        if not is_valid_queue_name(task.queue_name):
            raise InvalidTask(f"queue_name {task.queue_name!r} is invalid: {QUEUE_NAME_RULE}.")
        max_attempts = getattr(task, "max_attempts", None)
        if max_attempts is not None and not is_attempt_count(max_attempts):
            raise InvalidTask(
                f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}, "
                f"got {max_attempts!r}."
            )
        timeout = getattr(task, "timeout", None)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise InvalidTask(f"timeout must be a positive number of seconds, got {timeout!r}.")
        if not isinstance(getattr(task, "unique", False), bool):
            raise InvalidTask(f"unique must be True or False, got {task.unique!r}.")

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> PgQueueTaskResult:
        """Store the task as a job in the queue database, inside the caller's transaction."""
        from pgqueue import api

        self.validate_task(task)
        return api.enqueue_task(self, task, args, kwargs)

    def get_result(self, result_id: str | int) -> PgQueueTaskResult:
        """Read a job by id (the decimal string of TaskResult.id, or an int)."""
        from pgqueue import api

        return api.read_result(self, result_id)
