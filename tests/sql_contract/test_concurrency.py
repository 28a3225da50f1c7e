"""Concurrent callers, each on its own connection: no job is claimed twice, unique keys hold, races resolve cleanly."""

import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from tests.sql_contract.conftest import (
    claim_ids,
    complete,
    count_jobs,
    enqueue,
    job,
    register,
    run_in_threads,
    scalar,
    wait_until_blocked,
)


def test_concurrent_claimers_never_share_a_job_and_take_them_all(pg, pg_factory):
    """8 threads, each with its own connection and worker, claim batches in their own transactions."""
    total, batch = 20_000, 50
    assert total == scalar(
        pg,
        "SELECT cardinality(pgqueue.enqueue_many(jsonb_agg(jsonb_build_object("
        "'task_path', 'a.b', 'args', jsonb_build_array(i), 'queue_name', 'q' || i %% 3)))) "
        "FROM generate_series(1, %s) i",
        total,
    )
    connections = [pg_factory() for _ in range(8)]
    workers = [register(conn) for conn in connections]

    def drain(conn: psycopg.Connection, worker: str) -> Callable[[], list[int]]:
        def claim_until_empty() -> list[int]:
            claimed: list[int] = []
            while True:
                with conn.transaction():
                    ids = claim_ids(conn, worker, ("*",), batch)
                if not ids:
                    return claimed
                claimed.extend(ids)

        return claim_until_empty

    started = time.perf_counter()
    per_worker = run_in_threads([drain(c, w) for c, w in zip(connections, workers, strict=True)])
    elapsed = time.perf_counter() - started

    every = [job_id for ids in per_worker for job_id in ids]
    assert len(every) == total, "together they claimed every job"
    assert len(set(every)) == total, "no job was claimed twice"
    assert all(per_worker), "every claimer got some jobs"
    # The database agrees with what each claimer was told.
    stored = dict(
        pg.execute(
            "SELECT worker_id::text, array_agg(id ORDER BY id) FROM pgqueue_job "
            "WHERE status = 'running' AND attempts = 1 GROUP BY worker_id"
        ).fetchall()
    )
    assert stored == {w: sorted(ids) for w, ids in zip(workers, per_worker, strict=True)}
    print(
        f"\nclaim_v1: 8 threads claimed {total:,} jobs in batches of {batch} in {elapsed:.2f} s "
        f"= {total / elapsed:,.0f} jobs/s "
        f"(per thread: {', '.join(str(len(ids)) for ids in per_worker)})"
    )


def test_an_enqueue_waiting_on_a_finishing_holder_creates_a_new_job(pg, pg_factory, worker):
    holder = enqueue(pg, unique_key="k")
    claim_ids(pg, worker)
    finishing = pg_factory(autocommit=False)
    assert complete(finishing, worker, holder, 1) == [holder]
    enqueuer = pg_factory()
    [new] = _enqueue_while(pg, enqueuer, lambda: finishing.commit())
    assert new != holder
    assert job(pg, new)["status"] == "ready"
    assert count_jobs(pg) == 2


def test_an_enqueue_waiting_on_a_holder_whose_finish_rolls_back_returns_the_holder(
    pg, pg_factory, worker
):
    holder = enqueue(pg, unique_key="k")
    claim_ids(pg, worker)
    finishing = pg_factory(autocommit=False)
    complete(finishing, worker, holder, 1)
    enqueuer = pg_factory()
    assert _enqueue_while(pg, enqueuer, lambda: finishing.rollback()) == [holder]
    assert count_jobs(pg) == 1


def test_an_enqueue_waiting_on_an_uncommitted_insert_of_the_same_key(pg, pg_factory):
    first = pg_factory(autocommit=False)
    uncommitted = enqueue(first, unique_key="k")
    enqueuer = pg_factory()
    assert _enqueue_while(pg, enqueuer, lambda: first.commit()) == [uncommitted]
    assert count_jobs(pg) == 1


def _enqueue_while(pg, enqueuer: psycopg.Connection, unblock: Callable[[], None]) -> list[int]:
    """Enqueue with key 'k' on ``enqueuer`` in a thread; once it waits for a lock, ``unblock``."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(enqueue(enqueuer, unique_key="k")))
    thread.start()
    wait_until_blocked(pg, enqueuer)
    unblock()
    thread.join(timeout=10)
    assert not thread.is_alive(), "enqueue did not return once the holder's transaction ended"
    return result


def test_under_repeatable_read_a_key_taken_after_the_snapshot_is_a_serialization_failure(
    pg, pg_factory
):
    """The unique-key loop never spins: a snapshot that cannot see the holder gets 40001 (retry)."""
    conn = pg_factory(autocommit=False)
    conn.execute("SET statement_timeout = '5s'")
    conn.commit()
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert scalar(conn, "SELECT count(*) FROM pgqueue_job") == 0  # takes the snapshot
    holder = enqueue(pg, unique_key="k")
    with pytest.raises(psycopg.errors.SerializationFailure):
        enqueue(conn, unique_key="k")
    conn.rollback()
    assert enqueue(conn, unique_key="k") == holder
    conn.commit()


def test_cancel_waits_for_a_claim_in_progress_and_then_leaves_the_job_running(
    pg, pg_factory, worker
):
    job_id = enqueue(pg)
    claiming = pg_factory(autocommit=False)
    assert claim_ids(claiming, worker) == [job_id]
    canceller = pg_factory()
    result: list[bool] = []
    thread = threading.Thread(
        target=lambda: result.append(scalar(canceller, "SELECT pgqueue.cancel(%s)", job_id))
    )
    thread.start()
    wait_until_blocked(pg, canceller)
    claiming.commit()
    thread.join(timeout=10)
    assert result == [False]
    assert job(pg, job_id)["status"] == "running"


def test_a_claim_skips_a_job_being_cancelled(pg, pg_factory, worker):
    job_id = enqueue(pg)
    cancelling = pg_factory(autocommit=False)
    assert scalar(cancelling, "SELECT pgqueue.cancel(%s)", job_id) is True
    assert claim_ids(pg, worker) == [], "locked by the cancel: skipped, not waited for"
    cancelling.commit()
    assert claim_ids(pg, worker) == []
    assert job(pg, job_id)["status"] == "cancelled"


def test_a_claim_in_progress_is_invisible_to_another_claimer(pg, pg_factory):
    ids = [enqueue(pg) for _ in range(4)]
    first, second = pg_factory(autocommit=False), pg_factory(autocommit=False)
    first_worker, second_worker = register(pg), register(pg)
    assert claim_ids(first, first_worker, limit=2) == ids[:2]
    assert claim_ids(second, second_worker, limit=4) == ids[2:]
    first.rollback()
    assert claim_ids(second, second_worker, limit=4) == ids[:2]
    second.commit()
    assert {str(job(pg, i)["worker_id"]) for i in ids} == {second_worker}
