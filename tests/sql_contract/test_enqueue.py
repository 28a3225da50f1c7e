"""pgqueue.enqueue: what it stores, unique keys, and that every bad argument raises 22023 and inserts nothing."""

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tests.sql_contract.conftest import (
    claim,
    complete,
    count_jobs,
    enqueue,
    fail,
    job,
    run_in_threads,
    scalar,
)


def test_version_is_1(pg):
    assert scalar(pg, "SELECT pgqueue.version()") == 1


def test_named_notation_as_documented(pg):
    job_id = scalar(
        pg,
        "SELECT pgqueue.enqueue('myapp.tasks.send_email', args => '[\"a@example.com\"]', "
        "kwargs => '{\"subject\": \"hi\"}', queue_name => 'email')",
    )
    row = job(pg, job_id)
    assert row["task_path"] == "myapp.tasks.send_email"
    assert row["args"] == ["a@example.com"]
    assert row["kwargs"] == {"subject": "hi"}
    assert row["queue_name"] == "email"
    assert row["status"] == "ready"


def test_defaults(pg):
    with pg.transaction():
        job_id = scalar(pg, "SELECT pgqueue.enqueue('myapp.tasks.work')")
        now = scalar(pg, "SELECT now()")
    row = job(pg, job_id)
    assert row["args"] == []
    assert row["kwargs"] == {}
    assert row["queue_name"] == "default"
    assert row["priority"] == 0
    assert row["max_attempts"] == 3
    assert row["status"] == "ready"
    assert row["attempts"] == 0
    assert row["unique_key"] is None
    assert row["worker_id"] is None
    assert (row["worker_ids"], row["errors"], row["output"], row["result"]) == ([], [], [], None)
    assert (row["started_at"], row["finished_at"]) == (None, None)
    assert row["run_after"] == row["enqueued_at"] == now, "database clock, at the enqueue"


def test_every_parameter_is_stored(pg):
    job_id = enqueue(
        pg,
        "myapp.tasks.report",
        args="[1, 2]",
        kwargs='{"fmt": "pdf"}',
        queue_name="reports:daily_v1.x-y",
        priority=-100,
        max_attempts=7,
        unique_key="report-1",
    )
    row = job(pg, job_id)
    assert row["args"] == [1, 2]
    assert row["kwargs"] == {"fmt": "pdf"}
    assert row["queue_name"] == "reports:daily_v1.x-y"
    assert (row["priority"], row["max_attempts"], row["unique_key"]) == (-100, 7, "report-1")


def test_positional_notation_is_the_same_call(pg):
    job_id = scalar(
        pg, "SELECT pgqueue.enqueue('a.b', '[1]', '{}', 'positional', 5, NULL, 2, 'pos-1')"
    )
    row = job(pg, job_id)
    assert (row["queue_name"], row["priority"], row["max_attempts"], row["unique_key"]) == (
        "positional",
        5,
        2,
        "pos-1",
    )


def test_future_run_after_makes_the_job_scheduled_and_a_past_one_ready(pg):
    future = scalar(pg, "SELECT pgqueue.enqueue('a.b', run_after => now() + interval '1 hour')")
    past = scalar(pg, "SELECT pgqueue.enqueue('a.b', run_after => now() - interval '1 hour')")
    explicit_null = enqueue(pg, run_after=None)
    assert job(pg, future)["status"] == "scheduled"
    assert job(pg, past)["status"] == "ready"
    assert job(pg, explicit_null)["status"] == "ready"
    row = job(pg, future)
    assert row["run_after"] - row["enqueued_at"] == timedelta(hours=1)


BAD_ARGUMENTS = [
    # task_path: a dotted Python path, each part an ASCII identifier, at most 255 characters.
    ({"task_path": None}, "task_path NULL"),
    ({"task_path": ""}, "task_path '' is not a dotted Python path"),
    ({"task_path": "nodots"}, "task_path 'nodots'"),
    ({"task_path": "a..b"}, "task_path"),
    ({"task_path": ".a.b"}, "task_path"),
    ({"task_path": "a.b."}, "task_path"),
    ({"task_path": "a.1b"}, "task_path"),
    ({"task_path": "a.b-c"}, "task_path"),
    ({"task_path": "a.b c"}, "task_path"),
    ({"task_path": "a.b\n"}, "task_path"),
    ({"task_path": "caf\u00e9.tasks"}, "task_path"),
    ({"task_path": "a.b; DROP TABLE pgqueue_job"}, "task_path"),
    ({"task_path": "a." + "b" * 254}, "task_path"),
    # args: a JSON array; kwargs: a JSON object.
    ({"args": '{"a": 1}'}, "args must be a JSON array, got object"),
    ({"args": "null"}, "args must be a JSON array, got null"),
    ({"args": "1"}, "args must be a JSON array, got number"),
    ({"args": '"x"'}, "args must be a JSON array, got string"),
    ({"args": None}, "args must be a JSON array, got NULL"),
    ({"kwargs": "[]"}, "kwargs must be a JSON object, got array"),
    ({"kwargs": "null"}, "kwargs must be a JSON object, got null"),
    ({"kwargs": "true"}, "kwargs must be a JSON object, got boolean"),
    ({"kwargs": None}, "kwargs must be a JSON object, got NULL"),
    # args and kwargs together: at most 1 MiB of JSON text.
    ({"args": '["' + "x" * 1_048_571 + '"]'}, "args and kwargs together are 1048577 bytes"),
    (
        {"args": '["' + "x" * 600_000 + '"]', "kwargs": '{"k": "' + "y" * 600_000 + '"}'},
        "over the limit of 1048576",
    ),
    # queue_name: 1 to 64 ASCII letters, digits, _ - . :
    ({"queue_name": "it's"}, "queue_name 'it''s' is invalid"),
    ({"queue_name": 'say"hi'}, "queue_name"),
    ({"queue_name": "a;b"}, "queue_name"),
    ({"queue_name": "x'; DROP TABLE pgqueue_job; --"}, "queue_name"),
    ({"queue_name": "50%"}, "queue_name"),
    ({"queue_name": "two words"}, "queue_name"),
    ({"queue_name": " email"}, "queue_name"),
    ({"queue_name": "email\n"}, "queue_name"),
    ({"queue_name": ""}, "queue_name '' is invalid"),
    ({"queue_name": "q" * 65}, "queue_name"),
    ({"queue_name": "caf\u00e9"}, "queue_name"),
    ({"queue_name": "\u0435mail"}, "queue_name"),  # Cyrillic small letter ie, not e
    ({"queue_name": "*"}, "queue_name"),
    ({"queue_name": "rep*"}, "queue_name"),
    ({"queue_name": "a/b"}, "queue_name"),
    ({"queue_name": None}, "queue_name NULL is invalid"),
    # priority: -100 to 100.
    ({"priority": 101}, "priority must be a whole number from -100 to 100, got 101"),
    ({"priority": -101}, "priority must be a whole number from -100 to 100, got -101"),
    ({"priority": 32768}, "priority"),
    ({"priority": None}, "priority must be a whole number from -100 to 100, got NULL"),
    # max_attempts: 1 to 1000000 (NULL means the default).
    ({"max_attempts": 0}, "max_attempts must be from 1 to 1000000, got 0"),
    ({"max_attempts": -1}, "max_attempts must be from 1 to 1000000, got -1"),
    ({"max_attempts": 1000001}, "max_attempts must be from 1 to 1000000, got 1000001"),
    # run_after: finite.
    ({"run_after": "infinity"}, "run_after must be a finite timestamp"),
    ({"run_after": "-infinity"}, "run_after must be a finite timestamp"),
    # unique_key: NULL or 1 to 255 characters.
    ({"unique_key": ""}, "unique_key must be 1 to 255 characters, got 0"),
    ({"unique_key": "k" * 256}, "unique_key must be 1 to 255 characters, got 256"),
]


def _split(arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    arguments = dict(arguments)
    return arguments.pop("task_path", "app.tasks.work"), arguments


def test_every_bad_argument_raises_22023_naming_it_and_inserts_nothing(pg, subtests):
    for arguments, message in BAD_ARGUMENTS:
        with subtests.test(arguments=repr(arguments)[:70]):
            task_path, named = _split(arguments)
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=message) as info:
                enqueue(pg, task_path, **named)
            assert info.value.sqlstate == "22023"
            assert str(info.value).startswith("pgqueue.enqueue: ")
            assert count_jobs(pg) == 0


def test_a_rejected_call_inside_a_transaction_leaves_nothing(pg_factory):
    conn = pg_factory(autocommit=False)
    enqueue(conn, queue_name="fine")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        enqueue(conn, queue_name="no such name")
    conn.rollback()
    assert count_jobs(pg_factory()) == 0


LEGAL_QUEUE_NAMES = ["a", "q" * 64, "email_high", "a-b.c:d", "UPPER_lower-09", "_", "-", ".", ":"]


def test_legal_queue_names_are_accepted_as_given(pg, subtests):
    for name in LEGAL_QUEUE_NAMES:
        with subtests.test(name=name):
            assert job(pg, enqueue(pg, queue_name=name))["queue_name"] == name
    assert count_jobs(pg) == len(LEGAL_QUEUE_NAMES)


VALUES_AT_THE_LIMITS = [
    {"task_path": "a." + "b" * 253},  # 255 characters
    {"task_path": "_private._x1.B2"},
    {"priority": 100},
    {"priority": -100},
    {"max_attempts": 1},
    {"max_attempts": 1_000_000},
    {"unique_key": "k"},
    {"unique_key": "k" * 255},
    {"unique_key": "caf\u00e9 \u2603 any text; at all"},
    {"args": '["' + "x" * 1_048_570 + '"]'},  # exactly 1 MiB of JSON with kwargs '{}'
]


def test_values_at_the_limits_are_accepted_and_stored(pg, subtests):
    for arguments in VALUES_AT_THE_LIMITS:
        with subtests.test(arguments=repr(arguments)[:70]):
            task_path, named = _split(arguments)
            row = job(pg, enqueue(pg, task_path, **named))
            assert row["task_path"] == task_path
            for name, value in named.items():
                assert row[name] == (json.loads(value) if name == "args" else value), name
    assert count_jobs(pg) == len(VALUES_AT_THE_LIMITS)


def test_rolled_back_enqueue_leaves_nothing(pg_factory):
    conn = pg_factory(autocommit=False)
    enqueue(conn)
    enqueue(conn, unique_key="rolled-back")
    conn.rollback()
    check = pg_factory()
    assert count_jobs(check) == 0
    assert job(check, enqueue(check, unique_key="rolled-back"))["unique_key"] == "rolled-back"


class TestUniqueKey:
    def test_returns_the_scheduled_job(self, pg):
        first = scalar(
            pg,
            "SELECT pgqueue.enqueue('a.b', '[1]', unique_key => 'k', run_after => now() + interval '1 day')",
        )
        assert job(pg, first)["status"] == "scheduled"
        assert enqueue(pg, "a.other", args="[2]", unique_key="k") == first
        row = job(pg, first)
        assert (row["task_path"], row["args"]) == ("a.b", [1]), "the holder is left as it was"
        assert count_jobs(pg) == 1

    def test_returns_the_ready_job(self, pg):
        first = enqueue(pg, unique_key="k")
        assert enqueue(pg, unique_key="k") == first
        assert enqueue(pg, unique_key="other") != first
        assert count_jobs(pg) == 2

    def test_returns_the_running_job(self, pg, worker):
        first = enqueue(pg, unique_key="k")
        claim(pg, worker)
        assert job(pg, first)["status"] == "running"
        assert enqueue(pg, unique_key="k") == first
        assert count_jobs(pg) == 1

    @pytest.mark.parametrize("ending", ["succeeded", "failed", "cancelled"])
    def test_a_new_job_once_the_holder_finished(self, pg, worker, ending):
        first = enqueue(pg, unique_key="k")
        if ending == "cancelled":
            assert scalar(pg, "SELECT pgqueue.cancel(%s)", first) is True
        else:
            claim(pg, worker)
            if ending == "succeeded":
                assert complete(pg, worker, first, 1) == [first]
            else:
                assert fail(pg, worker, first, 1, retry=False) == "failed"
        assert job(pg, first)["status"] == ending
        second = enqueue(pg, unique_key="k")
        assert second != first
        assert job(pg, second)["status"] == "ready"
        assert enqueue(pg, unique_key="k") == second
        assert count_jobs(pg) == 2

    def test_a_retrying_job_still_holds_its_key(self, pg, worker):
        first = enqueue(pg, unique_key="k")
        claim(pg, worker)
        assert fail(pg, worker, first, 1) == "scheduled"
        assert enqueue(pg, unique_key="k") == first


def test_unique_key_is_safe_under_concurrent_callers(pg, pg_factory):
    """8 threads, each on its own connection and committing, enqueue one key at once: one job."""
    connections = [pg_factory(autocommit=False) for _ in range(8)]
    for round_ in range(5):
        key = f"same-{round_}"

        def enqueue_and_commit(conn: psycopg.Connection, key: str = key) -> Callable[[], int]:
            def call() -> int:
                job_id = enqueue(conn, unique_key=key)
                conn.commit()
                return job_id

            return call

        ids = run_in_threads([enqueue_and_commit(c) for c in connections])
        assert len(set(ids)) == 1, f"round {round_}: {ids}"
        assert job(pg, ids[0])["unique_key"] == key
        assert count_jobs(pg) == round_ + 1
