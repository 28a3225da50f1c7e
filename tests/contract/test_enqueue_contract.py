"""Enqueueing, specified once and run on PostgreSQL and SQLite: defaults, validation, unique keys."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django.tasks import TaskResultStatus
from django.utils import timezone

import pgqueue
from pgqueue.exceptions import InvalidJob
from tests.contract.support import claim_one, enqueue, register
from tests.testapp.tasks import add, always_fails, send_email, unique_add

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "sqlite"])


def test_enqueue_defaults(alias, jobs):
    before = timezone.now()
    result = pgqueue.enqueue("app.tasks.work", [1])
    row = jobs.get(pk=int(result.id))
    assert (row.task_path, row.args, row.kwargs) == ("app.tasks.work", [1], {})
    assert (row.status, row.queue_name, row.priority, row.max_attempts) == (
        "ready",
        "default",
        0,
        3,
    )
    assert (row.attempts, row.worker_id, row.worker_ids, row.errors, row.output) == (
        0,
        None,
        [],
        [],
        [],
    )
    assert (row.result, row.unique_key, row.started_at, row.finished_at) == (None, None, None, None)
    assert before - timedelta(seconds=5) <= row.enqueued_at <= timezone.now() + timedelta(seconds=5)
    assert row.run_after >= row.enqueued_at
    assert result.enqueued_at == row.enqueued_at
    assert (result.status, result.job_status, result.max_attempts) == (
        TaskResultStatus.READY,
        "ready",
        3,
    )


def test_run_after_as_a_time_or_a_delay(alias, jobs):
    later = datetime(2999, 1, 1, tzinfo=UTC)
    earlier = datetime(2000, 1, 1, tzinfo=UTC)
    row = jobs.get(pk=enqueue(run_after=later))
    assert (row.status, row.run_after) == ("scheduled", later)
    row = jobs.get(pk=enqueue(run_after=earlier))
    assert (row.status, row.run_after) == ("ready", earlier)
    before = timezone.now()
    row = jobs.get(pk=enqueue(run_after=timedelta(hours=1)))
    assert row.status == "scheduled"
    assert before + timedelta(minutes=59) < row.run_after < before + timedelta(minutes=61)


BAD_INPUT = [
    (
        {"task": "nodots"},
        InvalidJob,
        "pgqueue.enqueue: task_path 'nodots' is not a dotted Python path such as "
        "'myapp.tasks.send_email' (at most 255 characters)",
    ),
    ({"args": {"a": 1}}, TypeError, "pgqueue.enqueue: args must be a list or tuple, got dict"),
    ({"kwargs": [1]}, TypeError, "pgqueue.enqueue: kwargs must be a dict, got list"),
    ({"args": [b"x"]}, TypeError, "args[0] is bytes b'x', which is not JSON-serialisable"),
    ({"args": [float("nan")]}, TypeError, "args[0] is nan, which JSON cannot represent"),
    ({"kwargs": {"k": {1: 2}}}, TypeError, "kwargs['k'] has a non-string key 1"),
    (
        {"queue_name": "a%b"},
        InvalidJob,
        "pgqueue.enqueue: queue_name 'a%b' is invalid: a queue name is 1 to 64 ASCII letters, "
        "digits or the characters _ - . :",
    ),
    ({"queue_name": "x" * 65}, InvalidJob, "pgqueue.enqueue: queue_name 'xxx"),
    (
        {"priority": 101},
        InvalidJob,
        "pgqueue.enqueue: priority must be a whole number from -100 to 100, got 101",
    ),
    (
        {"priority": 1.5},
        InvalidJob,
        "pgqueue.enqueue: priority must be a whole number from -100 to 100, got 1.5",
    ),
    (
        {"max_attempts": 0},
        InvalidJob,
        "pgqueue.enqueue: max_attempts must be a whole number from 1 to 1000000, got 0",
    ),
    (
        {"run_after": datetime(2030, 1, 1)},
        InvalidJob,
        "pgqueue.enqueue: run_after must be an aware datetime",
    ),
    (
        {"run_after": timedelta(seconds=-1)},
        InvalidJob,
        "pgqueue.enqueue: run_after must not be a negative delay",
    ),
    (
        {"unique_key": ""},
        InvalidJob,
        "pgqueue.enqueue: unique_key must be a string of 1 to 255 characters of valid text "
        "without NUL, got ''",
    ),
    (
        {"unique_key": "a\x00"},
        InvalidJob,
        "pgqueue.enqueue: unique_key must be a string of 1 to 255 characters of valid text "
        "without NUL, got 'a\\x00'",
    ),
    (
        {"args": ["ok", "a\x00b"]},
        TypeError,
        "args[1] contains a NUL character (\\u0000), which PostgreSQL cannot store",
    ),
    (
        {"args": [["\ud800"]]},
        TypeError,
        "args[0][0] contains an unpaired surrogate (\\ud800), which is not valid Unicode text",
    ),
    (
        {"kwargs": {"k": [{"k\x00": 1}]}},
        TypeError,
        "kwargs['k'][0] has a key 'k\\x00' that contains a NUL character",
    ),
    (
        {"args": ["x" * 1_048_576]},
        InvalidJob,
        "pgqueue.enqueue: args and kwargs together are 1048582 bytes of JSON, over the limit "
        "of 1048576",
    ),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD_INPUT)
def test_bad_input_is_rejected_the_same_way(alias, jobs, options, error, message):
    options = {"task": "app.tasks.work", **options}
    with transaction.atomic(using=alias):
        enqueue()
        with pytest.raises(error) as info:
            enqueue(**options)
        enqueue()  # the caller's transaction is still usable
    assert str(info.value).startswith(message)
    assert jobs.count() == 2


def test_enqueue_many_names_the_bad_job_and_writes_nothing(alias, jobs):
    with pytest.raises(InvalidJob) as info:
        pgqueue.enqueue_many([{"task": "a.b"}, {"task": "a.b", "priority": -101}])
    assert str(info.value) == (
        "pgqueue.enqueue_many: jobs[1]: priority must be a whole number from -100 to 100, got -101"
    )
    assert jobs.count() == 0


def test_the_payload_limit_counts_json_as_the_database_prints_it(alias, jobs):
    """1 MiB of jsonb text, with its spaces: 400,000 zeros are 0.8 MB compact but 1.2 MB."""
    with pytest.raises(InvalidJob, match="are 1200002 bytes of JSON, over the limit of 1048576"):
        enqueue(args=[0] * 400_000)
    enqueue(args=[0] * 349_000)  # 1,047,002 bytes as jsonb text
    assert jobs.count() == 1


def test_arguments_come_back_as_stored(alias, driver, jobs):
    args = [2**70, 1.5, -0.25, 'é\n"\\', None, True, {"k": [1, {}]}, [], [[]], "[]", "{}"]
    kwargs = {"nested": {"list": [1, 2], "empty": {}}, "text": "\u2603", "{}": {}}
    job_id = enqueue(args=args, kwargs=kwargs)
    row = jobs.get(pk=job_id)
    assert (row.args, row.kwargs) == (args, kwargs)
    result = pgqueue.get_result(job_id)
    assert (result.args, result.kwargs) == (args, kwargs)
    claimed = claim_one(driver, register(driver))
    assert (claimed.args, claimed.kwargs) == (args, kwargs)


def test_rolled_back_enqueues_leave_nothing_and_committed_ones_stay(alias, jobs):
    with transaction.atomic(using=alias):
        enqueue()
        pgqueue.enqueue_many([{"task": "a.b"}, {"task": "a.b", "unique_key": "k"}])
        add.enqueue(1, 2)
        transaction.set_rollback(True, using=alias)
    assert jobs.count() == 0
    with transaction.atomic(using=alias):
        enqueue()
        add.enqueue(1, 2)
    assert jobs.count() == 2


def test_a_unique_key_is_held_while_its_job_waits_or_runs(alias, driver, jobs):
    first = enqueue(unique_key="k")
    assert enqueue(unique_key="k") == first
    assert enqueue("other.task.path", unique_key="k", priority=9) == first, "the key alone counts"
    worker = register(driver)
    claim_one(driver, worker)
    assert enqueue(unique_key="k") == first, "a running job still holds its key"
    driver.complete(worker, [(first, 1, None)])
    second = enqueue(unique_key="k")
    assert second != first, "a finished job holds no key"
    assert pgqueue.cancel(second) is True
    third = enqueue(unique_key="k")
    assert third not in (first, second), "nor does a cancelled one"
    scheduled = enqueue(unique_key="later", run_after=timedelta(hours=1))
    assert enqueue(unique_key="later") == scheduled, "a scheduled job holds its key"
    assert jobs.count() == 4


def test_enqueue_many_keeps_input_order_and_dedupes_within_the_batch(alias, jobs):
    held = enqueue(unique_key="held")
    results = pgqueue.enqueue_many(
        [
            {"task": "a.b", "args": [0]},
            {"task": "a.b", "unique_key": "held"},
            {"task": "a.b", "unique_key": "new"},
            {"task": "a.b", "args": [3]},
            {"task": "a.b", "unique_key": "new"},
            {"task": "a.b", "args": [5], "queue_name": "q", "priority": 7, "max_attempts": 9},
        ]
    )
    ids = [int(r.id) for r in results]
    assert ids[1] == held and ids[2] == ids[4] and len(set(ids)) == 5
    assert jobs.get(pk=ids[0]).args == [0] and jobs.get(pk=ids[3]).args == [3]
    row = jobs.get(pk=ids[5])
    assert (row.args, row.queue_name, row.priority, row.max_attempts) == ([5], "q", 7, 9)
    assert pgqueue.enqueue_many([]) == []
    assert jobs.count() == 5


def test_the_django_tasks_api(alias, driver, jobs):
    result = send_email.enqueue("ann@example.com")
    row = jobs.get(pk=int(result.id))
    assert (row.task_path, row.queue_name, row.priority, row.args) == (
        "tests.testapp.tasks.send_email",
        "email",
        5,
        ["ann@example.com"],
    )
    assert jobs.get(pk=int(always_fails.enqueue().id)).max_attempts == 2
    assert unique_add.enqueue(1, 2).id == unique_add.enqueue(1, 2).id != unique_add.enqueue(2, 1).id
    summed = add.enqueue(1, 2)
    assert add.get_result(summed.id).status == TaskResultStatus.READY
    worker = register(driver)
    claimed = {j.id: j for j in driver.claim(worker, ["*"], 10)}
    assert claimed[int(summed.id)].task_path == "tests.testapp.tasks.add"
    driver.complete(worker, [(int(summed.id), 1, 3)])
    summed.refresh()
    assert (summed.status, summed.return_value, summed.worker_ids) == (
        TaskResultStatus.SUCCESSFUL,
        3,
        [worker],
    )
    assert add.get_result(summed.id).return_value == 3


def test_get_result_of_an_unknown_task(alias, driver):
    job_id = enqueue("elsewhere.tasks.thing", args=[1], kwargs={"a": 2})
    result = pgqueue.get_result(job_id)
    assert result.task.module_path == "elsewhere.tasks.thing"
    assert (result.args, result.kwargs, result.job_status) == ([1], {"a": 2}, "ready")
    assert pgqueue.get_result(str(job_id)).id == str(job_id)
