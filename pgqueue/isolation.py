"""How the worker runs a claimed job: in a runner thread, or in a child process a timeout can kill.

The worker hands each job to a Runner (``submit``), which runs it on a free slot
and delivers its Outcome to the worker's reporter; beyond building the runner,
the worker does not know which isolation it uses. A job's timeout is read from
its task as the runner starts it (so an allowlisted @task's timeout counts too),
and its clock starts then.

ThreadRunner (isolation "thread"): ``concurrency`` daemon threads of the worker
process. A task past its timeout gets TaskTimeout raised inside its Python code
(``enforce_timeouts``, called from the worker's loop); code blocked in C is
interrupted when it returns to Python.

ProcessRunner (isolation "process"): ``concurrency`` slots, each a supervisor
thread that owns one long-lived child process started with 'spawn' (the worker
is multi-threaded, so it must not fork). A child sets Django up once, then runs
the jobs its supervisor sends over a pipe with ``execution.execute()``: it
answers "started" with the task's timeout, then the Outcome. A generator's
values are written by the child itself, through its own driver connection, so
they reach the database as they are produced, as in thread isolation, with no
second kind of message and no load on the worker's pool. The supervisor waits
for the Outcome until the job's deadline:

- past it, the child is killed with its process group (so a task's own
  subprocesses die too); the attempt is recorded as TaskTimeout;
- if the child dies (os._exit, a segfault, the OOM killer), the attempt is
  recorded as ChildProcessDied, naming the exit code or signal;
- with ``max_jobs_per_child``, a child that ran that many jobs exits cleanly.

A replacement child is started at once, and the failed attempt is retried per
max_attempts like any other; a child found dead while idle is replaced without
costing the next job anything. ``start()`` waits until every first child is
ready, so a worker whose children cannot start stops instead of failing jobs.
Children ignore SIGINT and SIGTERM (the worker decides when they stop) and are
killed by the kernel if the worker dies (PR_SET_PDEATHSIG). ``shutdown()`` lets
idle children exit and kills those still running a job before the worker gives
their jobs back to the queue; no child outlives the worker.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

from pgqueue import registry
from pgqueue.drivers.base import ClaimedJob
from pgqueue.exceptions import ChildProcessDied, TaskTimeout
from pgqueue.execution import Interruptible, Outcome, failure

if TYPE_CHECKING:
    from pgqueue.backend import PgQueueBackend
    from pgqueue.drivers.base import Driver

logger = logging.getLogger("pgqueue.worker")

#: Seconds a new child process may take to set Django up before its job fails.
CHILD_START_TIMEOUT = 60.0
#: Seconds a child asked to stop may take to exit before it is killed.
CHILD_STOP_TIMEOUT = 5.0


@dataclass
class RunningJob:
    """A claimed job this worker is running; its writes are fenced by worker_id and attempt."""

    job: ClaimedJob
    worker_id: str
    #: When the task must end, on the runner's clock; set by the runner as the task starts.
    deadline: float | None = None
    interruptible: Interruptible = field(default_factory=Interruptible)
    timed_out: bool = False


#: Hands an attempt's Outcome to the worker's reporter.
Deliver = Callable[[RunningJob, Outcome], None]


def task_timeout(task_path: str, allowed_tasks: tuple[str, ...], alias: str) -> float | None:
    """The timeout of the task a job names, resolved as ``execute()`` will resolve it.

    Resolving here (not just looking in the registry) also finds the timeout of an
    allowlisted @task object, whose module nothing imported before its first job.
    """
    try:
        task = registry.resolve(task_path, allowed_tasks, alias)
    except Exception:  # execute() records why the task cannot run
        return None
    return getattr(task, "timeout", None)


class Runner(ABC):
    """Runs submitted jobs, one per slot, and delivers each job's Outcome."""

    @abstractmethod
    def start(self) -> None:
        """Start the slots."""

    @abstractmethod
    def submit(self, jobs: list[RunningJob]) -> None:
        """Run each job on a free slot (the worker submits no more jobs than there are slots)."""

    def enforce_timeouts(self) -> None:  # noqa: B027 (a runner may watch deadlines itself)
        """Stop tasks past their deadline; the worker calls this from its loop."""

    def next_deadline(self) -> float | None:
        """The earliest deadline ``enforce_timeouts`` must act on, for the worker's sleep."""
        return None

    @abstractmethod
    def shutdown(self) -> None:
        """After the drain: end idle slots and stop what still runs, where it can be stopped."""

    @abstractmethod
    def kill(self) -> None:
        """Stop everything now, without waiting (a second signal); safe in a signal handler."""


class ThreadRunner(Runner):
    """Daemon runner threads in the worker process; a timeout interrupts the task's Python code.

    Daemon, so that a worker whose shutdown timeout expired exits even while a task
    it gave back is still executing.

    Hand-off: submitted jobs wait in one queue, and a thread that finishes a job
    takes the next one at once. Idle threads are woken only when needed: when a
    batch arrives and no thread is running a job (one thread), or the busy ones
    have not taken a job for HANDOFF_DELAY, so they are slow (one thread per job);
    and, through the hand-off thread, one per job that has waited HANDOFF_DELAY
    without being taken. So a burst of short jobs runs on a few threads instead of
    waking every slot for a few microseconds of work each (the thread switches
    cost more than the jobs), while a job claimed beside long ones starts at once,
    and one queued behind a short burst within HANDOFF_DELAY.
    """

    #: Seconds a submitted job may wait for a busy thread before an idle one is woken for it.
    HANDOFF_DELAY = 0.002

    def __init__(
        self,
        count: int,
        *,
        backend: PgQueueBackend,
        driver: Driver,
        allowed_tasks: tuple[str, ...],
        deliver: Deliver,
        clock: Callable[[], float] = time.monotonic,
    ):
        from pgqueue.execution import AsyncRunner

        self._count = count
        self._backend = backend
        self._driver = driver
        self._allowed_tasks = allowed_tasks
        self._deliver = deliver
        self._clock = clock
        self._async = AsyncRunner()
        queue_lock = threading.Lock()
        # The hand-off state, all guarded by queue_lock. Runner threads wait on _work, the
        # hand-off thread on _submitted. Its times are time.monotonic(): they pace real
        # waits, whatever clock the deadlines use.
        self._work = threading.Condition(queue_lock)
        self._submitted = threading.Condition(queue_lock)
        self._pending: collections.deque[tuple[float, RunningJob]] = collections.deque()
        self._idle = 0  # threads waiting on _work
        self._woken = 0  # of those, notified but not yet running again
        self._running_jobs = 0
        self._last_take = 0.0
        self._closing = False
        #: Running jobs that have a deadline, for enforce_timeouts.
        self._timed: dict[int, RunningJob] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        for i in range(self._count):
            threading.Thread(target=self._serve, name=f"pgqueue-runner-{i}", daemon=True).start()
        threading.Thread(target=self._hand_off, name="pgqueue-hand-off", daemon=True).start()

    def submit(self, jobs: list[RunningJob]) -> None:
        now = time.monotonic()
        with self._work:
            self._pending.extend((now, running) for running in jobs)
            if self._running_jobs == 0:
                self._wake(1)
            elif now - self._last_take >= self.HANDOFF_DELAY:
                self._wake(len(jobs))
            self._submitted.notify()

    def _wake(self, wanted: int) -> None:
        """Notify up to ``wanted`` idle threads not already notified (queue_lock held)."""
        count = min(wanted, self._idle - self._woken)
        if count > 0:
            self._woken += count
            self._work.notify(count)

    def _serve(self) -> None:
        finished = False
        while (running := self._take(finished)) is not None:
            self._deliver(running, self._run(running))
            finished = True

    def _take(self, finished: bool) -> RunningJob | None:
        """The next submitted job, waiting for one; None once the runner is shutting down.

        ``finished``: this thread has just delivered the outcome of its previous job.
        """
        with self._work:
            if finished:
                self._running_jobs -= 1
            while not self._pending or self._closing:
                if self._closing:
                    return None
                self._idle += 1
                try:
                    self._work.wait()
                finally:
                    self._idle -= 1
                    if self._woken:
                        self._woken -= 1
            self._running_jobs += 1
            self._last_take = time.monotonic()
            return self._pending.popleft()[1]

    def _hand_off(self) -> None:
        """Wake an idle thread for each job that waited HANDOFF_DELAY (its busy threads are slow)."""
        delay = self.HANDOFF_DELAY
        with self._submitted:
            while not self._closing:
                if not self._pending or self._idle == self._woken:
                    # Nothing waits, or no thread is left to wake: the busy threads take what
                    # is queued, and a new batch notifies this thread.
                    self._submitted.wait()
                    continue
                now = time.monotonic()
                waited = now - self._pending[0][0]
                if waited < delay:
                    self._submitted.wait(delay - waited)
                    continue
                overdue = 0
                for submitted_at, _ in self._pending:
                    if now - submitted_at < delay:
                        break
                    overdue += 1
                self._wake(overdue - self._woken)
                self._submitted.wait(delay)

    def _run(self, running: RunningJob) -> Outcome:
        from pgqueue.execution import execute

        job = running.job
        try:
            timeout = task_timeout(job.task_path, self._allowed_tasks, self._backend.alias)
            if timeout:
                running.deadline = self._clock() + timeout
                with self._lock:
                    self._timed[job.id] = running
            return execute(
                job,
                backend=self._backend,
                allowed_tasks=self._allowed_tasks,
                output=lambda values: self._driver.append_output(
                    running.worker_id, job.id, job.attempt, values
                ),
                async_runner=self._async,
                interruptible=running.interruptible,
                clock=self._clock,
            )
        except BaseException as exc:  # a bug of ours must not leave the job stuck as running
            logger.exception("internal error running job %s", job.id)
            return failure(exc)
        finally:
            if running.deadline is not None:
                with self._lock:
                    self._timed.pop(job.id, None)

    def _overdue(self, now: float) -> list[RunningJob]:
        with self._lock:
            return [
                r
                for r in self._timed.values()
                if r.deadline is not None and r.deadline <= now and not r.timed_out
            ]

    def enforce_timeouts(self) -> None:
        """Raise TaskTimeout inside synchronous task code past its deadline."""
        if not self._timed:
            return
        for running in self._overdue(self._clock()):
            with running.interruptible.lock:
                thread_id = running.interruptible.thread_id
                if thread_id is None:
                    continue  # async tasks time out on their own; or the task just ended
                running.timed_out = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(thread_id), ctypes.py_object(TaskTimeout)
                )
            logger.warning("job %s exceeded its timeout; interrupting it", running.job.id)

    def next_deadline(self) -> float | None:
        if not self._timed:
            return None
        with self._lock:
            deadlines = [
                r.deadline
                for r in self._timed.values()
                if r.deadline is not None and not r.timed_out
            ]
        return min(deadlines, default=None)

    def shutdown(self) -> None:
        """End idle threads, and leave jobs never started to the worker, which gives them back;
        busy threads cannot be stopped and end with the process."""
        with self._work:
            self._closing = True
            self._work.notify_all()
            self._submitted.notify_all()

    def kill(self) -> None:
        """Threads cannot be killed; they end with the process."""


# Process isolation: the child's side ----------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Have Linux kill this process when the worker dies (no-op elsewhere); exit if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def _child_main(
    conn: Connection, alias: str, allowed_tasks: tuple[str, ...], parent_pid: int
) -> None:
    """A child process: set Django up once, then run the jobs the supervisor sends until told to stop."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # a group of its own: killing the group reaches the task's subprocesses
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import django

    django.setup()
    from django.db import connections

    from pgqueue.api import pgqueue_backend
    from pgqueue.drivers import get_driver
    from pgqueue.execution import AsyncRunner, execute

    registry.autodiscover()
    backend = pgqueue_backend()
    driver = get_driver(alias)
    async_runner = AsyncRunner()
    conn.send("ready")
    try:
        while (message := _next_job(conn)) is not None:
            job, worker_id = message
            conn.send(("started", task_timeout(job.task_path, allowed_tasks, backend.alias)))
            try:
                outcome = execute(
                    job,
                    backend=backend,
                    allowed_tasks=allowed_tasks,
                    output=lambda values, job=job, worker_id=worker_id: driver.append_output(
                        worker_id, job.id, job.attempt, values
                    ),
                    async_runner=async_runner,
                    clock=time.monotonic,
                )
            except BaseException as exc:  # a bug of ours is still just this job's failed attempt
                outcome = failure(exc)
            conn.send(("done", outcome))
    finally:
        driver.close()
        connections.close_all()


def _next_job(conn: Connection) -> Any:
    """The next (job, worker_id) to run, or None to stop (asked to, or the worker is gone)."""
    try:
        return conn.recv()
    except EOFError:
        return None


# Process isolation: the worker's side -------------------------------------------------


class _ChildLost(Exception):
    """The child ended, or stopped answering, before it sent the job's Outcome."""


class _ChildTimedOut(Exception):
    """The job ran past its deadline."""

    def __init__(self, timeout: float):
        super().__init__(timeout)
        self.timeout = timeout


class _Child:
    """One child process and the worker's end of its pipe; used by one supervisor thread.

    Only that thread waits for (reaps) the process; other threads may only signal it.
    """

    def __init__(self, context: Any, args: tuple[Any, ...]):
        self.conn, child_end = context.Pipe()
        self.process = context.Process(
            target=_child_main, args=(child_end, *args), name="pgqueue-child", daemon=True
        )
        self.process.start()
        child_end.close()
        self.pid: int = self.process.pid
        self.ready = False
        self.jobs_run = 0

    def _receive(self, *, starting: bool = False) -> Any:
        try:
            return self.conn.recv()
        except (EOFError, OSError) as exc:
            how = self.describe_end()
            if starting:
                how += " while starting (the worker's log shows its error)"
            raise _ChildLost(how) from exc

    def wait_ready(self) -> None:
        """Wait until Django is set up in the child; _ChildLost if it dies or takes too long."""
        if self.ready:
            return
        if not self.conn.poll(CHILD_START_TIMEOUT):
            raise _ChildLost(f"did not start within {CHILD_START_TIMEOUT:g}s")
        self._receive(starting=True)
        self.ready = True

    def run(self, running: RunningJob) -> Outcome:
        """Run one job; _ChildTimedOut past its deadline, _ChildLost if the child dies."""
        try:
            self.conn.send((running.job, running.worker_id))
        except OSError as exc:
            raise _ChildLost(self.describe_end()) from exc
        _, timeout = self._receive()  # "started": the task is resolved, its clock starts
        if timeout:
            running.deadline = time.monotonic() + timeout
        wait = None if running.deadline is None else max(running.deadline - time.monotonic(), 0.0)
        if not self.conn.poll(wait):
            raise _ChildTimedOut(timeout)
        _, outcome = self._receive()
        self.jobs_run += 1
        return outcome

    def signal_kill(self) -> None:
        """SIGKILL the child's process group (the task's subprocesses too) and the child; no wait."""
        for send in (os.killpg, os.kill):
            with contextlib.suppress(OSError):
                send(self.pid, signal.SIGKILL)

    def kill(self) -> None:
        """Kill the child and reap it."""
        self.signal_kill()
        self.process.join(timeout=10)
        self.conn.close()

    def stop(self) -> None:
        """Ask the child to exit (it closes its connections); kill it if it does not."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=CHILD_STOP_TIMEOUT)
        self.kill()

    def describe_end(self) -> str:
        """How the child ended, for the attempt's error; reaps it."""
        self.process.join(timeout=CHILD_STOP_TIMEOUT)
        code = self.process.exitcode
        if code is None:
            return "stopped answering"
        if code >= 0:
            return f"exited with code {code}"
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        hint = " (a kill -9, or the kernel's OOM killer)" if -code == signal.SIGKILL else ""
        return f"was killed by signal {name}{hint}"


class ProcessRunner(Runner):
    """Supervised long-lived child processes, one per slot; see the module docstring."""

    def __init__(
        self,
        count: int,
        *,
        alias: str,
        allowed_tasks: tuple[str, ...],
        deliver: Deliver,
        max_jobs_per_child: int | None = None,
    ):
        self._count = count
        self._context = multiprocessing.get_context("spawn")
        self._child_args = (alias, allowed_tasks, os.getpid())
        self._deliver = deliver
        self._max_jobs_per_child = max_jobs_per_child
        self._jobs: queue.SimpleQueue[RunningJob | None] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        #: The child each slot owns now, and the slots running a job.
        self._children: dict[int, _Child] = {}
        self._busy: set[int] = set()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start a child per slot and wait until each is ready, so that a worker whose children
        cannot start stops at once instead of failing every job's attempts."""
        children = [self._spawn(slot) for slot in range(self._count)]
        try:
            for child in children:
                child.wait_ready()
        except _ChildLost as exc:
            for child in children:
                child.kill()
            raise ImproperlyConfigured(
                f"process isolation: a child process {exc}. A child sets Django up from "
                "DJANGO_SETTINGS_MODULE and imports the worker's __main__ module again (as "
                "multiprocessing's 'spawn' does): run the worker with manage.py or 'python -m "
                "django', not from code that configures settings itself"
            ) from None
        for slot, child in enumerate(children):
            thread = threading.Thread(
                target=self._supervise,
                args=(slot, child),
                name=f"pgqueue-supervisor-{slot}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def submit(self, jobs: list[RunningJob]) -> None:
        for running in jobs:
            self._jobs.put(running)

    # One supervisor thread per slot.

    def _supervise(self, slot: int, child: _Child | None) -> None:
        while (running := self._jobs.get()) is not None:
            with self._lock:  # either shutdown() sees this slot busy, or the slot sees it closing
                closing = self._closing.is_set()
                if not closing:
                    self._busy.add(slot)
            if closing:
                continue  # the worker gives the job back
            try:
                child = self._run(slot, child, running)
            finally:
                with self._lock:
                    self._busy.discard(slot)
        if child is not None:
            self._end_child(slot, child, graceful=True)

    def _spawn(self, slot: int) -> _Child | None:
        """Start the slot's child; None once shutting down (which must not start any)."""
        with self._lock:  # shutdown() sets closing under this lock, so it sees every child
            if self._closing.is_set():
                return None
            child = self._children[slot] = _Child(self._context, self._child_args)
        return child

    def _replace(self, slot: int) -> _Child | None:
        """Start a replacement child at once, so it is ready by the next job; None if it cannot."""
        try:
            return self._spawn(slot)
        except Exception:  # the next job tries again, and fails its attempt if it cannot
            logger.exception("could not start a child process")
            return None

    def _end_child(self, slot: int, child: _Child, *, graceful: bool) -> None:
        """Stop (or kill) the slot's child and reap it; it is forgotten first, so none reaps it twice."""
        with self._lock:
            if self._children.get(slot) is child:
                del self._children[slot]
        if graceful:
            child.stop()
        else:
            child.kill()

    def _run(self, slot: int, child: _Child | None, running: RunningJob) -> _Child | None:
        """Run one job in the slot's child; return the child for the next job."""
        if child is not None and not child.process.is_alive():
            # Killed while idle (the OOM killer, an operator): not this job's fault.
            logger.warning("child process %d %s while idle", child.pid, child.describe_end())
            self._end_child(slot, child, graceful=False)
            child = None
        if child is None:
            try:
                child = self._spawn(slot)
            except Exception as exc:
                logger.exception("could not start a child process for job %s", running.job.id)
                self._deliver(
                    running, failure(ChildProcessDied(f"no child process started: {exc}"))
                )
                return None
            if child is None:
                return None  # shutting down: the worker gives the job back
        started = time.monotonic()
        try:
            child.wait_ready()
            outcome = child.run(running)
        except _ChildTimedOut as exc:
            logger.warning(
                "job %s exceeded its timeout of %gs; killing its process %d",
                running.job.id,
                exc.timeout,
                child.pid,
            )
            self._end_child(slot, child, graceful=False)
            error: BaseException = TaskTimeout(
                f"the task ran longer than its timeout of {exc.timeout:g}s; its process was killed"
            )
        except _ChildLost as exc:
            self._end_child(slot, child, graceful=False)
            error = ChildProcessDied(f"the task's child process {exc}")
        except Exception as exc:  # a bug of ours must not leave the job stuck as running
            logger.exception("internal error running job %s in a child process", running.job.id)
            self._end_child(slot, child, graceful=False)
            error = exc
        else:
            self._deliver(running, outcome)
            if self._max_jobs_per_child and child.jobs_run >= self._max_jobs_per_child:
                self._end_child(slot, child, graceful=True)
                return self._replace(slot)
            return child
        if self._closing.is_set():
            return None  # killed by shutdown(): the worker gives the job back, unfinished
        if isinstance(error, ChildProcessDied):
            logger.error("job %s: %s; starting a new child process", running.job.id, error)
        self._deliver(running, failure(error, time.monotonic() - started))
        return self._replace(slot)

    # Stopping.

    def shutdown(self) -> None:
        """Kill children still running a job, let idle ones exit, and reap every child."""
        with self._lock:
            self._closing.set()
            for slot in self._busy:
                if slot in self._children:
                    self._children[slot].signal_kill()
        for _ in self._threads:
            self._jobs.put(None)
        deadline = time.monotonic() + CHILD_STOP_TIMEOUT + 5
        for thread in self._threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        self.kill()  # a slot that took its job just as shutdown began
        for thread in self._threads:
            thread.join(timeout=15)
        for process in multiprocessing.active_children():
            logger.error("child process %d did not exit; killing it", process.pid)
            process.kill()
            process.join(timeout=5)

    def kill(self) -> None:
        """SIGKILL every child now; takes no lock, so a signal handler may call it."""
        for child in list(self._children.values()):
            child.signal_kill()
