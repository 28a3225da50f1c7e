"""An outcome the database refuses for good fails only its own job; the worker goes on.

The values a task can produce are checked before they are stored, so these tests hand
the worker's outcome writer outcomes that skipped that check, as a value the checks
do not foresee would: it must not retry them forever and hold up every other outcome.
"""

import threading

import pytest

import pgqueue
from pgqueue.conf import get_settings
from pgqueue.execution import Outcome
from pgqueue.isolation import RunningJob
from pgqueue.models import Job
from pgqueue.worker import Worker
from tests.testapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("refused", "reason"),
    [("a\x00b", "UntranslatableCharacter"), (object(), "TypeError")],
    ids=["database-refuses", "cannot-serialise"],
)
def test_a_refused_outcome_fails_its_job_and_the_rest_are_stored(refused, reason):
    ids = [int(pgqueue.enqueue(add, [i, 1]).id) for i in range(3)]
    worker = Worker(get_settings().replace(concurrency=3))
    worker.worker_id = worker.driver.register_worker("host", 1, ["*"], 3)
    try:
        claimed = {job.id: job for job in worker.driver.claim(worker.worker_id, ["*"], 3)}
        batch = [
            (
                RunningJob(job=claimed[job_id], worker_id=worker.worker_id),
                Outcome(succeeded=True, result=refused if job_id == ids[1] else job_id),
            )
            for job_id in ids
        ]
        worker._running.update({running.job.id: running for running, _ in batch})

        writer = threading.Thread(target=worker._write_outcomes, args=(batch,), daemon=True)
        writer.start()
        writer.join(timeout=60)
        assert not writer.is_alive(), "the outcome writer is stuck retrying a refused outcome"

        rows = {row.id: row for row in Job.objects.filter(id__in=ids)}
        assert [(rows[i].status, rows[i].result) for i in (ids[0], ids[2])] == [
            ("succeeded", ids[0]),
            ("succeeded", ids[2]),
        ]
        bad = rows[ids[1]]
        assert (bad.status, bad.attempts) == ("failed", 1), "recorded, and not retried"
        assert bad.errors[0]["exception_class_path"] == "pgqueue.exceptions.OutcomeNotStored"
        assert reason in bad.errors[0]["message"]
        assert worker._running == {}, "every slot is free again"
    finally:
        worker.driver.deregister_worker(worker.worker_id)
