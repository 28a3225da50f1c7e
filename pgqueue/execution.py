"""Run one claimed job's task and say how it went; shared by thread and process isolation.

Nothing here writes the outcome: the worker does, fenced by worker and attempt.
Only a generator's output is written as it is produced, through ``OutputSink``.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from traceback import format_exception
from typing import Any

from django.db import close_old_connections
from django.tasks import TaskContext, TaskResultStatus
from django.tasks.base import TaskError
from django.tasks.signals import task_finished, task_started
from django.utils import timezone

from pgqueue import jsonutil, registry
from pgqueue.backend import PgQueueBackend, PgQueueTaskResult, job_result
from pgqueue.drivers.base import ClaimedJob
from pgqueue.exceptions import OutcomeNotStored, ResultNotJSON, TaskNotAllowed, TaskTimeout

#: Appends yielded values to the job's stored output; returns False if the lease was lost.
OutputSink = Callable[[list[Any]], bool]

#: Failures that would repeat identically, so they are not retried.
_NOT_RETRIED = (TaskNotAllowed, ResultNotJSON, OutcomeNotStored)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended: a JSON result, or an error to record (and whether to retry)."""

    succeeded: bool
    result: Any = None
    error: dict[str, Any] | None = None
    retry: bool = True
    duration: float = 0.0

    @property
    def summary(self) -> str:
        if self.succeeded:
            return "succeeded"
        assert self.error is not None
        return f"failed: {self.error['exception_class_path']}: {self.error.get('message', '')}"


def error_of(exc: BaseException) -> dict[str, Any]:
    """The stored form of an exception (Django's TaskError fields, plus the message)."""
    kind = type(exc)
    return {
        "exception_class_path": f"{kind.__module__}.{kind.__qualname__}",
        "traceback": jsonutil.storable_text("".join(format_exception(exc))),
        "message": jsonutil.storable_text(str(exc)[:2000]),
    }


def failure(exc: BaseException, duration: float = 0.0) -> Outcome:
    """An Outcome for an exception, retried unless retrying cannot help."""
    return Outcome(
        succeeded=False,
        error=error_of(exc),
        retry=not isinstance(exc, _NOT_RETRIED),
        duration=duration,
    )


class AsyncRunner:
    """One event loop thread, shared by the async tasks of a worker process."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="pgqueue-async", daemon=True
                ).start()
            return self._loop

    def run(self, coroutine: Any, timeout: float | None) -> Any:
        """Run a coroutine on the loop; TaskTimeout after ``timeout`` seconds (it is cancelled)."""
        future = asyncio.run_coroutine_threadsafe(_with_timeout(coroutine, timeout), self.loop())
        return future.result()


async def _with_timeout(coroutine: Any, timeout: float | None) -> Any:
    try:
        return await asyncio.wait_for(coroutine, timeout)
    except TimeoutError:
        raise TaskTimeout(f"the task ran longer than its timeout of {timeout:g}s") from None


async def _drain_async_generator(agen: Any, emit: Callable[[Any], None]) -> Any:
    async for value in agen:
        emit(value)
    return None


class Interruptible:
    """Marks when task code runs in this thread, so a thread-mode timeout can interrupt only it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thread_id: int | None = None

    def __enter__(self) -> Interruptible:
        with self.lock:
            self.thread_id = threading.get_ident()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self.lock:
            self.thread_id = None


def running_result(backend: PgQueueBackend, job: ClaimedJob, task: Any) -> PgQueueTaskResult:
    """The TaskResult a running attempt presents to signals and to tasks that take context."""
    return job_result(
        backend.alias,
        task,
        job,
        status=TaskResultStatus.RUNNING,
        job_status="running",
        finished_at=None,
        last_attempted_at=timezone.now(),
        output=[],
    )


def execute(
    job: ClaimedJob,
    *,
    backend: PgQueueBackend,
    allowed_tasks: tuple[str, ...],
    output: OutputSink,
    async_runner: AsyncRunner,
    interruptible: Interruptible | None = None,
    clock: Callable[[], float],
) -> Outcome:
    """Run the job's task once and return its Outcome; never raises for the task's own errors.

    ``interruptible`` (thread isolation) is entered while synchronous task code runs,
    so the worker can raise TaskTimeout into exactly that code.
    """
    started = clock()
    close_old_connections()
    try:
        try:
            task = registry.resolve(job.task_path, allowed_tasks, backend.alias)
        except TaskNotAllowed as exc:
            return failure(exc, clock() - started)
        result = running_result(backend, job, task)
        task_started.send(type(backend), task_result=result)

        def emit(value: Any) -> None:
            try:
                stored = jsonutil.normalize(value, "a yielded value")
            except TypeError as exc:
                raise ResultNotJSON(str(exc)) from None
            output([stored])

        args = list(job.args)
        if task.takes_context:
            args.insert(0, TaskContext(task_result=result))
        timeout = getattr(task, "timeout", None)
        try:
            func = task.func
            kind = _kind_of(func)
            if kind is _Kind.COROUTINE:
                value = async_runner.run(func(*args, **job.kwargs), timeout)
            elif kind is _Kind.ASYNC_GENERATOR:
                value = async_runner.run(
                    _drain_async_generator(func(*args, **job.kwargs), emit), timeout
                )
            else:
                with interruptible or _NO_INTERRUPT:
                    value = func(*args, **job.kwargs)
                    if inspect.isgenerator(value):
                        value = _drain_generator(value, emit)
            try:
                stored = jsonutil.normalize(value, "the return value")
            except TypeError as exc:
                raise ResultNotJSON(str(exc)) from None
        except BaseException as exc:  # a task calling sys.exit() is still just a failed attempt
            outcome = failure(exc, clock() - started)
            _finished(backend, result, TaskResultStatus.FAILED, exc)
            return outcome
        _finished(backend, result, TaskResultStatus.SUCCESSFUL, None)
        return Outcome(succeeded=True, result=stored, duration=clock() - started)
    except TaskTimeout as exc:
        # A thread-mode timeout can land just after the task returned; the deadline passed anyway.
        return failure(exc, clock() - started)
    finally:
        close_old_connections()


class _Kind(enum.Enum):
    PLAIN = "plain"
    COROUTINE = "coroutine"
    ASYNC_GENERATOR = "async generator"


def _kind_of(func: Callable[..., Any]) -> _Kind:
    """How a task function is called; cached, since inspect's checks cost more than a no-op job."""
    try:
        return _cached_kind(func)
    except Exception:  # an unhashable callable object, or one whose __hash__ fails
        return _inspect_kind(func)


def _inspect_kind(func: Callable[..., Any]) -> _Kind:
    if inspect.iscoroutinefunction(func):
        return _Kind.COROUTINE
    if inspect.isasyncgenfunction(func):
        return _Kind.ASYNC_GENERATOR
    return _Kind.PLAIN


_cached_kind = functools.lru_cache(maxsize=1024)(_inspect_kind)


class _NoInterrupt:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_INTERRUPT = _NoInterrupt()


def _drain_generator(generator: Any, emit: Callable[[Any], None]) -> Any:
    while True:
        try:
            value = next(generator)
        except StopIteration as stop:
            return stop.value
        emit(value)


def _finished(
    backend: PgQueueBackend,
    result: PgQueueTaskResult,
    status: TaskResultStatus,
    exc: BaseException | None,
) -> None:
    object.__setattr__(result, "status", status)
    if exc is not None:
        result.errors.append(
            TaskError(
                exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
                traceback="".join(format_exception(exc)),
            )
        )
    task_finished.send(type(backend), task_result=result)
