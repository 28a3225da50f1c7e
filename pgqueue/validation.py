"""Validate enqueue requests in Python before they reach the database.

The rules are those of ``pgqueue._check_job`` in sql/0001_initial.sql (the SQL
checks again for callers that bypass Python). Checking here first means a bad
argument raises a clear exception without aborting the caller's transaction,
and the SQLite driver gets the same rules; the contract tests run the same bad
inputs against both databases.
"""

import functools
import json
import re
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from pgqueue import jsonutil
from pgqueue.drivers.base import NewJob
from pgqueue.exceptions import InvalidJob
from pgqueue.queues import QUEUE_NAME_RULE, is_valid_queue_name

TASK_PATH_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
MAX_TASK_PATH_LENGTH = 255
MAX_PAYLOAD_BYTES = 1_048_576
MIN_PRIORITY, MAX_PRIORITY = -100, 100
MAX_UNIQUE_KEY_LENGTH = 255
# Far beyond any sensible retry policy, and small enough that attempts + extra stays an integer.
MAX_ATTEMPTS_LIMIT = 1_000_000


def _jsonb_text_bytes(value: Any, path: str) -> int:
    """Bytes of ``value`` as PostgreSQL prints jsonb (``jsonb::text``), the size _check_job
    limits; TypeError naming the first part of ``value`` that is not JSON.

    jsonb's text puts a space after every ',' and ':', so compact JSON would undercount.
    """
    if not value:
        return 2  # [] or {}
    problem = jsonutil.find_non_json(value, path)
    if problem is not None:
        raise TypeError(problem)
    text = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    return len(text) if text.isascii() else len(text.encode())


@functools.lru_cache(maxsize=4096)
def _is_task_path(text: str) -> bool:
    """Cached: an application enqueues the same few task paths over and over."""
    return TASK_PATH_RE.fullmatch(text) is not None


def _is_whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def new_job(
    task_path: str,
    args: Any = (),
    kwargs: Any = None,
    *,
    queue_name: str = "default",
    priority: int = 0,
    run_after: datetime | timedelta | None = None,
    max_attempts: int | None = None,
    unique_key: str | None = None,
    where: str = "pgqueue.enqueue",
) -> NewJob:
    """Check one enqueue request and return it as a NewJob; raise InvalidJob or TypeError."""
    if (
        not isinstance(task_path, str)
        or len(task_path) > MAX_TASK_PATH_LENGTH
        or not _is_task_path(task_path)
    ):
        raise InvalidJob(
            f"{where}: task_path {task_path!r} is not a dotted Python path such as "
            f"'myapp.tasks.send_email' (at most {MAX_TASK_PATH_LENGTH} characters)"
        )
    if not isinstance(args, list | tuple):
        raise TypeError(f"{where}: args must be a list or tuple, got {type(args).__name__}")
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict):
        raise TypeError(f"{where}: kwargs must be a dict, got {type(kwargs).__name__}")
    # Copies, so that the job and its result handle keep what was enqueued.
    args = list(args)
    kwargs = dict(kwargs)
    size = _jsonb_text_bytes(args, "args") + _jsonb_text_bytes(kwargs, "kwargs")
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidJob(
            f"{where}: args and kwargs together are {size} bytes of JSON, over the limit of "
            f"{MAX_PAYLOAD_BYTES}; store large data in a table and pass its key to the task"
        )
    if not is_valid_queue_name(queue_name):
        raise InvalidJob(f"{where}: queue_name {queue_name!r} is invalid: {QUEUE_NAME_RULE}")
    if not _is_whole_number(priority) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidJob(
            f"{where}: priority must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}, "
            f"got {priority!r}"
        )
    if isinstance(run_after, datetime):
        if timezone.is_naive(run_after):
            raise InvalidJob(f"{where}: run_after must be an aware datetime, got {run_after!r}")
    elif isinstance(run_after, timedelta):
        if run_after < timedelta(0):
            raise InvalidJob(f"{where}: run_after must not be a negative delay, got {run_after!r}")
    elif run_after is not None:
        raise InvalidJob(
            f"{where}: run_after must be a datetime, a timedelta or None, got {type(run_after).__name__}"
        )
    if max_attempts is not None and not is_attempt_count(max_attempts):
        raise InvalidJob(
            f"{where}: max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}, "
            f"got {max_attempts!r}"
        )
    if unique_key is not None and (
        not isinstance(unique_key, str)
        or not 1 <= len(unique_key) <= MAX_UNIQUE_KEY_LENGTH
        or jsonutil.text_problem(unique_key)
    ):
        raise InvalidJob(
            f"{where}: unique_key must be a string of 1 to {MAX_UNIQUE_KEY_LENGTH} characters "
            f"of valid text without NUL, got {unique_key!r}"
        )
    return NewJob(
        task_path=task_path,
        args=args,
        kwargs=kwargs,
        queue_name=queue_name,
        priority=priority,
        run_after=run_after,
        max_attempts=max_attempts,
        unique_key=unique_key,
    )


def is_attempt_count(value: object) -> bool:
    """A max_attempts or extra_attempts value: a whole number from 1 to MAX_ATTEMPTS_LIMIT."""
    return _is_whole_number(value) and 1 <= value <= MAX_ATTEMPTS_LIMIT
