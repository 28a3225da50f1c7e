"""Operator calls, specified once and run on PostgreSQL and SQLite: cancel, retry, pause, prune."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.tasks import TaskResultStatus
from django.utils import timezone

import pgqueue
from pgqueue.exceptions import InvalidJob, JobNotFound
from pgqueue.models import Queue
from tests.contract.support import ERROR, claim_one, enqueue, first_line, register

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "sqlite"])

UNKNOWN = 10**9


def test_cancel_stops_jobs_that_have_not_started(alias, driver, jobs):
    ready, scheduled, running = enqueue(), enqueue(run_after=timedelta(hours=1)), enqueue()
    worker = register(driver)
    assert claim_one(driver, worker, ["*"]).id in (ready, running)
    started = jobs.get(status="running").id
    waiting = ready if started == running else running
    assert pgqueue.cancel(waiting) is True
    assert pgqueue.cancel(scheduled) is True
    assert pgqueue.cancel(started) is False, "a running job is not interrupted"
    assert pgqueue.cancel(waiting) is False, "a cancelled job is finished"
    row = jobs.get(pk=scheduled)
    assert (row.status, row.attempts) == ("cancelled", 0)
    assert row.finished_at is not None
    result = pgqueue.get_result(waiting)
    assert (result.status, result.job_status) == (TaskResultStatus.FAILED, "cancelled")
    assert [j.id for j in driver.claim(worker, ["*"], 10)] == []
    driver.complete(worker, [(started, 1, None)])
    assert pgqueue.cancel(started) is False


def test_retry_requeues_failed_and_cancelled_jobs_with_more_attempts(alias, driver, jobs):
    failed, cancelled = enqueue(max_attempts=1), enqueue(run_after=timedelta(hours=1))
    worker = register(driver)
    claim_one(driver, worker)
    driver.fail(worker, failed, 1, ERROR, retry=True, backoff_base=0, backoff_max=0)
    pgqueue.cancel(cancelled)
    before = timezone.now()
    assert pgqueue.retry(failed, extra_attempts=2) is True
    row = jobs.get(pk=failed)
    assert (row.status, row.attempts, row.max_attempts, row.finished_at) == ("ready", 1, 3, None)
    assert len(row.errors) == 1, "the history is kept"
    assert row.run_after >= before - timedelta(seconds=5)
    assert jobs.filter(pk=failed, result__isnull=True).exists()
    assert pgqueue.retry(cancelled) is True
    row = jobs.get(pk=cancelled)
    assert (row.status, row.attempts, row.max_attempts) == ("ready", 0, 1)
    assert row.run_after <= timezone.now() + timedelta(seconds=5), "no longer scheduled for later"
    again = claim_one(driver, worker)
    assert (again.id, again.attempt, again.max_attempts) == (failed, 2, 3)


def test_retry_refuses_jobs_that_are_not_failed_or_cancelled(alias, driver, jobs):
    ready, running, succeeded = enqueue(), enqueue(), enqueue()
    worker = register(driver)
    jobs.filter(pk=ready).update(priority=-5)
    claim_one(driver, worker)
    claim_one(driver, worker)
    driver.complete(worker, [(succeeded, 1, "x")])
    assert [pgqueue.retry(i) for i in (ready, running, succeeded)] == [False, False, False]
    assert jobs.get(pk=succeeded).result == "x"
    for extra in (0, 1_000_001, 2**40):
        with pytest.raises(
            InvalidJob,
            match=f"extra_attempts must be a whole number from 1 to 1000000, got {extra}",
        ):
            pgqueue.retry(succeeded, extra)


def test_retry_will_not_duplicate_a_unique_key(alias, jobs):
    first = enqueue(unique_key="k")
    pgqueue.cancel(first)
    blocker = enqueue(unique_key="k")
    with pytest.raises(IntegrityError) as info:
        pgqueue.retry(first)
    assert first_line(info.value) == (
        f"pgqueue.retry: job {first} cannot be retried: another waiting or running job has "
        "the same unique_key"
    )
    assert jobs.get(pk=first).status == "cancelled"
    pgqueue.cancel(blocker)
    assert pgqueue.retry(first) is True


def test_unknown_ids_raise_job_not_found_without_aborting_the_callers_transaction(alias, jobs):
    with transaction.atomic(using=alias):
        with pytest.raises(JobNotFound) as cancelled:
            pgqueue.cancel(UNKNOWN)
        with pytest.raises(JobNotFound) as retried:
            pgqueue.retry(UNKNOWN)
        enqueue()
    assert str(cancelled.value) == f"pgqueue.cancel: job {UNKNOWN} does not exist"
    assert str(retried.value) == f"pgqueue.retry: job {UNKNOWN} does not exist"
    assert jobs.count() == 1


def test_pause_and_resume_are_idempotent(alias):
    queues = Queue.objects.using(alias)
    pgqueue.pause_queue("q")
    paused_at = queues.get(name="q").paused_at
    assert paused_at is not None
    pgqueue.pause_queue("q")
    assert (queues.get(name="q").paused, queues.get(name="q").paused_at) == (True, paused_at)
    pgqueue.resume_queue("q")
    pgqueue.resume_queue("q")
    assert (queues.get(name="q").paused, queues.get(name="q").paused_at) == (False, None)
    pgqueue.resume_queue("never-paused")
    assert not queues.filter(name="never-paused").exists()
    pgqueue.pause_queue("q")
    assert queues.get(name="q").paused
    with pytest.raises(InvalidJob, match="queue_name 'a b' is invalid"):
        pgqueue.pause_queue("a b")


def test_prune_deletes_old_finished_jobs_oldest_first(alias, jobs):
    now = timezone.now()
    old, older, oldest, recent = (enqueue() for _ in range(4))
    waiting, scheduled = enqueue(), enqueue(run_after=timedelta(hours=1))
    for job_id, status, age in [
        (old, "succeeded", 2),
        (older, "failed", 3),
        (oldest, "cancelled", 4),
        (recent, "succeeded", 0),
    ]:
        jobs.filter(pk=job_id).update(status=status, finished_at=now - timedelta(days=age))
    jobs.filter(pk=waiting).update(finished_at=now - timedelta(days=9))  # not finished: kept
    assert pgqueue.prune(timedelta(days=1), max_jobs=2) == 2
    assert set(jobs.values_list("id", flat=True)) == {old, recent, waiting, scheduled}
    assert pgqueue.prune(timedelta(days=1)) == 1
    assert pgqueue.prune(timedelta(days=1)) == 0
    assert pgqueue.prune(timedelta(0)) == 1
    assert set(jobs.values_list("id", flat=True)) == {waiting, scheduled}
