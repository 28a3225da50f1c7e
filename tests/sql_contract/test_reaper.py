"""Worker liveness: register, heartbeat, deregister, and reap_v1 returning the jobs of dead workers exactly once."""

import threading

import psycopg
import pytest

from tests.sql_contract.conftest import (
    claim,
    claim_ids,
    complete,
    enqueue,
    job,
    make_stale,
    reap,
    register,
    scalar,
    wait_until_blocked,
)


def workers(conn: psycopg.Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT id FROM pgqueue_worker").fetchall()]


def test_register_creates_a_fresh_worker_with_a_heartbeat_of_now(pg):
    with pg.transaction():
        first = register(pg, ("email", "rep*"))
        now = scalar(pg, "SELECT now()")
    second = register(pg)
    assert first != second
    row = pg.execute(
        "SELECT hostname, pid, queues, concurrency, started_at, heartbeat_at FROM pgqueue_worker WHERE id = %s",
        (first,),
    ).fetchone()
    assert row == ("test-host", 1, ["email", "rep*"], 8, now, now)


BAD_REGISTRATIONS = [
    ("'h', 1, '{}', 1", "selectors"),
    ("'h', 1, NULL, 1", "selectors"),
    ("'h', 1, '{a%}', 1", "selector 'a%' is invalid"),
    ("'h', 1, '{*}', 0", "concurrency must be at least 1, got 0"),
    ("'h', 1, '{*}', NULL", "concurrency must be at least 1, got NULL"),
]


def test_register_rejects_bad_arguments(pg, subtests):
    for arguments, message in BAD_REGISTRATIONS:
        with subtests.test(arguments=arguments):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
                pg.execute(f"SELECT pgqueue.register_worker_v1({arguments})")
            assert workers(pg) == []


def test_heartbeat_moves_the_heartbeat_to_now(pg, worker):
    make_stale(pg, worker)
    with pg.transaction():
        assert scalar(pg, "SELECT pgqueue.heartbeat_v1(%s)", worker) is True
        now = scalar(pg, "SELECT now()")
    assert scalar(pg, "SELECT heartbeat_at FROM pgqueue_worker WHERE id = %s", worker) == now


def test_jobs_of_a_dead_worker_go_back_with_a_worker_lost_error(pg, worker):
    job_id = enqueue(pg)
    before = job(pg, job_id)
    claim(pg, worker)
    make_stale(pg, worker, job_id)
    assert reap(pg) == 1
    row = job(pg, job_id)
    assert (row["status"], row["worker_id"], row["attempts"], row["finished_at"]) == (
        "ready",
        None,
        1,
        None,
    )
    assert row["run_after"] == before["run_after"], "back at its old place, without backoff"
    [error] = row["errors"]
    assert error["exception_class_path"] == "pgqueue.exceptions.WorkerLost"
    assert (error["worker_id"], error["attempt"]) == (worker, 1)
    assert error["message"].startswith(f"worker {worker} was lost while running attempt 1: ")
    assert "heartbeat is older than" in error["message"]
    assert error["traceback"].startswith("pgqueue.exceptions.WorkerLost: ")
    assert workers(pg) == [], "the dead worker's row is gone"
    assert scalar(pg, "SELECT pgqueue.heartbeat_v1(%s)", worker) is False


def test_the_requeued_job_runs_again_and_keeps_the_history(pg, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    make_stale(pg, worker, job_id)
    reap(pg)
    second = register(pg)
    [again] = claim(pg, second)
    assert again["attempt"] == 2
    assert [e["exception_class_path"] for e in again["errors"]] == ["pgqueue.exceptions.WorkerLost"]
    assert complete(pg, second, job_id, 2, "ok") == [job_id]
    row = job(pg, job_id)
    assert (row["status"], row["worker_ids"], len(row["errors"])) == (
        "succeeded",
        [worker, second],
        1,
    )


def test_a_job_lost_at_its_last_attempt_fails(pg, worker):
    job_id = enqueue(pg, max_attempts=1)
    claim(pg, worker)
    make_stale(pg, worker, job_id)
    with pg.transaction():
        assert reap(pg) == 1
        now = scalar(pg, "SELECT now()")
    row = job(pg, job_id)
    assert (row["status"], row["finished_at"], row["worker_id"]) == ("failed", now, None)
    assert row["errors"][0]["exception_class_path"] == "pgqueue.exceptions.WorkerLost"
    assert claim_ids(pg, register(pg)) == []


def test_only_the_dead_workers_jobs_are_touched(pg):
    dead, alive = register(pg), register(pg)
    dead_job = enqueue(pg, priority=1)
    alive_job = enqueue(pg)
    assert claim_ids(pg, dead, limit=1) == [dead_job]
    assert claim_ids(pg, alive, limit=1) == [alive_job]
    waiting = enqueue(pg)
    make_stale(pg, dead, dead_job)
    pg.execute(
        "UPDATE pgqueue_job SET last_attempted_at = now() - interval '1 hour' WHERE id = %s",
        (alive_job,),
    )
    assert reap(pg) == 1
    assert [job(pg, i)["status"] for i in (dead_job, alive_job, waiting)] == [
        "ready",
        "running",
        "ready",
    ]
    assert workers(pg) == [alive]


def test_a_dead_worker_without_jobs_is_removed(pg, worker):
    make_stale(pg, worker)
    assert reap(pg) == 0
    assert workers(pg) == []


def test_orphans_are_found_when_the_worker_row_is_gone(pg, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    pg.execute("DELETE FROM pgqueue_worker WHERE id = %s", (worker,))
    assert reap(pg) == 0, "a job claimed moments ago is not yet an orphan"
    assert job(pg, job_id)["status"] == "running"
    pg.execute(
        "UPDATE pgqueue_job SET last_attempted_at = now() - interval '1 hour' WHERE id = %s",
        (job_id,),
    )
    assert reap(pg) == 1
    row = job(pg, job_id)
    assert row["status"] == "ready"
    assert row["errors"][0]["worker_id"] == worker


def test_a_live_workers_long_job_is_never_reaped(pg, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    pg.execute(
        "UPDATE pgqueue_job SET last_attempted_at = now() - interval '1 day' WHERE id = %s",
        (job_id,),
    )
    for _ in range(3):
        assert scalar(pg, "SELECT pgqueue.heartbeat_v1(%s)", worker) is True
        assert reap(pg, "1 second") == 0
    row = job(pg, job_id)
    assert (row["status"], str(row["worker_id"]), row["errors"]) == ("running", worker, [])


def test_a_heartbeat_within_the_threshold_keeps_the_worker(pg, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    make_stale(pg, worker, job_id)
    assert reap(pg, "2 hours") == 0
    assert workers(pg) == [worker]
    assert job(pg, job_id)["status"] == "running"


def test_a_completion_that_came_first_is_never_overwritten(pg, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    assert complete(pg, worker, job_id, 1, "done") == [job_id]
    make_stale(pg, worker, job_id)
    assert reap(pg) == 0
    row = job(pg, job_id)
    assert (row["status"], row["result"], row["errors"]) == ("succeeded", "done", [])


def test_a_completion_is_never_overwritten_by_the_reaper(pg, pg_factory, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    make_stale(pg, worker, job_id)
    completing = pg_factory(autocommit=False)
    assert complete(completing, worker, job_id, 1, "done") == [job_id]
    assert reap(pg) == 0, "the job row is locked by the completion: skipped, not waited for"
    completing.commit()
    assert reap(pg) == 0
    row = job(pg, job_id)
    assert (row["status"], row["result"], row["errors"]) == ("succeeded", "done", [])


def test_a_job_skipped_while_locked_is_reaped_later_if_it_stayed_running(pg, pg_factory, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    make_stale(pg, worker, job_id)
    completing = pg_factory(autocommit=False)
    complete(completing, worker, job_id, 1, "done")
    assert reap(pg) == 0
    completing.rollback()
    assert reap(pg) == 1
    assert job(pg, job_id)["status"] == "ready"


def test_a_heartbeat_landing_during_the_reap_keeps_the_worker(pg, pg_factory, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    make_stale(pg, worker, job_id)
    beating = pg_factory(autocommit=False)
    assert scalar(beating, "SELECT pgqueue.heartbeat_v1(%s)", worker) is True
    reaper = pg_factory()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(reap(reaper)))
    thread.start()
    wait_until_blocked(pg, reaper)
    beating.commit()
    thread.join(timeout=10)
    assert result == [0], "the DELETE re-checks the heartbeat on the row it waited for"
    assert workers(pg) == [worker]
    assert job(pg, job_id)["status"] == "running"


def test_only_one_reaper_acts_at_a_time(pg, pg_factory, worker):
    ids = [enqueue(pg) for _ in range(3)]
    claim(pg, worker, limit=3)
    make_stale(pg, worker, *ids)
    first, second = pg_factory(autocommit=False), pg_factory(autocommit=False)
    assert reap(first) == 3
    assert reap(second) == 0, "the advisory lock is held: the second reaper returns at once"
    second.commit()
    first.commit()
    assert reap(pg) == 0
    for job_id in ids:
        row = job(pg, job_id)
        assert row["status"] == "ready"
        assert len(row["errors"]) == 1, "requeued exactly once"


def test_two_concurrent_reapers_requeue_each_orphan_exactly_once(pg, pg_factory, worker):
    ids = [enqueue(pg) for _ in range(20)]
    claim(pg, worker, limit=20)
    make_stale(pg, worker, *ids)
    reapers = [pg_factory(autocommit=False) for _ in range(2)]
    start, reaped = threading.Barrier(2), threading.Barrier(2)
    results: list[int] = []
    errors: list[BaseException] = []

    def run(conn: psycopg.Connection) -> None:
        try:
            start.wait(timeout=10)
            results.append(reap(conn))
            reaped.wait(timeout=10)  # both transactions are open at this point
            conn.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in reapers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert sorted(results) == [0, 20]
    for job_id in ids:
        row = job(pg, job_id)
        assert row["status"] == "ready" and len(row["errors"]) == 1


def test_heartbeat_is_false_after_the_worker_was_reaped(pg, worker):
    make_stale(pg, worker)
    reap(pg)
    assert scalar(pg, "SELECT pgqueue.heartbeat_v1(%s)", worker) is False
    assert workers(pg) == [], "a heartbeat does not bring a reaped worker back"


def test_reap_rejects_a_threshold_that_is_not_positive(pg, worker, subtests):
    job_id = enqueue(pg)
    claim(pg, worker)
    make_stale(pg, worker, job_id)
    for threshold in ("0 seconds", "-1 minute", None):
        with subtests.test(threshold=threshold):
            with pytest.raises(
                psycopg.errors.InvalidParameterValue, match="orphan_after must be a positive"
            ):
                reap(pg, threshold)
            assert job(pg, job_id)["status"] == "running"


def test_deregister_handles_held_jobs_as_lost(pg, worker):
    job_id = enqueue(pg)
    done = enqueue(pg)
    claim(pg, worker)
    complete(pg, worker, done, 1)
    assert scalar(pg, "SELECT pgqueue.deregister_worker_v1(%s)", worker) == 1
    row = job(pg, job_id)
    assert (row["status"], row["worker_id"], row["attempts"]) == ("ready", None, 1)
    [error] = row["errors"]
    assert error["exception_class_path"] == "pgqueue.exceptions.WorkerLost"
    assert "stopped without finishing" in error["message"]
    assert job(pg, done)["status"] == "succeeded"
    assert workers(pg) == []
    assert scalar(pg, "SELECT pgqueue.heartbeat_v1(%s)", worker) is False


def test_deregister_at_the_last_attempt_fails_the_job(pg, worker):
    job_id = enqueue(pg, max_attempts=1)
    claim(pg, worker)
    assert scalar(pg, "SELECT pgqueue.deregister_worker_v1(%s)", worker) == 1
    assert job(pg, job_id)["status"] == "failed"


def test_deregister_after_releasing_everything_touches_no_job(pg, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    scalar(pg, "SELECT pgqueue.release_v1(%s, %s, '{1}')", worker, [job_id])
    assert scalar(pg, "SELECT pgqueue.deregister_worker_v1(%s)", worker) == 0
    assert job(pg, job_id)["errors"] == []
    assert scalar(pg, "SELECT pgqueue.deregister_worker_v1(gen_random_uuid())") == 0
