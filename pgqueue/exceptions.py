"""Exceptions pgqueue raises, and the ones it records in a job's errors."""

from django.core.exceptions import ImproperlyConfigured


class PgQueueError(Exception):
    """Base class of pgqueue's own exceptions."""


class InvalidJob(PgQueueError, ValueError):
    """An enqueue call was given a bad argument; nothing was written."""


class TaskNotAllowed(PgQueueError):
    """A job names a task the worker must not run (not registered, not in ALLOWED_TASKS)."""


class TaskTimeout(BaseException):
    """A task ran longer than its timeout and was stopped.

    A BaseException, like KeyboardInterrupt, so that a task's own ``except
    Exception`` cannot swallow the stop.
    """


class ChildProcessDied(PgQueueError):
    """In process isolation, the child process running a task died (crash, os._exit, a kill)."""


class ResultNotJSON(PgQueueError, TypeError):
    """A task returned (or yielded) a value that cannot be stored as JSON."""


class OutcomeNotStored(PgQueueError):
    """The worker could not store an attempt's outcome (the database refused it for good);
    the attempt is recorded as failed with this error instead, and not retried."""


class WorkerLost(PgQueueError):
    """Recorded (by the SQL reaper) for an attempt whose worker died or stopped mid-job."""


class SchemaVersionMismatch(ImproperlyConfigured):
    """The database's pgqueue SQL API is missing or not the version this code expects."""


class WorkerNotRegistered(PgQueueError):
    """The worker's row is gone (it was judged dead and reaped); it must register again."""


class JobNotFound(PgQueueError, LookupError):
    """An operator function was given the id of a job that does not exist."""
