"""A job exists, and runs, if and only if the enqueuing transaction commits."""

from django.db import transaction

import pgqueue
from pgqueue.models import Job
from tests.testapp.tasks import add
from tests.worker.conftest import job


def test_rolled_back_enqueue_leaves_nothing_to_run(run_burst):
    with transaction.atomic():
        add.enqueue(1, 2)
        pgqueue.enqueue("tests.testapp.tasks.add", [3, 4])
        transaction.set_rollback(True)
    assert Job.objects.count() == 0
    worker = run_burst()
    assert Job.objects.count() == 0
    assert "job " not in worker.log.replace("jobs", "")


def test_committed_enqueue_runs(run_burst):
    with transaction.atomic():
        by_task = add.enqueue(1, 2)
        by_path = pgqueue.enqueue("tests.testapp.tasks.add", [3, 4])
    run_burst()
    assert (job(by_task.id).result, job(by_path.id).result) == (3, 7)


def test_an_exception_in_the_block_discards_the_job(run_burst):
    try:
        with transaction.atomic():
            add.enqueue(1, 2)
            raise RuntimeError("business logic failed")
    except RuntimeError:
        pass
    assert Job.objects.count() == 0
