"""Real worker processes against the test database, and waiting on database state."""

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
    "5",
]
FINISHED = ("succeeded", "failed", "cancelled")


class WorkerProcess:
    """A ``manage.py pgqueue_worker`` subprocess whose log goes to a file."""

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

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} did not exit within {timeout}s; log:\n{self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log.close()


def environment_for(settings_module: str) -> dict[str, str]:
    """The environment of a worker subprocess on the test database."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "PGDATABASE": connection.settings_dict["NAME"],
    }


def worker_starter(
    tmp_path: Path,
    default_env: dict[str, str],
    fast_args: list[str],
    process_class: type[WorkerProcess] = WorkerProcess,
) -> Iterator[Callable[..., WorkerProcess]]:
    """Yield ``start(*args, fast=True, env=None)``; stop every worker it started afterwards."""
    started: list[WorkerProcess] = []

    def start(*args: str, fast: bool = True, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = process_class(
            [*(fast_args if fast else []), *args],
            tmp_path / f"worker-{len(started)}.log",
            env or default_env,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def worker_env(transactional_db) -> dict[str, str]:
    return environment_for("tests.settings")


@pytest.fixture
def start_worker(worker_env, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    yield from worker_starter(tmp_path, worker_env, FAST)


@pytest.fixture
def run_burst(start_worker) -> Callable[..., WorkerProcess]:
    """Run a --burst worker to completion and check it exited 0."""

    def run(*args: str, timeout: float = 60) -> WorkerProcess:
        worker = start_worker("--burst", *args)
        status = worker.wait(timeout)
        assert status == 0, f"worker exited {status}; log:\n{worker.log}"
        return worker

    return run


def wait_for(
    predicate: Callable[[], bool], timeout: float = 20, what: str = "", worker=None
) -> None:
    """Poll until ``predicate()`` is true, or fail showing the worker's log."""
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
