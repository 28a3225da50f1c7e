"""Dead workers and their jobs, specified once and run on PostgreSQL and SQLite.

A worker is dead when its heartbeat is older than orphan_after; a running job is
an orphan when no worker row holds it and it was claimed more than orphan_after
ago. Orphans go back to the queue with a WorkerLost error, or fail at their last
attempt. Time passing is simulated by backdating rows through the ORM.
"""

from datetime import timedelta

import pytest

from pgqueue.exceptions import WorkerNotRegistered
from pgqueue.models import Worker
from tests.contract.support import claim_one, enqueue, make_stale, register

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "sqlite"])


def worker_lost(worker_id: str, attempt: int, reason: str) -> dict:
    """The error _requeue_lost records, without its time."""
    message = f"worker {worker_id} was lost while running attempt {attempt}: {reason}"
    return {
        "exception_class_path": "pgqueue.exceptions.WorkerLost",
        "message": message,
        "traceback": f"pgqueue.exceptions.WorkerLost: {message}\n",
        "attempt": attempt,
        "worker_id": worker_id,
    }


def without_time(error: dict) -> dict:
    assert isinstance(error.pop("at"), str)
    return error


def test_reaper_returns_orphans_once_and_spares_live_workers(alias, driver, jobs, workers):
    lost_job, long_job, last_chance = enqueue(), enqueue(), enqueue(max_attempts=1, priority=100)
    dead, alive = register(driver), register(driver)
    assert claim_one(driver, dead).id == last_chance
    assert claim_one(driver, dead).id == lost_job
    assert claim_one(driver, alive).id == long_job
    make_stale(alias, dead)  # every claim is an hour old, but only `dead` stopped beating
    assert driver.reap(60) == 2
    assert driver.reap(60) == 0
    assert [str(w) for w in workers.values_list("id", flat=True)] == [alive]
    assert driver.heartbeat(dead) is False and driver.heartbeat(alive) is True
    lost = jobs.get(pk=lost_job)
    assert (lost.status, lost.worker_id, lost.finished_at, lost.attempts) == (
        "ready",
        None,
        None,
        1,
    )
    reason = "its heartbeat is older than 00:01:00"
    assert [without_time(e) for e in lost.errors] == [worker_lost(dead, 1, reason)]
    failed = jobs.get(pk=last_chance)
    assert (failed.status, failed.worker_id) == ("failed", None)
    assert failed.finished_at is not None
    assert [without_time(e) for e in failed.errors] == [worker_lost(dead, 1, reason)]
    assert jobs.get(pk=long_job).status == "running"


def test_the_reason_names_orphan_after_as_postgresql_prints_an_interval(alias, driver, jobs):
    job_id = enqueue()
    worker = register(driver)
    claim_one(driver, worker)
    make_stale(alias, worker, ago=timedelta(days=3))
    assert driver.reap(90_000.5) == 1
    [error] = jobs.get(pk=job_id).errors
    assert error["message"].endswith(": its heartbeat is older than 1 day 01:00:00.5")


def test_a_recent_claim_is_not_an_orphan_yet(alias, driver, jobs, workers):
    job_id = enqueue()
    worker = register(driver)
    claim_one(driver, worker)
    workers.filter(pk=worker).update(
        heartbeat_at=jobs.get(pk=job_id).started_at - timedelta(hours=1)
    )
    assert driver.reap(60) == 0, "claimed under a minute ago: its worker may have just registered"
    assert not workers.exists(), "the dead worker's row is gone all the same"
    assert jobs.get(pk=job_id).status == "running"
    make_stale(alias)
    assert driver.reap(60) == 1
    assert jobs.get(pk=job_id).status == "ready"


def test_an_orphan_is_found_even_when_its_worker_row_was_removed_by_other_means(
    alias, driver, jobs, workers
):
    job_id = enqueue()
    worker = register(driver)
    claim_one(driver, worker)
    workers.filter(pk=worker).delete()
    assert driver.heartbeat(worker) is False
    make_stale(alias)
    assert driver.reap(60) == 1
    assert jobs.get(pk=job_id).status == "ready"


def test_a_reaped_worker_must_register_again(alias, driver):
    enqueue()
    worker = register(driver)
    make_stale(alias, worker)
    driver.reap(60)
    with pytest.raises(WorkerNotRegistered, match="is not registered"):
        driver.claim(worker, ["*"], 1)
    fresh = register(driver)
    assert fresh != worker
    assert claim_one(driver, fresh).worker_ids == [fresh]


def test_deregister_handles_held_jobs_as_lost(alias, driver, jobs, workers):
    held, last_chance = enqueue(), enqueue(max_attempts=1)
    worker, other = register(driver), register(driver)
    driver.claim(worker, ["*"], 2)
    assert driver.deregister_worker(worker) == 2
    assert [str(w) for w in workers.values_list("id", flat=True)] == [other]
    reason = "it stopped without finishing the job"
    row = jobs.get(pk=held)
    assert (row.status, row.attempts) == ("ready", 1)
    assert [without_time(e) for e in row.errors] == [worker_lost(worker, 1, reason)]
    assert jobs.get(pk=last_chance).status == "failed"
    assert driver.deregister_worker(worker) == 0, "deregistering twice is harmless"
    assert driver.deregister_worker(other) == 0
    assert not Worker.objects.using(alias).exists()


def test_a_job_lost_twice_keeps_both_entries(alias, driver, jobs):
    job_id = enqueue()
    first, second = register(driver), register(driver)
    claim_one(driver, first)
    driver.deregister_worker(first)
    claim_one(driver, second)
    make_stale(alias, second)
    driver.reap(60)
    row = jobs.get(pk=job_id)
    assert [(e["worker_id"], e["attempt"]) for e in row.errors] == [(first, 1), (second, 2)]
    assert (row.status, row.attempts, row.worker_ids) == ("ready", 2, [first, second])
