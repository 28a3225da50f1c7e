"""complete_v1, fail_v1, release_v1, append_output_v1: a job changes only for the worker and attempt holding it."""

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.sql_contract.conftest import (
    ERROR,
    append_output,
    claim,
    claim_ids,
    complete,
    empty_tables,
    enqueue,
    fail,
    job,
    make_due,
    make_stale,
    reap,
    register,
    release,
    scalar,
)

# What each fenced write returns when the caller no longer holds the job.
WRITES: dict[str, tuple[Callable[..., Any], Any]] = {
    "complete_v1": (lambda conn, w, j, a: complete(conn, w, j, a, {"late": True}), []),
    "fail_v1": (lambda conn, w, j, a: fail(conn, w, j, a), None),
    "fail_v1 retry=false": (lambda conn, w, j, a: fail(conn, w, j, a, retry=False), None),
    "release_v1": (release, []),
    "append_output_v1": (lambda conn, w, j, a: append_output(conn, w, j, a, ["late"]), False),
}


def _another_worker(pg, job_id, holder):
    claim(pg, holder)
    return register(pg), 1


def _an_unregistered_worker(pg, job_id, holder):
    claim(pg, holder)
    return str(uuid.uuid4()), 1


def _an_attempt_not_yet_made(pg, job_id, holder):
    claim(pg, holder)
    return holder, 2


def _a_previous_attempt(pg, job_id, holder):
    claim(pg, holder)
    assert fail(pg, holder, job_id, 1, base="0 seconds") == "scheduled"
    make_due(pg, job_id)
    assert claim_ids(pg, holder) == [job_id]
    return holder, 1


def _reaped(pg, job_id, holder):
    claim(pg, holder)
    make_stale(pg, holder, job_id)
    assert reap(pg) == 1
    return holder, 1


def _reaped_and_claimed_by_another_worker(pg, job_id, holder):
    _reaped(pg, job_id, holder)
    assert claim_ids(pg, register(pg)) == [job_id]
    return holder, 1


def _released(pg, job_id, holder):
    claim(pg, holder)
    assert release(pg, holder, job_id, 1) == [job_id]
    return holder, 1


def _released_and_claimed_again(pg, job_id, holder):
    _released(pg, job_id, holder)
    assert claim_ids(pg, register(pg)) == [job_id]
    return holder, 1


def _completed(pg, job_id, holder):
    claim(pg, holder)
    assert complete(pg, holder, job_id, 1, "first") == [job_id]
    return holder, 1


def _failed(pg, job_id, holder):
    claim(pg, holder)
    assert fail(pg, holder, job_id, 1, retry=False) == "failed"
    return holder, 1


def _cancelled_before_it_ran(pg, job_id, holder):
    assert scalar(pg, "SELECT pgqueue.cancel(%s)", job_id) is True
    return holder, 1


SITUATIONS = {
    "another worker": _another_worker,
    "an unregistered worker": _an_unregistered_worker,
    "an attempt not yet made": _an_attempt_not_yet_made,
    "a previous attempt": _a_previous_attempt,
    "reaped": _reaped,
    "reaped and claimed by another worker": _reaped_and_claimed_by_another_worker,
    "released": _released,
    "released and claimed by another worker": _released_and_claimed_again,
    "already completed": _completed,
    "already failed": _failed,
    "cancelled before it ran": _cancelled_before_it_ran,
}


@pytest.mark.parametrize("write", WRITES)
def test_a_write_without_the_lease_changes_nothing_and_says_so(pg, subtests, write):
    call, lost = WRITES[write]
    for situation, arrange in SITUATIONS.items():
        with subtests.test(situation=situation):
            empty_tables(pg)
            job_id = enqueue(pg, max_attempts=5)
            writer, attempt = arrange(pg, job_id, register(pg))
            before = job(pg, job_id)
            assert call(pg, writer, job_id, attempt) == lost
            assert job(pg, job_id) == before


def test_complete_by_another_worker_or_attempt_changes_nothing(pg):
    job_id = enqueue(pg)
    holder, other = register(pg), register(pg)
    claim(pg, holder)
    before = job(pg, job_id)
    assert complete(pg, other, job_id, 1, "not mine") == []
    assert complete(pg, holder, job_id, 2, "wrong attempt") == []
    assert job(pg, job_id) == before
    assert complete(pg, holder, job_id, 1, "mine") == [job_id]
    assert job(pg, job_id)["result"] == "mine"


def test_a_reaped_job_cannot_be_completed_by_its_old_worker(pg):
    job_id = enqueue(pg)
    old = register(pg)
    claim(pg, old)
    make_stale(pg, old, job_id)
    assert reap(pg) == 1
    new = register(pg)
    [again] = claim(pg, new)
    assert again["attempt"] == 2
    assert complete(pg, old, job_id, 1, "stale") == []
    assert fail(pg, old, job_id, 1) is None
    assert append_output(pg, old, job_id, 1, ["stale"]) is False
    assert complete(pg, new, job_id, 2, "second") == [job_id]
    row = job(pg, job_id)
    assert (row["status"], row["result"], row["output"]) == ("succeeded", "second", [])


def test_an_unknown_job_id_reports_a_lost_lease(pg, worker):
    assert complete(pg, worker, 999_999, 1) == []
    assert fail(pg, worker, 999_999, 1) is None
    assert release(pg, worker, 999_999, 1) == []
    assert append_output(pg, worker, 999_999, 1, [1]) is False


def test_complete_stores_the_result_and_ends_the_job(pg, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    with pg.transaction():
        assert complete(pg, worker, job_id, 1, {"ok": [1, 2]}) == [job_id]
        now = scalar(pg, "SELECT now()")
    row = job(pg, job_id)
    assert (row["status"], row["result"], row["worker_id"]) == ("succeeded", {"ok": [1, 2]}, None)
    assert row["finished_at"] == now
    assert row["attempts"] == 1


def test_complete_in_a_batch_completes_exactly_the_held_jobs(pg, worker):
    ids = [enqueue(pg) for _ in range(3)]
    claim(pg, worker)
    done = scalar(
        pg,
        "SELECT pgqueue.complete_v1(%s, %s, %s, ARRAY['1', 'null', '\"three\"']::jsonb[])",
        worker,
        ids,
        [1, 7, 1],
    )
    assert sorted(done) == [ids[0], ids[2]]
    assert [job(pg, i)["status"] for i in ids] == ["succeeded", "running", "succeeded"]
    assert [job(pg, i)["result"] for i in ids] == [1, None, "three"]


# Each would change the claimed job (%(j)s, attempt 1 of worker %(w)s) if it were not rejected.
MALFORMED_CALLS = [
    ("SELECT pgqueue.complete_v1(%(w)s, ARRAY[%(j)s, 0], '{1}', ARRAY['1'::jsonb])", "same length"),
    ("SELECT pgqueue.complete_v1(%(w)s, ARRAY[%(j)s], '{1}', ARRAY['1', '2']::jsonb[])", "results"),
    ("SELECT pgqueue.complete_v1(%(w)s, ARRAY[%(j)s], '{1}', NULL)", "results"),
    ("SELECT pgqueue.complete_v1(%(w)s, ARRAY[%(j)s], NULL, ARRAY['1'::jsonb])", "attempts"),
    ("SELECT pgqueue.complete_v1(NULL, ARRAY[%(j)s], '{1}', ARRAY['1'::jsonb])", "worker_id"),
    ("SELECT pgqueue.release_v1(%(w)s, ARRAY[%(j)s], '{}')", "same length"),
    ("SELECT pgqueue.release_v1(NULL, ARRAY[%(j)s], '{1}')", "worker_id"),
    ("SELECT pgqueue.fail_v1(%(w)s, %(j)s, 1, NULL)", "error must be"),
    ("SELECT pgqueue.fail_v1(%(w)s, %(j)s, 1, '{}')", "error must be"),
    ("SELECT pgqueue.fail_v1(NULL, %(j)s, 1, '{}')", "worker_id"),
    ("SELECT pgqueue.append_output_v1(%(w)s, %(j)s, 1, '{}')", "values must be a JSON array"),
    ("SELECT pgqueue.append_output_v1(%(w)s, %(j)s, 1, '1')", "values must be a JSON array"),
    ("SELECT pgqueue.append_output_v1(%(w)s, %(j)s, 1, NULL)", "values must be a JSON array"),
]


def test_malformed_fenced_calls_raise_22023_and_change_nothing(pg, worker, subtests):
    job_id = enqueue(pg)
    claim(pg, worker)
    before = job(pg, job_id)
    for sql, message in MALFORMED_CALLS:
        with subtests.test(sql=sql):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
                pg.execute(sql, {"w": worker, "j": job_id})
            assert job(pg, job_id) == before


def _fail_now(pg, worker, job_id, attempt, **options) -> tuple[str | None, datetime]:
    """fail_v1, and the database time it used (now() of its transaction)."""
    with pg.transaction():
        status = fail(pg, worker, job_id, attempt, **options)
        now = scalar(pg, "SELECT now()")
    return status, now


def test_fail_retries_with_exponential_backoff_then_fails(pg, worker):
    job_id = enqueue(pg, max_attempts=4)
    base = timedelta(seconds=2)
    for attempt in (1, 2, 3):
        [claimed] = claim(pg, worker)
        assert claimed["attempt"] == attempt
        with pg.transaction():  # one now() for the failure and the claim that follows
            assert fail(pg, worker, job_id, attempt, base="2 seconds") == "scheduled"
            now = scalar(pg, "SELECT now()")
            assert claim_ids(pg, worker) == [], "not claimable before its backoff is over"
        row = job(pg, job_id)
        assert (row["status"], row["worker_id"], row["finished_at"]) == ("scheduled", None, None)
        longest = base * 2 ** (attempt - 1)
        assert longest / 2 <= row["run_after"] - now <= longest, (attempt, row["run_after"] - now)
        make_due(pg, job_id)
    claim(pg, worker)
    status, now = _fail_now(pg, worker, job_id, 4)
    assert status == "failed"
    row = job(pg, job_id)
    assert (row["status"], row["finished_at"], row["worker_id"]) == ("failed", now, None)
    assert [e["attempt"] for e in row["errors"]] == [1, 2, 3, 4]
    for error in row["errors"]:
        assert {k: error[k] for k in ERROR} == ERROR
        assert error["worker_id"] == worker
    assert datetime.fromisoformat(row["errors"][-1]["at"]) == now


def test_backoff_is_capped_by_backoff_max(pg, worker):
    job_id = enqueue(pg, max_attempts=10)
    pg.execute("UPDATE pgqueue_job SET attempts = 5 WHERE id = %s", (job_id,))
    claim(pg, worker)
    status, now = _fail_now(pg, worker, job_id, 6, base="10 seconds", maximum="4 seconds")
    assert status == "scheduled"
    delay = job(pg, job_id)["run_after"] - now
    assert timedelta(seconds=2) <= delay <= timedelta(seconds=4), delay


def test_backoff_is_jittered(pg, worker):
    """Jobs failing together do not all retry at the same moment."""
    ids = [enqueue(pg) for _ in range(20)]
    claim(pg, worker, limit=20)
    with pg.transaction():  # one now() for all of them: only the jitter differs
        for job_id in ids:
            fail(pg, worker, job_id, 1, base="1 hour", maximum="1 hour")
    run_afters = {job(pg, job_id)["run_after"] for job_id in ids}
    assert len(run_afters) > 10


def test_a_zero_backoff_retries_at_once(pg, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    assert fail(pg, worker, job_id, 1, base="0 seconds") == "scheduled"
    assert claim_ids(pg, worker) == [job_id]


@pytest.mark.parametrize("attempt", [52, 60, 1100, 2_147_483_646])
def test_backoff_at_a_high_attempt_is_backoff_max(pg, worker, attempt):
    """A job allowed many attempts keeps retrying: 2^(attempt-1) must not overflow an interval."""
    job_id = enqueue(pg)
    # Repeated retries can take a row beyond what enqueue accepts, up to the integer limit.
    pg.execute(
        "UPDATE pgqueue_job SET attempts = %s, max_attempts = 2147483647 WHERE id = %s",
        (attempt - 1, job_id),
    )
    claim(pg, worker)
    status, now = _fail_now(pg, worker, job_id, attempt, base="5 seconds", maximum="1 hour")
    assert status == "scheduled"
    delay = job(pg, job_id)["run_after"] - now
    assert timedelta(minutes=30) <= delay <= timedelta(hours=1), delay


def test_fail_without_retry_ends_the_job_with_attempts_left(pg, worker):
    job_id = enqueue(pg, max_attempts=5)
    claim(pg, worker)
    status, now = _fail_now(pg, worker, job_id, 1, retry=False)
    assert status == "failed"
    row = job(pg, job_id)
    assert (row["status"], row["attempts"], row["finished_at"]) == ("failed", 1, now)
    assert len(row["errors"]) == 1


def test_fail_keeps_extra_error_keys_but_not_a_forged_attempt(pg, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    forged = {**ERROR, "attempt": 99, "worker_id": "someone", "extra": [1]}
    fail(pg, worker, job_id, 1, error=forged)
    [error] = job(pg, job_id)["errors"]
    assert (error["attempt"], error["worker_id"], error["extra"]) == (1, worker, [1])


MALFORMED_ERRORS = [
    {"traceback": "x"},
    {"exception_class_path": "a.B"},
    {"exception_class_path": 1, "traceback": "x"},
    {"exception_class_path": "a.B", "traceback": None},
    [],
    "boom",
]


def test_fail_rejects_a_malformed_error_and_changes_nothing(pg, worker, subtests):
    job_id = enqueue(pg)
    claim(pg, worker)
    before = job(pg, job_id)
    for error in MALFORMED_ERRORS:
        with subtests.test(error=repr(error)):
            with pytest.raises(
                psycopg.errors.InvalidParameterValue, match="error must be a JSON object"
            ):
                pg.execute(
                    "SELECT pgqueue.fail_v1(%s, %s, 1, %s::jsonb)",
                    (worker, job_id, json.dumps(error)),
                )
            assert job(pg, job_id) == before


BAD_RETRY_OPTIONS = [
    "NULL, '1 second', '1 hour'",
    "true, '-1 second', '1 hour'",
    "true, '1 second', '-1 hour'",
    "true, NULL, '1 hour'",
    "true, '1 second', NULL",
]


def test_fail_rejects_bad_retry_options(pg, worker, subtests):
    job_id = enqueue(pg)
    claim(pg, worker)
    before = job(pg, job_id)
    for options in BAD_RETRY_OPTIONS:
        with subtests.test(options=options):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="retry, backoff_base"):
                pg.execute(
                    f"SELECT pgqueue.fail_v1(%s, %s, 1, %s::jsonb, {options})",
                    (worker, job_id, json.dumps(ERROR)),
                )
            assert job(pg, job_id) == before


def test_release_does_not_consume_an_attempt(pg, worker):
    job_id = enqueue(pg)
    before = job(pg, job_id)
    claim(pg, worker)
    assert release(pg, worker, job_id, 1) == [job_id]
    row = job(pg, job_id)
    assert (row["status"], row["attempts"], row["worker_ids"], row["worker_id"]) == (
        "ready",
        0,
        [],
        None,
    )
    assert row["started_at"] is None, "it never started, as far as anyone can tell"
    assert row["run_after"] == before["run_after"]
    [again] = claim(pg, register(pg))
    assert again["attempt"] == 1


def test_release_rolls_back_only_the_current_attempt(pg, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    fail(pg, worker, job_id, 1, base="0 seconds")
    first_start = job(pg, job_id)["started_at"]
    second = register(pg)
    claim(pg, second)
    assert release(pg, second, job_id, 2) == [job_id]
    row = job(pg, job_id)
    assert (row["status"], row["attempts"], row["worker_ids"]) == ("ready", 1, [worker])
    assert row["started_at"] == first_start
    assert [e["attempt"] for e in row["errors"]] == [1], "the failed attempt stays in the history"


def test_a_released_job_keeps_its_place_in_the_queue(pg, worker):
    first, second = enqueue(pg), enqueue(pg)
    assert claim_ids(pg, worker, limit=1) == [first]
    release(pg, worker, first, 1)
    assert claim_ids(pg, worker, limit=1) == [first]
    assert claim_ids(pg, worker, limit=1) == [second]


def test_release_in_a_batch_releases_exactly_the_held_jobs(pg, worker):
    ids = [enqueue(pg) for _ in range(3)]
    claim(pg, worker)
    released = scalar(pg, "SELECT pgqueue.release_v1(%s, %s, '{1,2,1}')", worker, ids)
    assert sorted(released) == [ids[0], ids[2]]
    assert [job(pg, i)["status"] for i in ids] == ["ready", "running", "ready"]


def test_output_appends_while_running_and_is_readable_by_others(pg, pg_factory, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    reader = pg_factory()
    assert append_output(pg, worker, job_id, 1, [1]) is True
    assert job(reader, job_id)["output"] == [1]
    assert append_output(pg, worker, job_id, 1, [{"step": 2}, 3]) is True
    assert append_output(pg, worker, job_id, 1, []) is True
    assert job(reader, job_id)["output"] == [1, {"step": 2}, 3]
    assert job(reader, job_id)["status"] == "running"


def test_output_starts_empty_at_each_attempt(pg, worker):
    job_id = enqueue(pg)
    claim(pg, worker)
    append_output(pg, worker, job_id, 1, ["first try"])
    fail(pg, worker, job_id, 1, base="0 seconds")
    assert job(pg, job_id)["output"] == ["first try"], "kept while the job waits"
    claim(pg, worker)
    assert job(pg, job_id)["output"] == []
    append_output(pg, worker, job_id, 2, ["second try"])
    complete(pg, worker, job_id, 2, "done")
    row = job(pg, job_id)
    assert (row["output"], row["result"]) == (["second try"], "done")
