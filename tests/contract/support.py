"""Helpers of the contract suite: enqueue, act as a worker, make a worker look dead."""

from datetime import timedelta

import psycopg
from django.utils import timezone

import pgqueue
from pgqueue.drivers.base import Driver
from pgqueue.exceptions import InvalidJob
from pgqueue.models import Job, Worker

#: What a worker operation raises for a bad argument. The messages are the same; the
#: types differ: PostgreSQL's functions raise SQLSTATE 22023, the SQLite driver InvalidJob.
BAD_ARGUMENT = (InvalidJob, psycopg.errors.InvalidParameterValue)

#: An error as the worker records one (fail() adds attempt, worker_id and at).
ERROR = {
    "exception_class_path": "builtins.ValueError",
    "traceback": "Traceback (most recent call last):\nValueError: boom\n",
    "message": "boom",
}
ERROR_KEYS = {"exception_class_path", "traceback", "message", "attempt", "worker_id", "at"}


def enqueue(task="app.tasks.work", **options) -> int:
    """Enqueue through the public API and return the job id."""
    return int(pgqueue.enqueue(task, **options).id)


def register(driver: Driver, selectors=("*",)) -> str:
    return driver.register_worker("host", 1, list(selectors), 4)


def claim_one(driver: Driver, worker_id: str, selectors=("*",)):
    [job] = driver.claim(worker_id, list(selectors), 1)
    return job


def make_stale(alias: str, worker_id: str | None = None, *, ago=timedelta(hours=1)) -> None:
    """Backdate a worker's heartbeat and every job's claim time, as if time had passed."""
    then = timezone.now() - ago
    if worker_id is not None:
        Worker.objects.using(alias).filter(pk=worker_id).update(heartbeat_at=then)
    Job.objects.using(alias).filter(last_attempted_at__isnull=False).update(last_attempted_at=then)


def first_line(exc: BaseException) -> str:
    """An error's message without PostgreSQL's HINT and CONTEXT lines."""
    return str(exc).splitlines()[0]
