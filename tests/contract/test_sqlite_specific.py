"""SQLite only: workers sharing one file never claim a job twice, a locked file is waited out,
and the system check warns about SQLite in production."""

import logging
import sqlite3
import subprocess
import sys
import threading
from collections import Counter

import pytest
from django.core import checks
from django.db import OperationalError, connections, transaction
from django.test import override_settings

import pgqueue
from pgqueue.models import Job, Queue
from tests.contract.test_worker_contract import worker_env
from tests.testapp.tasks import record

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "sqlite"])

JOBS = 300


def hold_write_lock(path: str, seconds: float) -> tuple[sqlite3.Connection, threading.Timer]:
    """A third connection that takes the write lock now (BEGIN IMMEDIATE) and commits later."""
    holder = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(seconds, lambda: holder.execute("COMMIT"))
    timer.start()
    return holder, timer


def release(holder: sqlite3.Connection, timer: threading.Timer) -> None:
    timer.join(timeout=30)
    holder.close()


def test_two_workers_and_a_lock_holder_on_one_file(tmp_path):
    path = connections["sqlite"].settings_dict["NAME"]
    ledger = tmp_path / "ledger"
    with override_settings(PGQUEUE={"DATABASE": "sqlite"}):
        # 50 ms a job: 300 jobs keep one worker busy for seconds, so both surely work at once.
        pgqueue.enqueue_many(
            [{"task": record, "args": [str(ledger), f"job-{i}", 0.05]} for i in range(JOBS)]
        )
    holder, timer = hold_write_lock(path, 2.0)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "django",
                "pgqueue_worker",
                "--burst",
                "--poll-interval",
                "0.2",
                "--heartbeat-interval",
                "0.5",
                "--orphan-after",
                "5",
                "--concurrency",
                "4",
            ],
            env=worker_env("sqlite"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        outputs = [w.communicate(timeout=120)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        release(holder, timer)
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output
        assert "Traceback" not in output, output
    jobs = Job.objects.using("sqlite")
    assert jobs.filter(status="succeeded").count() == JOBS
    assert set(jobs.values_list("attempts", flat=True)) == {1}
    assert {len(ids) for ids in jobs.values_list("worker_ids", flat=True)} == {1}
    lines = ledger.read_text().splitlines()
    runs = Counter(line.split()[0] for line in lines)
    assert len(runs) == JOBS and set(runs.values()) == {1}, "a job ran twice"
    assert len({line.split()[1] for line in lines}) == 2, "both workers took part"


@pytest.fixture
def short_busy_timeout():
    """Make this thread's SQLite connection give up on a lock after 50 ms, so retries show."""
    connection = connections["sqlite"]
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        (previous,) = cursor.fetchone()
        cursor.execute("PRAGMA busy_timeout = 50")
    yield connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA busy_timeout = {int(previous)}")


def test_a_write_that_finds_the_file_locked_is_retried(short_busy_timeout, caplog):
    holder, timer = hold_write_lock(short_busy_timeout, 1.0)
    try:
        with (
            caplog.at_level(logging.DEBUG, logger="pgqueue.drivers.sqlite"),
            override_settings(PGQUEUE={"DATABASE": "sqlite"}),
        ):
            pgqueue.pause_queue("blocked")
            job_id = int(pgqueue.enqueue("app.tasks.work").id)
    finally:
        release(holder, timer)
    assert Queue.objects.using("sqlite").get(name="blocked").paused
    assert Job.objects.using("sqlite").filter(pk=job_id).exists()
    assert any("is locked" in r.getMessage() for r in caplog.records), "no retry was needed?"


def test_in_the_callers_transaction_a_locked_file_is_the_callers_error(short_busy_timeout):
    holder, timer = hold_write_lock(short_busy_timeout, 1.0)
    try:
        with (
            override_settings(PGQUEUE={"DATABASE": "sqlite"}),
            pytest.raises(OperationalError, match="locked"),
            transaction.atomic(using="sqlite"),
        ):
            pgqueue.enqueue("app.tasks.work")
    finally:
        release(holder, timer)
    assert not Job.objects.using("sqlite").exists()


def test_sqlite_in_production_is_warned_about():
    with override_settings(PGQUEUE={"DATABASE": "sqlite"}, DEBUG=False):
        warnings = [m for m in checks.run_checks() if m.id == "pgqueue.W001"]
    assert len(warnings) == 1 and "'sqlite' is SQLite while DEBUG is off" in warnings[0].msg
    assert isinstance(warnings[0], checks.Warning)
    with override_settings(PGQUEUE={"DATABASE": "sqlite"}, DEBUG=True):
        assert "pgqueue.W001" not in [m.id for m in checks.run_checks()]
    with override_settings(PGQUEUE={"DATABASE": "default"}, DEBUG=False):
        assert "pgqueue.W001" not in [m.id for m in checks.run_checks()]


def test_manage_py_check_shows_the_warning():
    checked = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        env=worker_env("sqlite"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert "(pgqueue.W001)" in checked.stderr + checked.stdout


def test_a_worker_on_an_unmigrated_file_says_to_migrate(tmp_path):
    env = {**worker_env("sqlite"), "PGQUEUE_SQLITE": str(tmp_path / "empty.sqlite3")}
    worker = subprocess.run(
        [sys.executable, "-m", "django", "pgqueue_worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode != 0
    assert "run 'python manage.py migrate pgqueue --database sqlite'" in worker.stderr
