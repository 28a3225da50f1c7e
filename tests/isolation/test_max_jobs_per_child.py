"""max_jobs_per_child: a child process is replaced after it ran that many jobs."""

import subprocess
import sys

import pytest

from pgqueue.conf import SettingError, WorkerSettings
from tests.isolation import jobs
from tests.isolation.conftest import job


def test_each_child_runs_at_most_n_jobs(start_worker):
    results = [jobs.report_pid.enqueue() for _ in range(5)]
    worker = start_worker("--concurrency", "1", "--max-jobs-per-child", "2", "--burst")
    assert worker.wait(60) == 0, worker.log
    pids = [job(r.id).result for r in results]  # claimed, and run, in id order
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert len(set(pids)) == 3


def test_without_it_one_child_runs_every_job(start_worker):
    results = [jobs.report_pid.enqueue() for _ in range(3)]
    worker = start_worker("--concurrency", "1", "--burst")
    assert worker.wait(60) == 0, worker.log
    assert len({job(r.id).result for r in results}) == 1


@pytest.mark.parametrize("value", [0, -1, 1.5, "3", True])
def test_the_setting_must_be_a_whole_number_of_at_least_one(value):
    with pytest.raises(SettingError, match="at least 1") as caught:
        WorkerSettings(max_jobs_per_child=value)
    assert caught.value.name == "max_jobs_per_child"


def test_the_option_is_validated_and_named(worker_env):
    finished = subprocess.run(
        [sys.executable, "-m", "django", "pgqueue_worker", "--max-jobs-per-child", "0"],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode != 0
    assert "--max-jobs-per-child must be a whole number of at least 1, got 0" in finished.stderr
