"""Load: many jobs over several queues and worker processes, each run exactly once (by the ledger)."""

import os
from collections import Counter

import pytest

import pgqueue
from pgqueue.models import Job
from tests.testapp.tasks import ledger_record


def run_load(jobs: int, start_worker, ledger) -> None:
    queues = ["email", "reports", "default", "billing"]
    for start in range(0, jobs, 10_000):
        pgqueue.enqueue_many(
            [
                {"task": ledger_record, "args": [f"job-{i}"], "queue_name": queues[i % 4]}
                for i in range(start, min(start + 10_000, jobs))
            ]
        )
    # 4 workers x 10 runner threads, each with its own ledger connection, stay under max_connections.
    workers = [
        start_worker("--burst", "--concurrency", "10", "--batch-size", "10") for _ in range(4)
    ]
    for worker in workers:
        assert worker.wait(timeout=900) == 0, worker.log
    assert Job.objects.filter(status="succeeded").count() == jobs
    assert not Job.objects.exclude(status="succeeded").exists(), "nothing left ready or running"
    runs = Counter(ledger())
    assert len(runs) == jobs, "every job ran"
    assert set(runs.values()) == {1}, (
        f"jobs ran twice: {[k for k, v in runs.items() if v > 1][:10]}"
    )
    assert set(Job.objects.values_list("attempts", flat=True)) == {1}
    workers_used = {ids[0] for ids in Job.objects.values_list("worker_ids", flat=True)}
    assert len(workers_used) == 4, "all four workers took part"


def test_twenty_thousand_jobs_four_workers(start_worker, ledger):
    run_load(int(os.environ.get("PGQUEUE_LOAD_JOBS", "20000")), start_worker, ledger)


@pytest.mark.load
def test_hundred_thousand_jobs_four_workers(start_worker, ledger):
    run_load(100_000, start_worker, ledger)
