"""The direct Python API: enqueue by Task or dotted path, read results, operate queues.

Everything runs on the queue database's Django connection, so inside
``transaction.atomic()`` a job exists if and only if the caller's transaction commits.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.tasks import Task, TaskResultStatus, task_backends
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_enqueued

from pgqueue import registry, validation
from pgqueue.backend import PgQueueBackend, PgQueueTaskResult, job_result, unvalidated_task
from pgqueue.conf import DEFAULT_MAX_ATTEMPTS, get_settings
from pgqueue.drivers import get_driver
from pgqueue.drivers.base import Enqueued, NewJob
from pgqueue.exceptions import InvalidJob

#: pgqueue's statuses as Django's tasks framework names them.
DJANGO_STATUS = {
    "scheduled": TaskResultStatus.READY,
    "ready": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "succeeded": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}

_JOB_KEYS = {
    "task",
    "args",
    "kwargs",
    "queue_name",
    "priority",
    "run_after",
    "max_attempts",
    "unique_key",
}


def pgqueue_backend(alias: str | None = None) -> PgQueueBackend:
    """The TASKS backend that is pgqueue's (``alias``, or the first one configured)."""
    if alias is not None:
        backend = task_backends[alias]
        if isinstance(backend, PgQueueBackend):
            return backend
        raise ImproperlyConfigured(f"TASKS[{alias!r}] is not pgqueue.backend.PgQueueBackend")
    for backend in task_backends.all():
        if isinstance(backend, PgQueueBackend):
            return backend
    raise ImproperlyConfigured(
        "pgqueue needs a TASKS entry with 'BACKEND': 'pgqueue.backend.PgQueueBackend' "
        "(for example TASKS = {'default': {'BACKEND': 'pgqueue.backend.PgQueueBackend'}})"
    )


def unique_key_for(task_path: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    """The unique_key of a ``unique=True`` task: its path and a digest of its arguments."""
    canonical = json.dumps(
        [args, kwargs], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return f"{task_path}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def _new_job(
    task: Task | str,
    args: Any,
    kwargs: Any,
    *,
    queue_name: str | None,
    priority: int | None,
    run_after: datetime | timedelta | None,
    max_attempts: int | None,
    unique_key: str | None,
    where: str,
) -> tuple[NewJob, Task | None]:
    if isinstance(task, Task):
        task_path = task.module_path
        queue_name = task.queue_name if queue_name is None else queue_name
        priority = task.priority if priority is None else priority
        run_after = task.run_after if run_after is None else run_after
        if max_attempts is None:
            max_attempts = getattr(task, "max_attempts", None)
        known: Task | None = task
    elif isinstance(task, str):
        task_path, known = task, registry.registered(task)
    else:
        raise TypeError(
            f"{where}: task must be a Task or a dotted path string, got {type(task).__name__}"
        )
    job = validation.new_job(
        task_path,
        args,
        kwargs,
        queue_name="default" if queue_name is None else queue_name,
        priority=0 if priority is None else priority,
        run_after=run_after,
        max_attempts=max_attempts,
        unique_key=unique_key,
        where=where,
    )
    if job.unique_key is None and known is not None and getattr(known, "unique", False):
        job = NewJob(
            **{**_fields(job), "unique_key": unique_key_for(task_path, job.args, job.kwargs)}
        )
    return job, known


def _fields(job: NewJob) -> dict[str, Any]:
    return {name: getattr(job, name) for name in NewJob.__slots__}


def _result(
    backend: PgQueueBackend, job: NewJob, known: Task | None, enqueued: Enqueued
) -> PgQueueTaskResult:
    task = known
    if task is None:
        task = registry.placeholder_task(
            job.task_path, backend.alias, queue_name=job.queue_name, priority=job.priority
        )
    result = PgQueueTaskResult(
        task=task,
        id=str(enqueued.id),
        status=TaskResultStatus.READY,
        enqueued_at=enqueued.enqueued_at,
        started_at=None,
        finished_at=None,
        last_attempted_at=None,
        args=job.args,
        kwargs=job.kwargs,
        backend=backend.alias,
        errors=[],
        worker_ids=[],
        job_status="scheduled" if job.run_after is not None else "ready",
        max_attempts=job.max_attempts or DEFAULT_MAX_ATTEMPTS,
        run_after=job.run_after if isinstance(job.run_after, datetime) else None,
    )
    task_enqueued.send(type(backend), task_result=result)
    return result


def enqueue_task(backend: PgQueueBackend, task: Task, args: Any, kwargs: Any) -> PgQueueTaskResult:
    """Enqueue a validated django.tasks Task (the backend's enqueue)."""
    job, known = _new_job(
        task,
        args,
        kwargs,
        queue_name=None,
        priority=None,
        run_after=None,
        max_attempts=None,
        unique_key=None,
        where=f"{task.module_path}.enqueue",
    )
    enqueued = get_driver(get_settings().database).enqueue(job)
    return _result(backend, job, known, enqueued)


def enqueue(
    task: Task | str,
    args: list[Any] | tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue_name: str | None = None,
    priority: int | None = None,
    run_after: datetime | timedelta | None = None,
    max_attempts: int | None = None,
    unique_key: str | None = None,
) -> PgQueueTaskResult:
    """Enqueue one job in the caller's transaction and return its result handle.

    ``task`` is a Task or the dotted path of a registered or allowed task (not
    imported here: the worker decides). Options left as None come from the Task,
    else from pgqueue's defaults. ``run_after`` is an aware datetime, or a
    timedelta counted on the database clock. Raises InvalidJob for a bad option
    and TypeError for arguments that are not JSON; nothing is written then.
    """
    job, known = _new_job(
        task,
        args,
        kwargs,
        queue_name=queue_name,
        priority=priority,
        run_after=run_after,
        max_attempts=max_attempts,
        unique_key=unique_key,
        where="pgqueue.enqueue",
    )
    backend = pgqueue_backend(known.backend if known is not None else None)
    enqueued = get_driver(get_settings().database).enqueue(job)
    return _result(backend, job, known, enqueued)


def enqueue_many(jobs: Iterable[Mapping[str, Any]]) -> list[PgQueueTaskResult]:
    """Enqueue many jobs in one database call; results follow the input order.

    Each job is a mapping with ``task`` (a Task or dotted path) and optionally
    args, kwargs, queue_name, priority, run_after, max_attempts, unique_key (as
    in enqueue()). All are validated before anything is written. For 1,000 jobs
    or more, Python's cyclic garbage collector is paused while they are validated
    and while their results are built (not during the database call).
    """
    specs = list(jobs)
    bulk = len(specs) >= _PAUSE_COLLECTOR_FROM
    with _collector_paused(bulk):
        prepared = [_prepare(index, spec) for index, spec in enumerate(specs)]
    if not prepared:
        return []
    backend = pgqueue_backend()
    enqueued = get_driver(get_settings().database).enqueue_many([job for job, _ in prepared])
    with _collector_paused(bulk):
        return [
            _result(backend, job, known, e)
            for (job, known), e in zip(prepared, enqueued, strict=True)
        ]


#: Batches from this size pause the garbage collector (see _collector_paused).
_PAUSE_COLLECTOR_FROM = 1000


@contextlib.contextmanager
def _collector_paused(pause: bool) -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a bulk call builds its objects.

    A 50,000-job enqueue_many allocates hundreds of thousands of objects, none in a
    reference cycle, and each allocation burst set off collector passes that scanned
    them all again: about a fifth of the call's time. Reference counting still frees
    everything as usual. The pause is process-wide, so it is kept to the CPU-bound
    steps; the collector resumes after each, unless the application had turned it
    off itself (or another thread did so meanwhile: then it is turned back on).
    """
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _prepare(index: int, spec: Any) -> tuple[NewJob, Task | None]:
    """Validate jobs[index] of an enqueue_many call."""
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"pgqueue.enqueue_many: jobs[{index}] must be a mapping, got {type(spec).__name__}"
        )
    unknown = set(spec) - _JOB_KEYS
    if unknown or "task" not in spec:
        raise InvalidJob(
            f"pgqueue.enqueue_many: jobs[{index}] needs 'task' and may have only "
            f"{', '.join(sorted(_JOB_KEYS))}; got {', '.join(sorted(map(str, spec)))}"
        )
    return _new_job(
        spec["task"],
        spec.get("args", ()),
        spec.get("kwargs"),
        queue_name=spec.get("queue_name"),
        priority=spec.get("priority"),
        run_after=spec.get("run_after"),
        max_attempts=spec.get("max_attempts"),
        unique_key=spec.get("unique_key"),
        where=f"pgqueue.enqueue_many: jobs[{index}]",
    )


def _job_id(result_id: str | int) -> int:
    if isinstance(result_id, int) and not isinstance(result_id, bool):
        return result_id
    if isinstance(result_id, str) and result_id.isascii() and result_id.isdigit():
        return int(result_id)
    raise TaskResultDoesNotExist(f"{result_id!r} is not a pgqueue job id (a decimal job number)")


def read_result(backend: PgQueueBackend, result_id: str | int) -> PgQueueTaskResult:
    """Load the stored job ``result_id`` as a result (the backend's get_result)."""
    from pgqueue.models import Job

    job_id = _job_id(result_id)
    try:
        job = Job.objects.using(get_settings().database).get(pk=job_id)
    except Job.DoesNotExist:
        raise TaskResultDoesNotExist(f"pgqueue job {job_id} does not exist") from None
    return result_from_job(backend, job)


def result_from_job(backend: PgQueueBackend, job: Any) -> PgQueueTaskResult:
    """Describe a Job row as a result, with its registered task or a placeholder."""
    known = registry.registered(job.task_path)
    if known is not None:
        values = {f: getattr(known, f) for f in known.__dataclass_fields__}
        task = unvalidated_task(**values | {"queue_name": job.queue_name, "priority": job.priority})
        task = known if task == known else task
    else:
        task = registry.placeholder_task(
            job.task_path, backend.alias, queue_name=job.queue_name, priority=job.priority
        )
    result = job_result(
        backend.alias,
        task,
        job,
        status=DJANGO_STATUS[job.status],
        job_status=job.status,
        finished_at=job.finished_at,
        last_attempted_at=job.last_attempted_at,
        output=job.output,
    )
    if job.status == "succeeded":
        object.__setattr__(result, "_return_value", job.result)
    return result


def get_result(result_id: str | int) -> PgQueueTaskResult:
    """Read any job's result by id, whatever its task (unknown tasks get a placeholder)."""
    return read_result(pgqueue_backend(), result_id)


def _check_job_id(job_id: int, where: str) -> int:
    if not isinstance(job_id, int) or isinstance(job_id, bool):
        raise TypeError(f"{where}: job_id must be an int, got {type(job_id).__name__}")
    return job_id


def cancel(job_id: int) -> bool:
    """Cancel a job that has not started; False if it is running or finished. JobNotFound if unknown."""
    return get_driver(get_settings().database).cancel(_check_job_id(job_id, "pgqueue.cancel"))


def retry(job_id: int, extra_attempts: int = 1) -> bool:
    """Requeue a failed or cancelled job with ``extra_attempts`` more attempts."""
    _check_job_id(job_id, "pgqueue.retry")
    if not validation.is_attempt_count(extra_attempts):
        raise InvalidJob(
            f"pgqueue.retry: extra_attempts must be a whole number from 1 to "
            f"{validation.MAX_ATTEMPTS_LIMIT}, got {extra_attempts!r}"
        )
    return get_driver(get_settings().database).retry(job_id, extra_attempts)


def _check_queue(queue_name: str, where: str) -> str:
    from pgqueue.queues import QUEUE_NAME_RULE, is_valid_queue_name

    if not is_valid_queue_name(queue_name):
        raise InvalidJob(f"{where}: queue_name {queue_name!r} is invalid: {QUEUE_NAME_RULE}")
    return queue_name


def pause_queue(queue_name: str) -> None:
    """Stop workers claiming jobs from ``queue_name`` (it still accepts jobs)."""
    get_driver(get_settings().database).pause_queue(_check_queue(queue_name, "pgqueue.pause_queue"))


def resume_queue(queue_name: str) -> None:
    """Let workers claim from ``queue_name`` again."""
    get_driver(get_settings().database).resume_queue(
        _check_queue(queue_name, "pgqueue.resume_queue")
    )


def prune(older_than: timedelta, max_jobs: int | None = None) -> int:
    """Delete jobs that finished more than ``older_than`` ago; return how many."""
    if not isinstance(older_than, timedelta) or older_than < timedelta(0):
        raise InvalidJob(
            f"pgqueue.prune: older_than must be a timedelta of zero or more, got {older_than!r}"
        )
    if max_jobs is not None and (
        not isinstance(max_jobs, int) or isinstance(max_jobs, bool) or max_jobs < 1
    ):
        raise InvalidJob(
            f"pgqueue.prune: max_jobs must be a whole number of at least 1, got {max_jobs!r}"
        )
    return get_driver(get_settings().database).prune(older_than.total_seconds(), max_jobs)
