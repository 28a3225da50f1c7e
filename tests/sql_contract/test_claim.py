"""pgqueue.claim_v1: what a claim changes, selectors, order, paused queues, scheduled jobs."""

import psycopg
import pytest

from tests.sql_contract.conftest import (
    claim,
    claim_ids,
    enqueue,
    enqueue_many,
    job,
    make_stale,
    reap,
    register,
    scalar,
    wait_until,
)


def test_claim_marks_running_and_counts_the_attempt(pg, worker):
    job_id = enqueue(pg, "app.tasks.work", args="[1]", kwargs='{"k": 2}', queue_name="q")
    with pg.transaction():
        [claimed] = claim(pg, worker)
        now = scalar(pg, "SELECT now()")
    assert claimed == {
        "id": job_id,
        "task_path": "app.tasks.work",
        "args": [1],
        "kwargs": {"k": 2},
        "queue_name": "q",
        "priority": 0,
        "run_after": job(pg, job_id)["run_after"],
        "enqueued_at": job(pg, job_id)["enqueued_at"],
        "started_at": now,
        "attempt": 1,
        "max_attempts": 3,
        "worker_ids": [worker],
        "errors": [],
    }
    row = job(pg, job_id)
    assert row["status"] == "running"
    assert str(row["worker_id"]) == worker
    assert row["attempts"] == 1
    assert row["started_at"] == row["last_attempted_at"] == now


def test_a_running_job_is_not_claimed_again(pg, worker):
    job_id = enqueue(pg)
    assert claim_ids(pg, worker) == [job_id]
    assert claim_ids(pg, worker) == []
    assert claim_ids(pg, register(pg)) == []


def test_limit_caps_the_batch(pg, worker):
    ids = enqueue_many(pg, [{"task_path": "a.b"}] * 7)
    assert claim_ids(pg, worker, limit=3) == ids[:3]
    assert claim_ids(pg, worker, limit=3) == ids[3:6]
    assert claim_ids(pg, worker, limit=3) == ids[6:]


def test_selectors_are_taken_in_order(pg, worker):
    default_job = enqueue(pg, queue_name="default", priority=100)
    email_jobs = [enqueue(pg, queue_name="email", priority=-100) for _ in range(2)]
    enqueue(pg, queue_name="other", priority=100)
    assert claim_ids(pg, worker, ("email", "default"), limit=10) == [*email_jobs, default_job]


def test_a_later_selector_fills_what_an_earlier_one_left(pg, worker):
    email = enqueue(pg, queue_name="email")
    rest = [enqueue(pg, queue_name=q) for q in ("a", "b", "c")]
    assert claim_ids(pg, worker, ("email", "*"), limit=3) == [email, *rest[:2]]
    assert claim_ids(pg, worker, ("email", "*"), limit=3) == [rest[2]]


def test_overlapping_selectors_never_return_a_job_twice(pg, worker):
    ids = [enqueue(pg, queue_name="reports") for _ in range(3)]
    claimed = claim_ids(pg, worker, ("reports", "rep*", "*", "reports"), limit=10)
    assert claimed == ids


def test_star_is_every_queue(pg, worker):
    ids = [enqueue(pg, queue_name=q) for q in ("a", "b-c", "d.e", "f:g", "default")]
    assert claim_ids(pg, worker, ("*",)) == ids


def test_a_prefix_selector_matches_the_start_of_the_name_literally(pg, worker):
    reports = enqueue(pg, queue_name="reports")
    reports_daily = enqueue(pg, queue_name="reports:daily")
    repairs = enqueue(pg, queue_name="repairs")
    enqueue(pg, queue_name="prep")
    enqueue(pg, queue_name="abc")
    enqueue(pg, queue_name="ab")
    assert claim_ids(pg, worker, ("reports*",)) == [reports, reports_daily]
    assert claim_ids(pg, worker, ("rep*",)) == [repairs]
    assert claim_ids(pg, worker, ("a_c*",)) == [], "'_' is not a wildcard: a_c* must not match abc"
    assert claim_ids(pg, worker, ("a_*",)) == []
    assert claim_ids(pg, worker, ("abc",)) != []


def test_underscore_in_a_prefix_matches_an_underscore(pg, worker):
    enqueue(pg, queue_name="abc")
    a_c = enqueue(pg, queue_name="a_c")
    a_cd = enqueue(pg, queue_name="a_cd")
    assert claim_ids(pg, worker, ("a_c*",)) == [a_c, a_cd]


def test_an_exact_selector_does_not_match_a_longer_name(pg, worker):
    enqueue(pg, queue_name="emails")
    enqueue(pg, queue_name="email:bulk")
    assert claim_ids(pg, worker, ("email",)) == []


BAD_SELECTORS = [
    [],
    ["a%"],
    ["%"],
    ["a*b"],
    ["**"],
    ["*a"],
    [""],
    ["two words"],
    ["caf\u00e9"],
    ["q" * 65],
    ["q" * 65 + "*"],
    [None],
    ["email", "a%"],
]


def test_bad_selectors_are_rejected(pg, worker, subtests):
    enqueue(pg, queue_name="a_b")
    enqueue(pg, queue_name="ab")
    for selectors in BAD_SELECTORS:
        with subtests.test(selectors=selectors):
            with pytest.raises(
                psycopg.errors.InvalidParameterValue, match=r"pgqueue\.claim_v1: .*selector"
            ):
                pg.execute("SELECT * FROM pgqueue.claim_v1(%s, %s::text[], 5)", (worker, selectors))
            assert scalar(pg, "SELECT count(*) FROM pgqueue_job WHERE status = 'running'") == 0


def test_a_prefix_of_the_longest_queue_name_is_a_valid_selector(pg, worker):
    job_id = enqueue(pg, queue_name="q" * 64)
    assert claim_ids(pg, worker, ("q" * 64 + "*",)) == [job_id]


def test_null_selectors_are_rejected(pg, worker):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="selectors must be a non-empty"):
        pg.execute("SELECT * FROM pgqueue.claim_v1(%s, NULL, 5)", (worker,))


def test_a_null_worker_is_rejected_by_name(pg):
    enqueue(pg)
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match="worker_id is required, got NULL"
    ):
        pg.execute("SELECT * FROM pgqueue.claim_v1(NULL, '{*}', 5)")
    assert scalar(pg, "SELECT count(*) FROM pgqueue_job WHERE status = 'running'") == 0


def test_bad_limit_is_rejected(pg, worker, subtests):
    enqueue(pg)
    for limit in (0, -1, 1001, None):
        with subtests.test(limit=limit):
            with pytest.raises(
                psycopg.errors.InvalidParameterValue, match=r"limit must be from 1 to 1000, got"
            ):
                pg.execute(
                    "SELECT * FROM pgqueue.claim_v1(%s, '{*}', %s::integer)", (worker, limit)
                )
            assert scalar(pg, "SELECT count(*) FROM pgqueue_job WHERE status = 'running'") == 0


def test_order_is_priority_then_run_after_then_id(pg, worker):
    low = enqueue(pg, priority=-5)
    first_zero = enqueue(pg, queue_name="a")
    second_zero = enqueue(pg, queue_name="b")
    high = enqueue(pg, priority=50)
    earlier = scalar(
        pg,
        "SELECT pgqueue.enqueue('a.b', queue_name => 'c', run_after => now() - interval '1 minute')",
    )
    earlier_high = scalar(
        pg,
        "SELECT pgqueue.enqueue('a.b', priority => 50, run_after => now() - interval '1 minute')",
    )
    expected = [earlier_high, high, earlier, first_zero, second_zero, low]
    assert claim_ids(pg, register(pg), ("*",), limit=10) == expected


def test_the_same_order_holds_within_an_exact_and_a_prefix_selector(pg):
    for selector, queue in (("jobs", "jobs"), ("job*", "jobs-2")):
        low = enqueue(pg, queue_name=queue, priority=-1)
        zero = [enqueue(pg, queue_name=queue) for _ in range(3)]
        high = enqueue(pg, queue_name=queue, priority=1)
        assert claim_ids(pg, register(pg), (selector,), limit=10) == [high, *zero, low]


def test_paused_queue_is_skipped_and_does_not_shrink_the_batch(pg, worker):
    top = [enqueue(pg, queue_name="paused", priority=100) for _ in range(5)]
    others = [enqueue(pg, queue_name=f"q{i}") for i in range(6)]
    pg.execute("SELECT pgqueue.pause_queue('paused')")
    assert claim_ids(pg, worker, ("*",), limit=5) == others[:5]
    assert claim_ids(pg, worker, ("paused", "q*"), limit=5) == others[5:]
    assert claim_ids(pg, worker, ("paused",), limit=5) == []
    assert claim_ids(pg, worker, ("pause*",), limit=5) == []
    assert [job(pg, i)["status"] for i in top] == ["ready"] * 5
    pg.execute("SELECT pgqueue.resume_queue('paused')")
    assert claim_ids(pg, worker, ("paused",), limit=5) == top


def test_a_paused_queue_under_a_prefix_leaves_its_siblings_claimable(pg, worker):
    enqueue(pg, queue_name="reports", priority=100)
    repairs = [enqueue(pg, queue_name="repairs") for _ in range(3)]
    pg.execute("SELECT pgqueue.pause_queue('reports')")
    assert claim_ids(pg, worker, ("rep*",), limit=3) == repairs


def test_a_paused_queue_keeps_accepting_jobs(pg, worker):
    pg.execute("SELECT pgqueue.pause_queue('mail')")
    job_id = enqueue(pg, queue_name="mail")
    assert job(pg, job_id)["status"] == "ready"
    assert claim_ids(pg, worker) == []


def test_future_jobs_are_not_claimed_until_due(pg, worker):
    with pg.transaction():  # one database time for both calls, so a slow machine cannot make it due
        job_id = scalar(
            pg, "SELECT pgqueue.enqueue('a.b', run_after => now() + interval '1 second')"
        )
        assert job(pg, job_id)["status"] == "scheduled"
        assert claim_ids(pg, worker) == []
        assert job(pg, job_id)["status"] == "scheduled"
    claimed = wait_until(
        lambda: claim_ids(pg, worker), timeout=10, message="the scheduled job to become due"
    )
    assert claimed == [job_id]
    row = job(pg, job_id)
    assert row["status"] == "running"
    assert row["started_at"] >= row["run_after"], "never started before its run_after"


def test_a_due_scheduled_job_takes_its_place_in_the_order(pg, worker):
    due = scalar(pg, "SELECT pgqueue.enqueue('a.b', run_after => now() + interval '1 hour')")
    ready = enqueue(pg)
    pg.execute(
        "UPDATE pgqueue_job SET run_after = now() - interval '1 minute' WHERE id = %s", (due,)
    )
    assert job(pg, due)["status"] == "scheduled"
    assert claim_ids(pg, worker) == [due, ready], "run_after is earlier, so it comes first"


def test_next_run_after_is_the_earliest_scheduled_job_of_the_selected_queues(pg):
    assert scalar(pg, "SELECT pgqueue.next_run_after_v1('{*}')") is None
    soon = scalar(
        pg,
        "SELECT pgqueue.enqueue('a.b', queue_name => 'a', run_after => now() + interval '1 minute')",
    )
    later = scalar(
        pg,
        "SELECT pgqueue.enqueue('a.b', queue_name => 'b', run_after => now() + interval '1 hour')",
    )
    assert scalar(pg, "SELECT pgqueue.next_run_after_v1('{*}')") == job(pg, soon)["run_after"]
    assert scalar(pg, "SELECT pgqueue.next_run_after_v1('{b}')") == job(pg, later)["run_after"]
    assert scalar(pg, "SELECT pgqueue.next_run_after_v1('{c*}')") is None
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="selector"):
        pg.execute("SELECT pgqueue.next_run_after_v1('{a%}')")


def test_attempts_are_counted_at_claim(pg, worker):
    job_id = enqueue(pg, max_attempts=5)
    for attempt in (1, 2, 3):
        [claimed] = claim(pg, worker)
        assert claimed["attempt"] == attempt == job(pg, job_id)["attempts"]
        assert claimed["max_attempts"] == 5
        # Give it back as a reaped job would be, without touching attempts.
        pg.execute(
            "UPDATE pgqueue_job SET status = 'ready', worker_id = NULL WHERE id = %s", (job_id,)
        )
    assert job(pg, job_id)["worker_ids"] == [worker] * 3


def test_an_unregistered_worker_cannot_claim(pg):
    job_id = enqueue(pg)
    with pytest.raises(psycopg.errors.NoDataFound, match="is not registered") as info:
        claim(pg, "00000000-0000-0000-0000-000000000000")
    assert info.value.sqlstate == "P0002"
    assert job(pg, job_id)["status"] == "ready"


def test_a_reaped_worker_must_register_again(pg, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    make_stale(pg, worker, job_id)
    assert reap(pg) == 1
    with pytest.raises(psycopg.errors.NoDataFound, match="is not registered"):
        claim(pg, worker)
    assert claim_ids(pg, register(pg)) == [job_id]
