"""A worker keeps the job table small and clean: it prunes finished jobs and vacuums away
the dead rows that claims would otherwise have to step over."""

from django.db import connection

from pgqueue.models import Job
from tests.testapp.tasks import add
from tests.worker.conftest import status, wait_for


def _vacuum_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'pgqueue_job'::regclass"
        )
        return cursor.fetchone()[0]


def test_finished_jobs_are_pruned_and_the_job_table_vacuumed(start_worker):
    before = _vacuum_count()
    ids = [add.enqueue(i, i).id for i in range(300)]
    worker = start_worker("--prune-after", "0", "--vacuum-threshold", "100")
    wait_for(
        lambda: not Job.objects.exists(), what="every finished job to be pruned", worker=worker
    )
    wait_for(
        lambda: "vacuumed the job table" in worker.log and _vacuum_count() > before,
        what="a vacuum of the job table",
        worker=worker,
    )
    assert "pruned" in worker.log
    assert not Job.objects.filter(pk__in=ids).exists()


def test_without_prune_after_finished_jobs_stay_and_a_zero_threshold_never_vacuums(
    start_worker,
):
    ids = [add.enqueue(i, i).id for i in range(300)]
    worker = start_worker("--vacuum-threshold", "0")
    wait_for(
        lambda: all(status(i) == "succeeded" for i in ids), what="the jobs to run", worker=worker
    )
    worker.signal(15)
    assert worker.wait() == 0
    assert Job.objects.count() == 300
    assert "vacuumed" not in worker.log and "pruned" not in worker.log
