"""Operator functions: cancel, retry, pause_queue, resume_queue, prune."""

import psycopg
import pytest

from tests.sql_contract.conftest import (
    claim,
    claim_ids,
    complete,
    count_jobs,
    enqueue,
    fail,
    job,
    scalar,
)


def cancel(conn, job_id) -> bool:
    return scalar(conn, "SELECT pgqueue.cancel(%s)", job_id)


def retry(conn, job_id, extra_attempts: int | None = 1) -> bool:
    return scalar(conn, "SELECT pgqueue.retry(%s, %s::integer)", job_id, extra_attempts)


def prune(conn, older_than: str, max_jobs: int | None = None) -> int:
    return scalar(conn, "SELECT pgqueue.prune(%s::interval, %s::integer)", older_than, max_jobs)


def paused(conn) -> dict[str, bool]:
    return dict(conn.execute("SELECT name, paused FROM pgqueue_queue").fetchall())


class TestCancel:
    def test_a_ready_job_ends_cancelled_and_never_runs(self, pg, worker):
        job_id = enqueue(pg)
        with pg.transaction():
            assert cancel(pg, job_id) is True
            now = scalar(pg, "SELECT now()")
        row = job(pg, job_id)
        assert (row["status"], row["finished_at"], row["attempts"]) == ("cancelled", now, 0)
        assert claim_ids(pg, worker) == []

    def test_a_scheduled_job_ends_cancelled_and_is_never_promoted(self, pg, worker):
        job_id = scalar(pg, "SELECT pgqueue.enqueue('a.b', run_after => now() + interval '1 day')")
        assert cancel(pg, job_id) is True
        pg.execute(
            "UPDATE pgqueue_job SET run_after = now() - interval '1 day' WHERE id = %s", (job_id,)
        )
        assert claim_ids(pg, worker) == []
        assert job(pg, job_id)["status"] == "cancelled"

    def test_a_running_job_is_not_interrupted(self, pg, worker):
        job_id = enqueue(pg)
        claim(pg, worker)
        before = job(pg, job_id)
        assert cancel(pg, job_id) is False
        assert job(pg, job_id) == before
        assert complete(pg, worker, job_id, 1) == [job_id]

    @pytest.mark.parametrize("ending", ["succeeded", "failed", "cancelled"])
    def test_a_finished_job_is_left_as_it_is(self, pg, worker, ending):
        job_id = enqueue(pg)
        if ending == "cancelled":
            cancel(pg, job_id)
        else:
            claim(pg, worker)
            if ending == "succeeded":
                complete(pg, worker, job_id, 1)
            else:
                fail(pg, worker, job_id, 1, retry=False)
        before = job(pg, job_id)
        assert before["status"] == ending
        assert cancel(pg, job_id) is False
        assert job(pg, job_id) == before

    def test_an_unknown_id_raises_no_data_found(self, pg):
        with pytest.raises(psycopg.errors.NoDataFound, match="job 999999 does not exist") as info:
            cancel(pg, 999_999)
        assert info.value.sqlstate == "P0002"

    def test_cancelling_frees_the_unique_key(self, pg):
        first = enqueue(pg, unique_key="k")
        cancel(pg, first)
        assert enqueue(pg, unique_key="k") != first


class TestRetry:
    def test_a_failed_job_is_ready_again_with_extra_attempts(self, pg, worker):
        job_id = enqueue(pg, max_attempts=1)
        claim(pg, worker)
        assert fail(pg, worker, job_id, 1) == "failed", "its only attempt"
        with pg.transaction():
            assert retry(pg, job_id, 2) is True
            now = scalar(pg, "SELECT now()")
        row = job(pg, job_id)
        assert (row["status"], row["attempts"], row["max_attempts"]) == ("ready", 1, 3)
        assert (row["finished_at"], row["run_after"], row["result"]) == (None, now, None)
        assert [e["attempt"] for e in row["errors"]] == [1], "history kept"
        [claimed] = claim(pg, worker)
        assert claimed["attempt"] == 2

    def test_a_cancelled_job_that_never_ran_gets_extra_attempts(self, pg, worker):
        job_id = enqueue(pg, max_attempts=5)
        cancel(pg, job_id)
        assert retry(pg, job_id) is True
        row = job(pg, job_id)
        assert (row["status"], row["attempts"], row["max_attempts"]) == ("ready", 0, 1)
        assert claim_ids(pg, worker) == [job_id]

    def test_the_default_is_one_more_attempt(self, pg, worker):
        job_id = enqueue(pg, max_attempts=2)
        for attempt in (1, 2):
            claim(pg, worker)
            fail(pg, worker, job_id, attempt, base="0 seconds")
        assert job(pg, job_id)["status"] == "failed"
        assert scalar(pg, "SELECT pgqueue.retry(%s)", job_id) is True
        assert job(pg, job_id)["max_attempts"] == 3

    @pytest.mark.parametrize("state", ["ready", "scheduled", "running", "succeeded"])
    def test_other_jobs_are_left_as_they_are(self, pg, worker, state):
        job_id = scalar(
            pg,
            "SELECT pgqueue.enqueue('a.b', run_after => now() + %s::interval)",
            "1 day" if state == "scheduled" else "0 seconds",
        )
        if state in ("running", "succeeded"):
            claim(pg, worker)
        if state == "succeeded":
            complete(pg, worker, job_id, 1, "kept")
        before = job(pg, job_id)
        assert before["status"] == state
        assert retry(pg, job_id) is False
        assert job(pg, job_id) == before

    @pytest.mark.parametrize("extra", [0, -1, None, 1000001])
    def test_extra_attempts_must_be_from_1_to_a_million(self, pg, extra):
        job_id = enqueue(pg)
        cancel(pg, job_id)
        with pytest.raises(
            psycopg.errors.InvalidParameterValue, match="extra_attempts must be from 1 to 1000000"
        ):
            retry(pg, job_id, extra)
        assert job(pg, job_id)["status"] == "cancelled"

    def test_an_unknown_id_raises_no_data_found(self, pg):
        with pytest.raises(psycopg.errors.NoDataFound, match="job 999999 does not exist"):
            retry(pg, 999_999)

    def test_a_unique_key_held_by_another_job_is_a_clear_conflict(self, pg):
        first = enqueue(pg, unique_key="k")
        cancel(pg, first)
        holder = enqueue(pg, unique_key="k")
        with pytest.raises(
            psycopg.errors.UniqueViolation,
            match=f"job {first} cannot be retried: .*same unique_key",
        ) as info:
            retry(pg, first)
        assert info.value.sqlstate == "23505"
        assert job(pg, first)["status"] == "cancelled"
        assert job(pg, holder)["status"] == "ready"

    def test_a_retried_job_holds_its_unique_key_again(self, pg):
        first = enqueue(pg, unique_key="k")
        cancel(pg, first)
        assert retry(pg, first) is True
        assert enqueue(pg, unique_key="k") == first


class TestPauseResume:
    def test_pause_and_resume_are_idempotent(self, pg):
        pg.execute("SELECT pgqueue.pause_queue('mail')")
        paused_at = scalar(pg, "SELECT paused_at FROM pgqueue_queue WHERE name = 'mail'")
        assert paused_at is not None
        pg.execute("SELECT pgqueue.pause_queue('mail')")
        assert paused(pg) == {"mail": True}
        assert scalar(pg, "SELECT paused_at FROM pgqueue_queue WHERE name = 'mail'") == paused_at, (
            "pausing again keeps the time it was first paused"
        )
        pg.execute("SELECT pgqueue.resume_queue('mail')")
        pg.execute("SELECT pgqueue.resume_queue('mail')")
        assert paused(pg) == {"mail": False}
        assert scalar(pg, "SELECT paused_at FROM pgqueue_queue WHERE name = 'mail'") is None

    def test_resuming_a_queue_never_paused_is_harmless(self, pg):
        pg.execute("SELECT pgqueue.resume_queue('never-paused')")
        assert paused(pg).get("never-paused") is not True

    def test_pausing_one_queue_leaves_the_others(self, pg, worker):
        pg.execute("SELECT pgqueue.pause_queue('a')")
        a, b = enqueue(pg, queue_name="a"), enqueue(pg, queue_name="b")
        assert claim_ids(pg, worker) == [b]
        pg.execute("SELECT pgqueue.resume_queue('a')")
        assert claim_ids(pg, worker) == [a]

    def test_names_are_validated(self, pg, subtests):
        for function in ("pause_queue", "resume_queue"):
            for name in ("bad name", "a%", "*", "", None, "q" * 65, "caf\u00e9"):
                with subtests.test(function=function, name=name):
                    with pytest.raises(
                        psycopg.errors.InvalidParameterValue,
                        match=f"pgqueue.{function}: queue_name",
                    ):
                        pg.execute(f"SELECT pgqueue.{function}(%s::text)", (name,))
                    assert paused(pg) == {}


class TestPrune:
    def _finished(self, pg, status: str, age: str) -> int:
        job_id = enqueue(pg)
        pg.execute(
            "UPDATE pgqueue_job SET status = %s, finished_at = now() - %s::interval WHERE id = %s",
            (status, age, job_id),
        )
        return job_id

    def test_only_finished_jobs_older_than_the_interval_are_deleted(self, pg, worker):
        old = [self._finished(pg, s, "2 days") for s in ("succeeded", "failed", "cancelled")]
        recent = self._finished(pg, "succeeded", "1 hour")
        running = enqueue(pg)
        claim(pg, worker)
        waiting = enqueue(pg)
        scheduled = scalar(
            pg, "SELECT pgqueue.enqueue('a.b', run_after => now() + interval '1 day')"
        )
        pg.execute(
            "UPDATE pgqueue_job SET enqueued_at = now() - interval '1 year', "
            "last_attempted_at = now() - interval '1 year' WHERE status <> 'succeeded' "
            "AND finished_at IS NULL"
        )
        assert prune(pg, "1 day") == 3
        left = {r[0] for r in pg.execute("SELECT id FROM pgqueue_job").fetchall()}
        assert left == {recent, running, waiting, scheduled}
        assert not left & set(old)
        assert prune(pg, "0 seconds") == 1
        assert {r[0] for r in pg.execute("SELECT id FROM pgqueue_job").fetchall()} == {
            running,
            waiting,
            scheduled,
        }

    def test_max_jobs_deletes_the_oldest_first(self, pg):
        old = self._finished(pg, "cancelled", "3 days")
        self._finished(pg, "succeeded", "5 days")
        self._finished(pg, "failed", "4 days")
        assert prune(pg, "1 day", 2) == 2
        assert [r[0] for r in pg.execute("SELECT id FROM pgqueue_job").fetchall()] == [old]
        assert prune(pg, "1 day", 2) == 1
        assert count_jobs(pg) == 0

    def test_nothing_to_prune_returns_0(self, pg):
        enqueue(pg)
        assert prune(pg, "0 seconds") == 0

    @pytest.mark.parametrize(
        ("older_than", "max_jobs", "message"),
        [
            ("-1 day", None, "older_than must be an interval of zero or more, got -1 days"),
            (None, None, "older_than must be an interval of zero or more, got NULL"),
            ("1 day", 0, "max_jobs must be at least 1 or NULL, got 0"),
            ("1 day", -5, "max_jobs must be at least 1 or NULL, got -5"),
        ],
    )
    def test_bad_arguments_raise_22023_and_delete_nothing(self, pg, older_than, max_jobs, message):
        self._finished(pg, "succeeded", "2 days")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
            prune(pg, older_than, max_jobs)
        assert count_jobs(pg) == 1
