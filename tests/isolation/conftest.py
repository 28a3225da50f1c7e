"""Real worker processes (settings: tests/isolation/settings.py), their child processes, and deadlines."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

from pgqueue.models import Job

FAST = [
    "--poll-interval",
    "0.2",
    "--heartbeat-interval",
    "0.2",
    "--orphan-after",
    "1",
    "--shutdown-timeout",
    "10",
]


class WorkerProcess:
    """A ``pgqueue_worker`` subprocess whose log goes to a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]):
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "pgqueue_worker", "-v", "2", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.process.pid
        self._seen: set[int] = set()

    def children(self) -> set[int]:
        """The worker's live child processes (job children and multiprocessing's helper)."""
        found = children_of(self.pid)
        self._seen |= found
        return found

    def job_processes(self) -> set[int]:
        """The worker's live child processes that run jobs."""
        found = job_processes_of(self.pid)
        self._seen |= found
        return found

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} did not exit within {timeout}s; log:\n{self.log}")

    def stop(self) -> None:
        """Kill the worker and any child process of it that a failed test left behind (by PID)."""
        self.children()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for pid in self._seen:
            if is_alive(pid) and _is_python(pid):
                os.kill(pid, signal.SIGKILL)
        self._log.close()


@pytest.fixture
def worker_env(transactional_db) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.isolation.settings",
        "PGDATABASE": connection.settings_dict["NAME"],
    }


@pytest.fixture
def start_worker(worker_env, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start process-isolation workers (more options may follow); each is stopped after the test."""
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        worker = WorkerProcess(
            [*FAST, "--isolation", "process", *args],
            tmp_path / f"worker-{len(started)}.log",
            worker_env,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_for(predicate: Callable[[], bool], *, timeout: float = 30, what: str, worker=None) -> None:
    """Poll until ``predicate()`` is true, or fail (showing the worker's log)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            log = f"\nworker log:\n{worker.log}" if worker is not None else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what}{log}")
        time.sleep(0.03)


def job(job_id) -> Job:
    return Job.objects.get(pk=int(job_id))


def status(job_id) -> str:
    return job(job_id).status


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def is_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a zombie runs no code)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def parent_of(pid: int) -> int | None:
    fields = _stat(pid)
    return None if fields is None else int(fields[1])


def children_of(pid: int) -> set[int]:
    """Live (non-zombie) processes whose parent is ``pid``, found by scanning /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_of(int(entry.name)) == pid and is_alive(int(entry.name)):
            found.add(int(entry.name))
    return found


def zombies_of(pid: int) -> set[int]:
    """Children of ``pid`` that exited and were not reaped."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid and fields[0] == "Z":
                found.add(int(entry.name))
    return found


def _command(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _is_python(pid: int) -> bool:
    """Whether ``pid`` still runs our Python (not a new process that reused the PID)."""
    return _command(pid).startswith(sys.executable.encode())


def job_processes_of(pid: int) -> set[int]:
    """The live child processes that run jobs (multiprocessing's resource tracker excluded)."""
    return {child for child in children_of(pid) if b"spawn_main" in _command(child)}
