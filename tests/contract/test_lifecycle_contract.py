"""Claiming and outcomes, specified once and run on PostgreSQL and SQLite.

The worker's side of the lifecycle: claim order and selectors, paused queues,
scheduled jobs, attempts, fenced writes, retries with backoff, release.
"""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django.utils import timezone

import pgqueue
from pgqueue.exceptions import WorkerNotRegistered
from tests.contract.support import (
    BAD_ARGUMENT,
    ERROR,
    ERROR_KEYS,
    claim_one,
    enqueue,
    first_line,
    make_stale,
    register,
)

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "sqlite"])


def test_rollback_leaves_nothing(alias, jobs):
    with transaction.atomic(using=alias):
        enqueue()
        transaction.set_rollback(True, using=alias)
    assert jobs.count() == 0


# Claiming ---------------------------------------------------------------------------


def test_claim_order_selectors_and_literal_prefixes(alias, driver):
    low = enqueue(priority=-1)
    default_job = enqueue()
    email = enqueue(queue_name="email")
    high = enqueue(priority=9, queue_name="reports")
    upper = enqueue(queue_name="Reports2")
    a_c = enqueue(queue_name="a_c")
    abc = enqueue(queue_name="abc")
    worker = register(driver)
    assert [j.id for j in driver.claim(worker, ["email"], 10)] == [email]
    assert [j.id for j in driver.claim(worker, ["rep*"], 10)] == [high], (
        "prefixes are case-sensitive"
    )
    assert [j.id for j in driver.claim(worker, ["a_*"], 10)] == [a_c], "_ is not a wildcard"
    assert [j.id for j in driver.claim(worker, ["nothing", "*"], 3)] == [default_job, upper, abc]
    assert [j.id for j in driver.claim(worker, ["*"], 10)] == [low]
    assert driver.claim(worker, ["*"], 10) == []


def test_within_a_selector_priority_then_run_after_then_id(alias, driver):
    past = datetime(2000, 1, 1, tzinfo=UTC)
    late = enqueue(run_after=past + timedelta(days=2))
    early_b = enqueue(run_after=past)
    early_a_high = enqueue(run_after=past + timedelta(days=9), priority=1)
    early_c = enqueue(run_after=past)
    worker = register(driver)
    order = [j.id for j in driver.claim(worker, ["*"], 10)]
    assert order == [early_a_high, early_b, early_c, late]


def test_selectors_are_taken_in_order_before_priority(alias, driver):
    urgent_default = enqueue(priority=100)
    email = enqueue(queue_name="email", priority=-100)
    report = enqueue(queue_name="reports-daily")
    worker = register(driver)
    claimed = driver.claim(worker, ["email", "reports*", "default"], 10)
    assert [j.id for j in claimed] == [email, report, urgent_default]


def test_a_batch_is_limited_and_no_job_is_taken_twice_by_overlapping_selectors(alias, driver):
    ids = [enqueue(queue_name="mail") for _ in range(5)]
    worker = register(driver)
    first = driver.claim(worker, ["mail", "ma*", "*"], 3)
    rest = driver.claim(worker, ["mail", "ma*", "*"], 3)
    assert [j.id for j in first] + [j.id for j in rest] == ids


def test_claim_counts_the_attempt_and_fences_writes(alias, driver, jobs):
    job_id = enqueue()
    worker, other = register(driver), register(driver)
    [claimed] = driver.claim(worker, ["*"], 5)
    assert (claimed.id, claimed.attempt, claimed.worker_ids) == (job_id, 1, [worker])
    assert jobs.get(pk=job_id).status == "running"
    assert driver.complete(other, [(job_id, 1, "x")]) == set()
    assert driver.complete(worker, [(job_id, 2, "x")]) == set()
    assert driver.fail(other, job_id, 1, ERROR, retry=True, backoff_base=1, backoff_max=10) is None
    assert driver.append_output(other, job_id, 1, [1]) is False
    assert driver.release(other, [(job_id, 1)]) == set()
    assert driver.append_output(worker, job_id, 1, [1, {"a": 2}]) is True
    assert driver.append_output(worker, job_id, 1, ["three"]) is True
    assert pgqueue.get_result(job_id).output == [1, {"a": 2}, "three"], "readable while it runs"
    assert driver.complete(worker, [(job_id, 1, {"ok": True})]) == {job_id}
    row = jobs.get(pk=job_id)
    assert (row.status, row.result, row.output, row.worker_id) == (
        "succeeded",
        {"ok": True},
        [1, {"a": 2}, "three"],
        None,
    )
    assert row.finished_at is not None
    assert driver.complete(worker, [(job_id, 1, "late")]) == set(), "a finished job stays finished"
    assert driver.fail(worker, job_id, 1, ERROR, retry=True, backoff_base=1, backoff_max=1) is None


def test_a_claimed_job_carries_what_the_worker_needs(alias, driver, jobs):
    job_id = enqueue(args=[1], kwargs={"b": 2}, queue_name="q", priority=5, max_attempts=4)
    worker = register(driver)
    claimed = claim_one(driver, worker)
    row = jobs.get(pk=job_id)
    assert (claimed.task_path, claimed.args, claimed.kwargs, claimed.queue_name) == (
        "app.tasks.work",
        [1],
        {"b": 2},
        "q",
    )
    assert (claimed.priority, claimed.attempt, claimed.max_attempts, claimed.errors) == (
        5,
        1,
        4,
        [],
    )
    assert (claimed.run_after, claimed.enqueued_at, claimed.started_at) == (
        row.run_after,
        row.enqueued_at,
        row.started_at,
    )
    assert row.started_at == row.last_attempted_at
    assert (row.worker_id is not None, str(row.worker_id), row.worker_ids) == (
        True,
        worker,
        [worker],
    )


def test_a_job_run_again_starts_a_new_attempt_with_fresh_output(alias, driver, jobs):
    job_id = enqueue()
    first, second = register(driver), register(driver)
    claim_one(driver, first)
    started = jobs.get(pk=job_id).started_at
    driver.append_output(first, job_id, 1, ["from attempt 1"])
    make_stale(alias, first)
    assert driver.reap(60) == 1
    again = claim_one(driver, second)
    assert (again.attempt, again.worker_ids, again.started_at) == (2, [first, second], started)
    assert [e["exception_class_path"] for e in again.errors] == ["pgqueue.exceptions.WorkerLost"]
    assert jobs.get(pk=job_id).output == []
    # The first worker lost its lease: nothing it writes lands.
    assert driver.append_output(first, job_id, 1, ["late"]) is False
    assert driver.complete(first, [(job_id, 1, "late")]) == set()
    assert driver.fail(first, job_id, 1, ERROR, retry=False, backoff_base=0, backoff_max=0) is None
    assert driver.release(first, [(job_id, 1)]) == set()
    assert driver.complete(second, [(job_id, 2, "done")]) == {job_id}
    row = jobs.get(pk=job_id)
    assert (row.status, row.result, row.attempts, row.output) == ("succeeded", "done", 2, [])


def test_results_are_stored_as_json_and_none_as_json_null(alias, driver, jobs):
    values = [None, 0, "", [], {"a": [1, 2.5, "é", None, True]}, 2**70]
    ids = [enqueue() for _ in values]
    worker = register(driver)
    driver.claim(worker, ["*"], 10)
    assert driver.complete(worker, [(i, 1, v) for i, v in zip(ids, values, strict=True)]) == set(
        ids
    )
    assert [jobs.get(pk=i).result for i in ids] == values
    assert [pgqueue.get_result(i).return_value for i in ids] == values
    assert not jobs.filter(pk=ids[0], result__isnull=True).exists(), "JSON null, not SQL NULL"


def test_unregistered_worker_cannot_claim(alias, driver):
    enqueue()
    with pytest.raises(WorkerNotRegistered, match="is not registered"):
        driver.claim("00000000-0000-0000-0000-000000000000", ["*"], 1)


def test_paused_queues_are_skipped_and_do_not_shrink_a_batch(alias, driver):
    for _ in range(3):
        enqueue(queue_name="paused", priority=50)
    others = sorted(enqueue(queue_name=f"q{i}") for i in range(3))
    pgqueue.pause_queue("paused")
    enqueue(queue_name="paused", priority=50)  # a paused queue still accepts jobs
    worker = register(driver)
    assert sorted(j.id for j in driver.claim(worker, ["*"], 3)) == others
    assert driver.claim(worker, ["paused"], 3) == []
    assert driver.claim(worker, ["pa*"], 3) == []
    pgqueue.resume_queue("paused")
    assert len(driver.claim(worker, ["pa*"], 10)) == 4


def test_due_scheduled_jobs_are_promoted_by_the_next_claim(alias, driver, jobs):
    job_id = enqueue(run_after=timedelta(hours=1), queue_name="later")
    other = enqueue(run_after=timedelta(hours=2), queue_name="other")
    worker = register(driver)
    assert driver.claim(worker, ["*"], 5) == []
    run_after = jobs.get(pk=job_id).run_after
    assert driver.next_run_after(["*"]) == run_after
    assert driver.next_run_after(["lat*", "nothing"]) == run_after
    assert driver.next_run_after(["other"]) == jobs.get(pk=other).run_after
    assert driver.next_run_after(["nothing"]) is None
    pgqueue.pause_queue("later")
    assert driver.next_run_after(["later"]) == run_after, "paused queues included"
    pgqueue.resume_queue("later")
    jobs.filter(pk=job_id).update(run_after=timezone.now() - timedelta(seconds=1))
    assert jobs.get(pk=job_id).status == "scheduled"
    [claimed] = driver.claim(worker, ["*"], 5)
    assert claimed.id == job_id
    assert jobs.get(pk=other).status == "scheduled"


def test_due_jobs_are_promoted_even_when_the_claim_selects_other_queues(alias, driver, jobs):
    job_id = enqueue(run_after=timedelta(hours=1), queue_name="later")
    jobs.filter(pk=job_id).update(run_after=timezone.now() - timedelta(seconds=1))
    worker = register(driver)
    assert driver.claim(worker, ["elsewhere"], 5) == []
    assert jobs.get(pk=job_id).status == "ready"


# Failing, retrying, releasing ----------------------------------------------------------------


def _delay_window(base: float, cap: float, attempt: int) -> tuple[float, float]:
    delay = min(cap, base * 2 ** (attempt - 1))
    return delay * 0.5, delay


def test_fail_retries_with_capped_exponential_backoff_and_jitter(alias, driver, jobs):
    job_id = enqueue(max_attempts=4)
    worker = register(driver)
    for attempt, (base, cap) in enumerate([(10, 100), (10, 100), (10, 15)], start=1):
        claimed = claim_one(driver, worker)
        assert claimed.attempt == attempt
        before = timezone.now()
        status = driver.fail(
            worker, job_id, attempt, ERROR, retry=True, backoff_base=base, backoff_max=cap
        )
        after = timezone.now()
        assert status == "scheduled"
        row = jobs.get(pk=job_id)
        low, high = _delay_window(base, cap, attempt)
        assert before + timedelta(seconds=low) <= row.run_after
        assert row.run_after <= after + timedelta(seconds=high)
        assert (row.worker_id, row.finished_at, row.attempts) == (None, None, attempt)
        assert driver.claim(worker, ["*"], 1) == [], "not before its backoff"
        jobs.filter(pk=job_id).update(run_after=timezone.now() - timedelta(seconds=1))
    row = jobs.get(pk=job_id)
    assert [e["attempt"] for e in row.errors] == [1, 2, 3]
    for error in row.errors:
        assert set(error) == ERROR_KEYS
        assert error["worker_id"] == worker and error["message"] == "boom"
        assert datetime.fromisoformat(error["at"]) <= timezone.now()


def test_backoff_stays_at_its_cap_after_thousands_of_attempts(alias, driver, jobs):
    job_id = enqueue(max_attempts=5000)
    jobs.filter(pk=job_id).update(attempts=2999)
    worker = register(driver)
    assert claim_one(driver, worker).attempt == 3000
    before = timezone.now()
    status = driver.fail(worker, job_id, 3000, ERROR, retry=True, backoff_base=5, backoff_max=60)
    assert status == "scheduled"
    row = jobs.get(pk=job_id)
    assert before + timedelta(seconds=30) <= row.run_after <= timezone.now() + timedelta(seconds=60)


def test_the_last_attempt_fails_for_good(alias, driver, jobs):
    job_id = enqueue(max_attempts=2)
    worker = register(driver)
    claim_one(driver, worker)
    assert (
        driver.fail(worker, job_id, 1, ERROR, retry=True, backoff_base=0, backoff_max=0)
        == "scheduled"
    )
    again = claim_one(driver, worker)
    assert again.attempt == 2 and [e["attempt"] for e in again.errors] == [1]
    assert (
        driver.fail(worker, job_id, 2, ERROR, retry=True, backoff_base=0, backoff_max=0) == "failed"
    )
    row = jobs.get(pk=job_id)
    assert (row.status, row.attempts, row.worker_id) == ("failed", 2, None)
    assert row.finished_at is not None
    result = pgqueue.get_result(job_id)
    assert [e.exception_class_path for e in result.errors] == ["builtins.ValueError"] * 2
    assert driver.claim(worker, ["*"], 1) == []


def test_fail_without_retry_ends_failed_with_attempts_left(alias, driver, jobs):
    job_id = enqueue(max_attempts=5)
    run_after = jobs.get(pk=job_id).run_after
    worker = register(driver)
    claim_one(driver, worker)
    assert (
        driver.fail(worker, job_id, 1, ERROR, retry=False, backoff_base=1, backoff_max=1)
        == "failed"
    )
    row = jobs.get(pk=job_id)
    assert (row.status, row.run_after, row.attempts) == ("failed", run_after, 1)


def test_release_gives_the_attempt_back(alias, driver, jobs):
    job_id = enqueue()
    first, second = register(driver), register(driver)
    claim_one(driver, first)
    assert driver.release(first, [(job_id, 1)]) == {job_id}
    row = jobs.get(pk=job_id)
    assert (row.status, row.attempts, row.worker_ids, row.started_at, row.worker_id) == (
        "ready",
        0,
        [],
        None,
        None,
    )
    claim_one(driver, first)
    started = jobs.get(pk=job_id).started_at
    driver.fail(first, job_id, 1, ERROR, retry=True, backoff_base=0, backoff_max=0)
    claim_one(driver, second)
    assert driver.release(second, [(job_id, 2), (10**9, 1)]) == {job_id}
    row = jobs.get(pk=job_id)
    assert (row.status, row.attempts, row.worker_ids, row.started_at) == (
        "ready",
        1,
        [first],
        started,
    )
    assert len(row.errors) == 1
    assert claim_one(driver, second).attempt == 2


def test_bad_worker_arguments_are_refused_with_the_same_message(alias, driver):
    worker = register(driver)
    cases = [
        (
            lambda: driver.claim(worker, ["*"], 0),
            "pgqueue.claim_v1: limit must be from 1 to 1000, got 0",
        ),
        (
            lambda: driver.claim(worker, ["*"], 1001),
            "pgqueue.claim_v1: limit must be from 1 to 1000, got 1001",
        ),
        (
            lambda: driver.claim(worker, [], 1),
            "pgqueue.claim_v1: selectors must be a non-empty array of queue selectors",
        ),
        (
            lambda: driver.claim(worker, ["ok", "a*b"], 1),
            "pgqueue.claim_v1: queue selector 'a*b' is invalid",
        ),
        (
            lambda: driver.next_run_after(["it's"]),
            "pgqueue.next_run_after_v1: queue selector 'it''s' is invalid",
        ),
        (
            lambda: driver.register_worker("h", 1, ["*"], 0),
            "pgqueue.register_worker_v1: concurrency must be at least 1, got 0",
        ),
        (
            lambda: driver.register_worker("h", 1, ["**"], 1),
            "pgqueue.register_worker_v1: queue selector '**' is invalid",
        ),
        (
            lambda: driver.reap(0),
            "pgqueue.reap_v1: orphan_after must be a positive interval, got 00:00:00",
        ),
        (
            lambda: driver.fail(
                worker, 1, 1, {"traceback": ""}, retry=True, backoff_base=1, backoff_max=1
            ),
            "pgqueue.fail_v1: error must be a JSON object with string keys exception_class_path and "
            "traceback",
        ),
        (
            lambda: driver.fail(worker, 1, 1, ERROR, retry=True, backoff_base=-1, backoff_max=1),
            "pgqueue.fail_v1: retry, backoff_base and backoff_max are required and must not be "
            "negative",
        ),
        (
            lambda: driver.append_output(worker, 1, 1, {"not": "a list"}),
            "pgqueue.append_output_v1: values must be a JSON array",
        ),
        (
            lambda: driver.prune(-1),
            "pgqueue.prune: older_than must be an interval of zero or more, got -1 days +23:59:59",
        ),
        (
            lambda: driver.prune(0, 0),
            "pgqueue.prune: max_jobs must be at least 1 or NULL, got 0",
        ),
    ]
    for call, message in cases:
        with pytest.raises(BAD_ARGUMENT) as info:
            call()
        assert first_line(info.value) == message
