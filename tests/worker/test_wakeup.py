"""NOTIFY wakes an idle worker long before its poll interval; polling alone still gets every job."""

import time

from tests.testapp.tasks import add
from tests.worker.conftest import job, status, wait_for


def _latency(result) -> float:
    row = job(result.id)
    return (row.started_at - row.enqueued_at).total_seconds()


def test_notify_wakes_an_idle_worker_well_before_the_poll_interval(start_worker):
    worker = start_worker("--poll-interval", "30", fast=False)
    wait_for(lambda: "started in" in worker.log, what="the worker to start", worker=worker)
    time.sleep(0.3)  # let the listener's first poll pass, so the next job needs a notification
    latencies = []
    for i in range(5):
        result = add.enqueue(i, i)
        wait_for(
            lambda r=result: status(r.id) == "succeeded",
            timeout=10,
            what="a woken job",
            worker=worker,
        )
        latencies.append(_latency(result))
    print(f"\nNOTIFY wake-up latencies (s): {[round(x, 4) for x in latencies]}")
    assert max(latencies) < 5, "a job waited for polling: the worker was not woken by NOTIFY"


def test_polling_alone_picks_up_jobs(start_worker):
    worker = start_worker("--no-listen", "--poll-interval", "0.3", fast=False)
    wait_for(lambda: "started in" in worker.log, what="the worker to start", worker=worker)
    latencies = []
    for i in range(3):
        result = add.enqueue(i, i)
        wait_for(
            lambda r=result: status(r.id) == "succeeded",
            timeout=10,
            what="a polled job",
            worker=worker,
        )
        latencies.append(_latency(result))
    print(f"\npolling latencies (s): {[round(x, 4) for x in latencies]}")
