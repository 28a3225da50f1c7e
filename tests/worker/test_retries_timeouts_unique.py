"""Retries with backoff, timeouts, unique jobs, priorities and scheduled jobs."""

from datetime import timedelta

from django.utils import timezone

import pgqueue
from pgqueue.models import Job
from tests.testapp.tasks import add, busy_loop, flaky, unique_add
from tests.worker.conftest import job, status, wait_for


def test_a_task_that_fails_twice_then_succeeds(start_worker):
    result = flaky.enqueue(2)
    worker = start_worker()
    wait_for(lambda: status(result.id) == "succeeded", what="the retried job", worker=worker)
    row = job(result.id)
    assert row.attempts == 3
    assert row.result == 3
    assert [e["attempt"] for e in row.errors] == [1, 2]
    assert all(e["exception_class_path"] == "builtins.ConnectionError" for e in row.errors)


def test_max_attempts_exhausted_ends_failed(start_worker):
    result = flaky.using(max_attempts=2).enqueue(5)
    worker = start_worker()
    wait_for(lambda: status(result.id) == "failed", what="the job to fail", worker=worker)
    assert job(result.id).attempts == 2


def test_timeout_interrupts_the_task_and_it_is_retried(start_worker):
    result = busy_loop.enqueue(30)
    worker = start_worker()
    wait_for(
        lambda: status(result.id) == "failed",
        timeout=30,
        what="both attempts to time out",
        worker=worker,
    )
    row = job(result.id)
    assert row.attempts == 2
    assert [e["exception_class_path"] for e in row.errors] == ["pgqueue.exceptions.TaskTimeout"] * 2
    assert "timeout" in worker.log


def test_unique_task_deduplicates_while_waiting(run_burst):
    first = unique_add.enqueue(1, 2)
    assert unique_add.enqueue(1, 2).id == first.id
    other = unique_add.enqueue(2, 2)
    assert other.id != first.id
    assert Job.objects.count() == 2
    run_burst()
    assert unique_add.enqueue(1, 2).id != first.id, "a finished job frees its key"


def test_higher_priority_runs_first(run_burst):
    low = pgqueue.enqueue(add, [1, 1], priority=-10)
    mid = pgqueue.enqueue(add, [1, 1])
    high = pgqueue.enqueue(add, [1, 1], priority=10)
    run_burst("--concurrency", "1")
    order = sorted((job(r.id).started_at, r.id) for r in (low, mid, high))
    assert [job_id for _, job_id in order] == [high.id, mid.id, low.id]


def test_scheduled_job_runs_no_earlier_than_run_after(start_worker):
    at = timezone.now() + timedelta(seconds=1.5)
    absolute = pgqueue.enqueue(add, [1, 1], run_after=at)
    relative = add.using(run_after=timedelta(seconds=1)).enqueue(2, 2)
    worker = start_worker()
    for result in (absolute, relative):
        wait_for(
            lambda r=result: status(r.id) == "succeeded", what="the scheduled job", worker=worker
        )
        row = job(result.id)
        assert row.started_at >= row.run_after
    assert job(absolute.id).run_after == at
