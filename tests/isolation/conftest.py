"""Real worker processes (settings: tests/isolation/settings.py), their child processes, and deadlines."""

import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.worker.conftest import WorkerProcess as BaseWorkerProcess
from tests.worker.conftest import environment_for, job, status, worker_starter  # noqa: F401 (used by the tests here)
from tests.worker.conftest import wait_for as _wait_for

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


class WorkerProcess(BaseWorkerProcess):
    """A ``pgqueue_worker`` subprocess that also tracks the child processes it starts."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]):
        super().__init__(args, log_path, env)
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

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Kill the worker and any child process of it that a failed test left behind (by PID)."""
        self.children()
        super().stop()
        for pid in self._seen:
            if is_alive(pid) and _is_python(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def worker_env(transactional_db) -> dict[str, str]:
    return environment_for("tests.isolation.settings")


@pytest.fixture
def start_worker(worker_env, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start process-isolation workers; each is stopped (with its children) after the test."""
    yield from worker_starter(
        tmp_path, worker_env, [*FAST, "--isolation", "process"], process_class=WorkerProcess
    )


# Process-isolation tests start child processes: give every wait a little longer.
wait_for = functools.partial(_wait_for, timeout=30)


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
