"""kill -9 mid-job, SIGTERM drain, shutdown timeout, second signal, terminated backends."""

import signal

from django.db import connection

from pgqueue.models import Worker
from tests.testapp.tasks import add, record, stream_until_file, wait_for_file
from tests.worker.conftest import job, status, wait_for


def test_kill_9_mid_job_the_job_comes_back_and_completes(start_worker, tmp_path):
    gate = tmp_path / "gate"
    ledger = tmp_path / "ledger"
    result = wait_for_file.enqueue(str(gate))
    first = start_worker()
    wait_for(lambda: status(result.id) == "running", what="the job to start", worker=first)
    first.signal(signal.SIGKILL)
    first.wait()
    gate.touch()
    second = start_worker()
    wait_for(
        lambda: status(result.id) == "succeeded",
        timeout=30,
        what="the orphan to be reaped and rerun",
        worker=second,
    )
    row = job(result.id)
    assert row.attempts == 2
    assert [e["exception_class_path"] for e in row.errors] == ["pgqueue.exceptions.WorkerLost"]
    assert len(set(row.worker_ids)) == 2
    other = record.enqueue(str(ledger), "after")
    wait_for(lambda: status(other.id) == "succeeded", what="a later job", worker=second)
    assert ledger.read_text().count("after") == 1


def test_sigterm_lets_the_running_job_finish_and_exits_zero(start_worker, tmp_path):
    gate = tmp_path / "gate"
    result = wait_for_file.enqueue(str(gate))
    worker = start_worker()
    wait_for(lambda: status(result.id) == "running", what="the job to start", worker=worker)
    worker.signal(signal.SIGTERM)
    gate.touch()
    assert worker.wait() == 0
    assert status(result.id) == "succeeded"
    assert Worker.objects.count() == 0, "the worker deregistered"


def test_job_outliving_the_shutdown_timeout_goes_back_without_using_an_attempt(
    start_worker, tmp_path
):
    result = wait_for_file.enqueue(str(tmp_path / "never"))
    worker = start_worker("--shutdown-timeout", "0.5")
    wait_for(lambda: status(result.id) == "running", what="the job to start", worker=worker)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    row = job(result.id)
    assert (row.status, row.attempts, row.worker_ids, row.errors) == ("ready", 0, [], [])
    assert "gave 1 unfinished job(s) back" in worker.log


def test_second_signal_stops_at_once(start_worker, tmp_path):
    result = wait_for_file.enqueue(str(tmp_path / "never"))
    worker = start_worker("--shutdown-timeout", "60")
    wait_for(lambda: status(result.id) == "running", what="the job to start", worker=worker)
    worker.signal(signal.SIGTERM)
    wait_for(
        lambda: "stop requested" in worker.log, what="the first signal to be handled", worker=worker
    )
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) != 0
    assert status(result.id) == "running", "left for the reaper"


def test_a_running_job_survives_its_workers_backends_being_terminated(start_worker, tmp_path):
    """The pool lends no connection whose backend is gone, so a job writing its output
    after all the worker's backends were terminated neither fails nor runs again."""
    gate = tmp_path / "gate"
    worker = start_worker()
    result = stream_until_file.enqueue(str(gate))
    wait_for(lambda: job(result.id).output == ["started"], what="the first output", worker=worker)
    for _ in range(3):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    gate.touch()
    wait_for(lambda: status(result.id) == "succeeded", what="the job to finish", worker=worker)
    row = job(result.id)
    assert row.errors == [], row.errors
    assert (row.attempts, row.output) == (1, ["started", "finished"])


def test_worker_recovers_when_all_its_backends_are_terminated(start_worker):
    worker = start_worker()
    first = add.enqueue(1, 1)
    wait_for(lambda: status(first.id) == "succeeded", what="the first job", worker=worker)
    for _ in range(3):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert cursor.fetchone()[0] >= 1
        results = [add.enqueue(i, 1) for i in range(10)]
        wait_for(
            lambda rs=results: all(status(r.id) == "succeeded" for r in rs),
            timeout=30,
            what="jobs after the backends were terminated",
            worker=worker,
        )
    wait_for(
        lambda: "listener reconnected" in worker.log,
        what="the listener to reconnect",
        worker=worker,
    )
    assert worker.process.poll() is None
