"""A real worker process, on PostgreSQL and on SQLite, turns the same jobs into the same outcomes."""

import os
import signal
import subprocess
import sys
import time

import pytest
from django.db import connections

import pgqueue
from tests.testapp.tasks import add, always_fails, flaky, send_email, stream

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "sqlite"])

FINISHED = ("succeeded", "failed", "cancelled")


def worker_env(alias: str) -> dict[str, str]:
    """Environment of a worker process whose queue is ``alias`` of the test databases."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.contract.worker_settings",
        "PGQUEUE_CONTRACT_DATABASE": alias,
        "PGDATABASE": connections["default"].settings_dict["NAME"],
        "PGQUEUE_SQLITE": connections["sqlite"].settings_dict["NAME"],
    }


def start_worker(alias: str, log_path, *options: str) -> subprocess.Popen:
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "django", "pgqueue_worker", *options],
            env=worker_env(alias),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def test_a_worker_runs_retries_fails_and_streams_the_same_on_both(alias, jobs, tmp_path):
    ids = {
        "add": int(add.enqueue(1, 2).id),
        "email": int(send_email.enqueue("ann@example.com").id),
        "flaky": int(flaky.enqueue(1).id),
        "always_fails": int(always_fails.enqueue().id),
        "stream": int(stream.enqueue(3).id),
        "cancelled": int(add.enqueue(0, 0).id),
    }
    pgqueue.cancel(ids["cancelled"])
    log = tmp_path / "worker.log"
    worker = start_worker(
        alias,
        log,
        "--poll-interval",
        "0.1",
        "--heartbeat-interval",
        "0.2",
        "--orphan-after",
        "5",
        "--concurrency",
        "2",
    )
    try:
        deadline = time.monotonic() + 60
        while jobs.exclude(status__in=FINISHED).exists():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"jobs did not finish; log:\n{log.read_text()}"
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    rows = {name: jobs.get(pk=job_id) for name, job_id in ids.items()}
    summary = {
        name: (
            row.status,
            row.attempts,
            row.result,
            [e["exception_class_path"] for e in row.errors],
        )
        for name, row in rows.items()
    }
    assert summary == {
        "add": ("succeeded", 1, 3, []),
        "email": ("succeeded", 1, "sent to ann@example.com", []),
        "flaky": ("succeeded", 2, 2, ["builtins.ConnectionError"]),
        "always_fails": ("failed", 2, None, ["builtins.ValueError"] * 2),
        "stream": ("succeeded", 1, 3, []),
        "cancelled": ("cancelled", 0, None, []),
    }
    assert rows["stream"].output == [{"step": 0}, {"step": 1}, {"step": 2}]
    assert pgqueue.get_result(ids["stream"]).output == [{"step": 0}, {"step": 1}, {"step": 2}]
    assert len(rows["flaky"].worker_ids) == 2 and rows["flaky"].errors[0]["attempt"] == 1
