"""Django's tasks API works end to end through pgqueue's backend and a real worker."""

import asyncio
from datetime import timedelta

from django.tasks import TaskResultStatus
from django.tasks.signals import task_enqueued

import pgqueue
from tests.testapp.tasks import add, always_fails, async_add, flaky, send_email
from tests.worker.conftest import job


def test_result_of_a_successful_task(run_burst):
    result = add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    run_burst()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.attempts == 1
    assert result.errors == []
    assert result.started_at and result.finished_at and result.enqueued_at
    assert add.get_result(result.id).return_value == 5


def test_errors_carry_exception_class_and_traceback(run_burst):
    result = always_fails.enqueue()
    run_burst()
    wait = 0
    while result.refresh() or result.status != TaskResultStatus.FAILED:
        run_burst()
        wait += 1
        assert wait < 20, "always_fails never ended failed"
    assert result.attempts == 2
    assert [e.exception_class_path for e in result.errors] == ["builtins.ValueError"] * 2
    assert "ValueError: boom" in result.errors[0].traceback
    assert result.errors[0].exception_class is ValueError


def test_using_overrides_priority_queue_and_run_after(run_burst):
    result = add.using(priority=7, queue_name="special", run_after=timedelta(seconds=30)).enqueue(
        1, 1
    )
    row = job(result.id)
    assert (row.priority, row.queue_name, row.status) == (7, "special", "scheduled")
    assert timedelta(seconds=29) < row.run_after - row.enqueued_at <= timedelta(seconds=31)


def test_takes_context_gets_the_attempt(run_burst):
    result = flaky.enqueue(0)
    run_burst()
    assert job(result.id).result == 1


def test_async_task_and_async_api(run_burst):
    result = asyncio.run(async_add.aenqueue(20, 22))
    run_burst()
    fetched = asyncio.run(async_add.aget_result(result.id))
    assert fetched.return_value == 42


def test_task_enqueued_signal_fires(transactional_db):
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append(task_result.id)

    task_enqueued.connect(receiver)
    try:
        result = send_email.enqueue("a@b.c")
    finally:
        task_enqueued.disconnect(receiver)
    assert seen == [result.id]


def test_get_result_of_a_job_enqueued_by_sql(run_burst):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pgqueue.enqueue('tests.testapp.tasks.add', '[1, 2]')")
        job_id = cursor.fetchone()[0]
    run_burst()
    result = pgqueue.get_result(str(job_id))
    assert result.return_value == 3
    assert add.get_result(job_id).return_value == 3
