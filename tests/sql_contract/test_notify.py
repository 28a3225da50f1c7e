"""NOTIFY: channel pgqueue_v1, the queue name as payload, delivered only at commit, one per queue."""

import psycopg
import pytest

from tests.sql_contract.conftest import (
    claim,
    enqueue,
    enqueue_many,
    fail,
    make_stale,
    reap,
    register,
    release,
    scalar,
)

#: How long a test listens to show that nothing (more) arrives.
QUIET = 0.3


@pytest.fixture
def listen(pg_factory):
    """A connection listening on pgqueue_v1, as a worker's listener does."""
    conn = pg_factory()
    conn.execute("LISTEN pgqueue_v1")
    return conn


def received(conn: psycopg.Connection, timeout: float = QUIET) -> list[tuple[str, str]]:
    """Every notification that arrives within ``timeout`` seconds, as (channel, payload)."""
    return [(n.channel, n.payload) for n in conn.notifies(timeout=timeout)]


def notifications(
    conn: psycopg.Connection, expected: int, timeout: float = 5.0
) -> list[tuple[str, str]]:
    """Wait up to ``timeout`` s for ``expected`` notifications; return them and any that follow."""
    got = [(n.channel, n.payload) for n in conn.notifies(timeout=timeout, stop_after=expected)]
    return got + received(conn)


def test_notification_arrives_only_after_commit(listen, pg_factory):
    writer = pg_factory(autocommit=False)
    enqueue(writer, queue_name="email")
    assert received(listen) == [], "nothing may arrive while the transaction is open"
    writer.commit()
    assert notifications(listen, 1) == [("pgqueue_v1", "email")], "exactly one notification"


def test_rolled_back_enqueue_notifies_nobody_and_leaves_no_job(listen, pg_factory):
    writer = pg_factory(autocommit=False)
    enqueue(writer, queue_name="email")
    enqueue_many(writer, [{"task_path": "a.b", "queue_name": "other"}])
    writer.rollback()
    assert received(listen) == []
    assert scalar(pg_factory(), "SELECT count(*) FROM pgqueue_job") == 0


def test_autocommit_enqueue_notifies_with_the_queue_name(listen, pg):
    enqueue(pg, queue_name="reports:daily")
    enqueue(pg)
    assert notifications(listen, 2) == [("pgqueue_v1", "reports:daily"), ("pgqueue_v1", "default")]


def test_a_scheduled_job_notifies_too(listen, pg):
    scalar(pg, "SELECT pgqueue.enqueue('a.b', run_after => now() + interval '1 day')")
    assert notifications(listen, 1) == [("pgqueue_v1", "default")]


def test_one_notification_per_queue_per_transaction(listen, pg_factory):
    writer = pg_factory(autocommit=False)
    jobs = [{"task_path": "a.b", "queue_name": "q1" if i % 2 else "q2"} for i in range(1000)]
    assert len(enqueue_many(writer, jobs)) == 1000
    writer.commit()
    assert sorted(notifications(listen, 2)) == [("pgqueue_v1", "q1"), ("pgqueue_v1", "q2")]


def test_many_calls_in_one_transaction_still_notify_once_per_queue(listen, pg_factory):
    writer = pg_factory(autocommit=False)
    for _ in range(50):
        enqueue(writer, queue_name="q1")
    enqueue_many(writer, [{"task_path": "a.b", "queue_name": "q1"}] * 100)
    writer.commit()
    assert notifications(listen, 1) == [("pgqueue_v1", "q1")]


def test_rejected_input_sends_no_notification(listen, pg):
    for bad in ("queue_name => 'no spaces'", "args => '{}'", "priority => 1000"):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            pg.execute(f"SELECT pgqueue.enqueue('a.b', {bad})")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        enqueue_many(pg, [{"task_path": "a.b", "queue_name": "good"}, {"task_path": "bad"}])
    assert received(listen) == []


def test_resume_notifies_the_queue(listen, pg):
    pg.execute("SELECT pgqueue.pause_queue('mail')")
    assert received(listen) == [], "pausing wakes nobody"
    pg.execute("SELECT pgqueue.resume_queue('mail')")
    assert notifications(listen, 1) == [("pgqueue_v1", "mail")]


def test_jobs_given_back_notify_their_queue(listen, pg):
    """release_v1, reap_v1 and retry make jobs ready again: a sleeping worker must hear of it."""
    released, reaped, retried = (enqueue(pg, queue_name=q) for q in ("rel", "reap", "retry"))
    assert notifications(listen, 3) == [
        ("pgqueue_v1", "rel"),
        ("pgqueue_v1", "reap"),
        ("pgqueue_v1", "retry"),
    ]

    worker = register(pg)
    claim(pg, worker, ("rel",))
    assert release(pg, worker, released, 1) == [released]
    assert notifications(listen, 1) == [("pgqueue_v1", "rel")]

    claim(pg, worker, ("rel", "reap"))
    make_stale(pg, worker, reaped, released)
    assert reap(pg) == 2
    assert sorted(notifications(listen, 2)) == [("pgqueue_v1", "reap"), ("pgqueue_v1", "rel")]

    other = register(pg)
    claim(pg, other, ("retry",))
    assert fail(pg, other, retried, 1, retry=False) == "failed"
    assert received(listen) == [], "a job that ends wakes nobody"
    assert scalar(pg, "SELECT pgqueue.retry(%s)", retried) is True
    assert notifications(listen, 1) == [("pgqueue_v1", "retry")]
