"""The worker's options: --burst, --max-jobs, --queues, --concurrency, --no-listen, and bad values."""

import subprocess
import sys

import pytest

import pgqueue
from pgqueue.models import Job
from tests.testapp.tasks import add, sleepy
from tests.worker.conftest import job, status, wait_for


def test_burst_exits_zero_when_idle(run_burst):
    worker = run_burst()
    assert "nothing ready: burst done" in worker.log


def test_max_jobs_claims_that_many_and_exits(start_worker):
    ids = [add.enqueue(i, i).id for i in range(5)]
    worker = start_worker("--max-jobs", "2", "--concurrency", "1")
    assert worker.wait() == 0
    assert sorted(status(i) for i in ids) == ["ready"] * 3 + ["succeeded"] * 2


def test_queue_selectors_pick_queues_in_order(run_burst):
    email = pgqueue.enqueue(add, [1, 1], queue_name="email")
    report = pgqueue.enqueue(add, [1, 1], queue_name="reports-daily")
    other = pgqueue.enqueue(add, [1, 1], queue_name="other")
    run_burst("--queues", "email,reports*")
    assert (status(email.id), status(report.id), status(other.id)) == (
        "succeeded",
        "succeeded",
        "ready",
    )


def test_concurrency_runs_jobs_at_the_same_time(run_burst):
    ids = [sleepy.enqueue(0.5).id for _ in range(4)]
    run_burst("--concurrency", "4")
    jobs = [job(i) for i in ids]
    latest_start = max(j.started_at for j in jobs)
    earliest_finish = min(j.finished_at for j in jobs)
    assert latest_start < earliest_finish, "the four jobs did not overlap"
    assert len({j.worker_ids[0] for j in jobs}) == 1


def test_no_listen_still_processes_everything(run_burst):
    ids = [add.enqueue(i, 1).id for i in range(20)]
    worker = run_burst("--no-listen")
    assert all(status(i) == "succeeded" for i in ids)
    assert "listen=False" in worker.log


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--heartbeat-interval", "5", "--orphan-after", "10"],
            "--orphan-after (10s) must be at least three heartbeat intervals (--heartbeat-interval is 5s)",
        ),
        (["--queues", "bad name"], "--queues has an invalid queue selector 'bad name'"),
        (["--queues", "a%"], "--queues has an invalid queue selector 'a%'"),
        (["--concurrency", "0"], "--concurrency must be a whole number of at least 1"),
        (["--poll-interval", "-1"], "--poll-interval must be positive"),
        (["--batch-size", "5000"], "--batch-size must be at most 1000"),
        (["--poll-interval", "soon"], "--poll-interval: 'soon' is not a number of seconds"),
        (["--vacuum-threshold", "-1"], "--vacuum-threshold must be a whole number of dead rows"),
        (["--prune-after", "-5"], "--prune-after must"),
    ],
)
def test_bad_options_are_rejected_before_anything_is_claimed(worker_env, args, message):
    job_id = add.enqueue(1, 1).id
    done = subprocess.run(
        [sys.executable, "-m", "django", "pgqueue_worker", "--burst", *args],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert message in done.stderr
    assert status(job_id) == "ready"
    assert Job.objects.count() == 1


def test_running_worker_picks_up_new_jobs(start_worker):
    worker = start_worker()
    result = add.enqueue(40, 2)
    wait_for(lambda: status(result.id) == "succeeded", what="the job to run", worker=worker)
