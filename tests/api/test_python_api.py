"""The Python API: validation without side effects, results, operator calls, settings."""

import gc
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.test import override_settings

import pgqueue
from pgqueue.conf import get_settings
from pgqueue.exceptions import InvalidJob, JobNotFound
from pgqueue.models import Job
from tests.testapp.tasks import add, flaky


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: pgqueue.enqueue("nodots"),
            InvalidJob,
            "task_path 'nodots' is not a dotted Python path",
        ),
        (lambda: pgqueue.enqueue(42), TypeError, "task must be a Task or a dotted path"),
        (lambda: pgqueue.enqueue(add, queue_name="a b"), InvalidJob, "queue_name 'a b' is invalid"),
        (lambda: pgqueue.enqueue(add, queue_name="x" * 65), InvalidJob, "queue_name"),
        (
            lambda: pgqueue.enqueue(add, priority=101),
            InvalidJob,
            "priority must be a whole number from -100 to 100",
        ),
        (lambda: pgqueue.enqueue(add, priority=1.5), InvalidJob, "priority"),
        (
            lambda: pgqueue.enqueue(add, max_attempts=0),
            InvalidJob,
            "max_attempts must be a whole number from 1 to 1000000",
        ),
        (
            lambda: pgqueue.enqueue(add, max_attempts=2**40),
            InvalidJob,
            "max_attempts must be a whole number from 1 to 1000000, got 1099511627776",
        ),
        (
            lambda: pgqueue.enqueue(add, run_after=datetime(2030, 1, 1)),
            InvalidJob,
            "aware datetime",
        ),
        (
            lambda: pgqueue.enqueue(add, run_after=timedelta(seconds=-1)),
            InvalidJob,
            "negative delay",
        ),
        (
            lambda: pgqueue.enqueue(add, run_after="soon"),
            InvalidJob,
            "run_after must be a datetime",
        ),
        (lambda: pgqueue.enqueue(add, unique_key=""), InvalidJob, "unique_key"),
        (lambda: pgqueue.enqueue(add, args={"a": 1}), TypeError, "args must be a list or tuple"),
        (lambda: pgqueue.enqueue(add, kwargs=[1]), TypeError, "kwargs must be a dict"),
        (lambda: pgqueue.enqueue(add, [b"bytes"]), TypeError, r"args\[0\] is bytes"),
        (
            lambda: pgqueue.enqueue(add, kwargs={"x": {1: 2}}),
            TypeError,
            r"kwargs\['x'\] has a non-string key 1",
        ),
        (
            lambda: pgqueue.enqueue(add, [1, {"a": [1, float("nan")]}]),
            TypeError,
            r"args\[1\]\['a'\]\[1\] is nan, which JSON cannot represent",
        ),
        (
            lambda: pgqueue.enqueue(add, [1, (2, [3, object()])]),
            TypeError,
            r"args\[1\]\[1\]\[1\] is object .*not JSON-serialisable",
        ),
        (lambda: pgqueue.enqueue(add, ["x" * 1_100_000]), InvalidJob, "over the limit of 1048576"),
        (
            lambda: pgqueue.enqueue_many([{"task": add, "queue": "x"}]),
            InvalidJob,
            r"jobs\[0\] needs 'task'",
        ),
        (lambda: pgqueue.enqueue_many([add]), TypeError, r"jobs\[0\] must be a mapping"),
        (
            lambda: pgqueue.enqueue_many([{"task": add}, {"task": "bad"}]),
            InvalidJob,
            r"jobs\[1\]: task_path",
        ),
    ],
)
def test_bad_input_raises_a_clear_error_and_writes_nothing(transactional_db, call, error, message):
    with transaction.atomic():
        add.enqueue(1, 1)
        with pytest.raises(error, match=message):
            call()
        add.enqueue(2, 2)  # the caller's transaction is still usable
    assert Job.objects.count() == 2


def test_enqueue_returns_a_result_handle(transactional_db):
    result = pgqueue.enqueue(add, [1, 2], queue_name="special-queue", priority=3, max_attempts=4)
    row = Job.objects.get(pk=int(result.id))
    assert (row.task_path, row.args, row.queue_name, row.priority, row.max_attempts) == (
        "tests.testapp.tasks.add",
        [1, 2],
        "special-queue",
        3,
        4,
    )
    assert result.status == TaskResultStatus.READY
    assert result.enqueued_at == row.enqueued_at
    assert result.task is add


def test_task_options_are_stored(transactional_db):
    result = flaky.enqueue(0)
    assert Job.objects.get(pk=int(result.id)).max_attempts == 5
    assert Job.objects.get(pk=int(add.enqueue(1, 1).id)).max_attempts == 3


def test_run_after_as_datetime_and_as_delay_on_the_database_clock(transactional_db):
    at = datetime(2031, 5, 4, 3, 2, 1, tzinfo=UTC)
    assert Job.objects.get(pk=int(pgqueue.enqueue(add, run_after=at).id)).run_after == at
    with transaction.atomic():
        delayed = pgqueue.enqueue(add, run_after=timedelta(minutes=10))
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement_timestamp()")
            db_now = cursor.fetchone()[0]
    row = Job.objects.get(pk=int(delayed.id))
    assert row.status == "scheduled"
    assert timedelta(minutes=9, seconds=59) < row.run_after - db_now <= timedelta(minutes=10)


def test_enqueue_many_returns_results_in_order(transactional_db):
    results = pgqueue.enqueue_many(
        [{"task": add, "args": [i, i]} for i in range(5)]
        + [{"task": "other.tasks.thing", "queue_name": "q"}]
    )
    rows = [Job.objects.get(pk=int(r.id)) for r in results]
    assert [r.args for r in rows[:5]] == [[i, i] for i in range(5)]
    assert rows[5].task_path == "other.tasks.thing" and rows[5].queue_name == "q"
    assert pgqueue.enqueue_many([]) == []


def test_enqueue_many_leaves_the_garbage_collector_as_it_found_it(transactional_db):
    """Batches of 1,000 jobs or more pause the collector; it must always come back."""
    batch = [{"task": add, "args": [i, i]} for i in range(1000)]
    assert gc.isenabled()
    pgqueue.enqueue_many(batch)
    assert gc.isenabled()
    with pytest.raises(InvalidJob):
        pgqueue.enqueue_many([*batch, {"task": add, "priority": 1000}])
    assert gc.isenabled(), "a failed call must resume the collector too"
    gc.disable()
    try:
        pgqueue.enqueue_many(batch)
        assert not gc.isenabled(), "the application turned it off; it stays off"
    finally:
        gc.enable()


def test_concurrent_enqueue_many_calls_leave_the_collector_on(transactional_db):
    errors = []

    def enqueue_batches():
        try:
            for _ in range(3):
                pgqueue.enqueue_many([{"task": add, "args": [i, i]} for i in range(1000)])
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=enqueue_batches) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert gc.isenabled()
    assert Job.objects.count() == 12_000


def test_a_result_handle_shows_what_was_enqueued(transactional_db):
    args, kwargs = [1, (2, 3)], {"n": 1}
    result = pgqueue.enqueue("app.tasks.work", args, kwargs)
    args.append(4)
    kwargs["n"] = 2
    assert (result.args, result.kwargs) == ([1, [2, 3]], {"n": 1}), "JSON form, and a copy"
    flat_args, flat_kwargs = [1, "a"], {"n": 1}
    [bulk] = pgqueue.enqueue_many(
        [{"task": "app.tasks.work", "args": flat_args, "kwargs": flat_kwargs}]
    )
    flat_args.append(2)
    flat_kwargs["n"] = 2
    assert (bulk.args, bulk.kwargs) == ([1, "a"], {"n": 1})


def test_get_result_works_for_any_job(transactional_db):
    unknown = pgqueue.enqueue("billing.tasks.not_installed_here", [1])
    result = pgqueue.get_result(unknown.id)
    assert result.task.module_path == "billing.tasks.not_installed_here"
    assert result.status == TaskResultStatus.READY and result.job_status == "ready"
    assert pgqueue.get_result(int(unknown.id)).id == unknown.id
    for bad in ("nope", "-1", "1.5", "", None):
        with pytest.raises(TaskResultDoesNotExist):
            pgqueue.get_result(bad)
    with pytest.raises(TaskResultDoesNotExist, match="does not exist"):
        pgqueue.get_result("999999999")


def test_operator_calls(transactional_db):
    job_id = int(add.enqueue(1, 1).id)
    assert pgqueue.cancel(job_id) is True
    assert pgqueue.get_result(job_id).status == TaskResultStatus.FAILED
    assert pgqueue.get_result(job_id).job_status == "cancelled"
    assert pgqueue.retry(job_id) is True
    assert pgqueue.get_result(job_id).job_status == "ready"
    pgqueue.pause_queue("default")
    pgqueue.resume_queue("default")
    assert pgqueue.prune(timedelta(days=1)) == 0
    with pytest.raises(InvalidJob):
        pgqueue.pause_queue("bad name")
    with pytest.raises(InvalidJob):
        pgqueue.prune(timedelta(days=-1))
    with pytest.raises(TypeError):
        pgqueue.cancel("1")


def test_an_unknown_job_id_does_not_abort_the_callers_transaction(transactional_db):
    with transaction.atomic():
        with pytest.raises(JobNotFound, match="999999 does not exist"):
            pgqueue.cancel(999_999)
        with pytest.raises(JobNotFound):
            pgqueue.retry(999_999)
        add.enqueue(1, 1)
    assert Job.objects.count() == 1


def test_queues_setting_restricts_the_django_api_only(transactional_db):
    tasks = {
        "default": {"BACKEND": "pgqueue.backend.PgQueueBackend", "QUEUES": ["default", "email"]}
    }
    with override_settings(TASKS=tasks):
        assert task_backends["default"].queues == {"default", "email"}
        with pytest.raises(InvalidTask, match="not valid for backend"):
            add.using(queue_name="elsewhere")
        result = pgqueue.enqueue("tests.testapp.tasks.add", [1, 1], queue_name="elsewhere")
        assert pgqueue.get_result(result.id).task.queue_name == "elsewhere"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"CONCURENCY": 4}, "unknown key(s) 'CONCURENCY'"),
        ({"CONCURRENCY": 0}, "PGQUEUE['CONCURRENCY'] must be a whole number of at least 1"),
        ({"QUEUES": "a b"}, "PGQUEUE['QUEUES'] has an invalid queue selector"),
        ({"HEARTBEAT_INTERVAL": 10, "ORPHAN_AFTER": 20}, "PGQUEUE['ORPHAN_AFTER']"),
        ({"ISOLATION": "fiber"}, "PGQUEUE['ISOLATION'] must be 'thread' or 'process'"),
        ({"DATABASE": "nope"}, "not in DATABASES"),
        ({"ALLOWED_TASKS": "myapp.*"}, "PGQUEUE['ALLOWED_TASKS'] must be a list"),
        ([], "settings.PGQUEUE must be a dict"),
    ],
)
def test_bad_settings_name_the_key(value, message):
    with override_settings(PGQUEUE=value), pytest.raises(ImproperlyConfigured) as info:
        get_settings()
    assert message in str(info.value)


def module_level_function():
    return None


def test_bad_task_options_are_rejected(transactional_db):
    from django.tasks import task

    for options, message in (
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": -1}, "timeout"),
        ({"unique": "yes"}, "unique"),
        ({"queue_name": "bad name"}, "queue_name"),
    ):
        with pytest.raises(InvalidTask, match=message):
            task(**options)(module_level_function)
