"""The database restarts or is down: workers wait, reconnect and lose no job."""

import signal
import subprocess
import sys
import time

from tests.faults.conftest import query

WORKER = [
    sys.executable,
    "-m",
    "django",
    "pgqueue_worker",
    "-v",
    "2",
    "--poll-interval",
    "0.2",
    "--heartbeat-interval",
    "0.5",
    "--orphan-after",
    "3",
    "--concurrency",
    "4",
]


def counts(cluster) -> dict[str, int]:
    return dict(query(cluster, "SELECT status, count(*) FROM pgqueue_job GROUP BY status"))


def wait_for(predicate, timeout: float, what: str, log=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            detail = f"\nworker log:\n{log.read_text()}" if log is not None else ""
            raise AssertionError(f"timed out waiting for {what}{detail}")
        time.sleep(0.1)


def test_restart_under_load_loses_no_job(cluster, tmp_path):
    total = 300
    query(
        cluster,
        "SELECT pgqueue.enqueue_many(jsonb_agg(jsonb_build_object("
        "'task_path', 'tests.testapp.tasks.sleepy', 'args', jsonb_build_array(0.02)))) FROM generate_series(1, %s)",
        (total,),
    )
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(WORKER, env=cluster.env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: counts(cluster).get("succeeded", 0) >= 30, 60, "jobs to flow", log)
        cluster.restart()
        wait_for(
            lambda: counts(cluster).get("succeeded", 0) == total, 120, "every job to complete", log
        )
        assert worker.poll() is None, "the worker stayed up"
        assert set(counts(cluster)) == {"succeeded"}
        assert query(cluster, "SELECT max(attempts) FROM pgqueue_job")[0][0] <= 2
        lost = query(
            cluster,
            "SELECT count(*) FROM pgqueue_job WHERE errors::text LIKE '%%WorkerLost%%'",
        )[0][0]
        assert lost == 0, "the worker was never judged dead, so no job was run twice"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_worker_waits_for_a_database_that_is_down_at_start_up(cluster, tmp_path):
    query(cluster, "SELECT pgqueue.enqueue('tests.testapp.tasks.add', '[1, 2]')")
    cluster.stop()
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(WORKER, env=cluster.env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: "database unavailable at start-up" in log.read_text(),
            30,
            "the worker to notice",
            log,
        )
        assert worker.poll() is None
        cluster.start()
        wait_for(lambda: counts(cluster).get("succeeded") == 1, 60, "the job to run", log)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


def test_sigterm_during_an_outage_exits_within_the_shutdown_timeout(cluster, tmp_path):
    cluster.stop()
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [*WORKER, "--shutdown-timeout", "2"],
            env=cluster.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for(
        lambda: "database unavailable" in log.read_text(),
        30,
        "the worker to notice the outage",
        log,
    )
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    status = worker.wait(timeout=30)
    assert status == 0, log.read_text()
    assert time.monotonic() - started < 10
