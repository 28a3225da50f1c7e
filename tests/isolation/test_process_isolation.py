"""--isolation process: each job runs in a long-lived child process that the worker supervises.

A child that overruns its job's timeout is killed (with any subprocess of its own)
and replaced; a child that dies is replaced; either way the attempt is recorded and
retried per max_attempts, and the worker goes on. No child outlives the worker.
"""

import os
import signal

import pytest

from tests.isolation import jobs
from tests.isolation.conftest import (
    is_alive,
    job,
    parent_of,
    status,
    wait_for,
    zombies_of,
)

TIMEOUT = "pgqueue.exceptions.TaskTimeout"
DIED = "pgqueue.exceptions.ChildProcessDied"


def error_classes(job_id) -> list[str]:
    return [e["exception_class_path"] for e in job(job_id).errors]


def test_a_job_runs_in_a_child_process_of_the_worker(start_worker, tmp_path):
    release = tmp_path / "release"
    result = jobs.wait_for_file.enqueue(str(release))
    worker = start_worker("--concurrency", "1")
    wait_for(lambda: status(result.id) == "running", what="the job to start", worker=worker)
    (child,) = worker.job_processes()
    release.touch()
    wait_for(lambda: status(result.id) == "succeeded", what="the job to succeed", worker=worker)
    assert job(result.id).result == child, "the job ran in the worker's child process"
    assert parent_of(child) == worker.pid


def test_a_task_blocked_in_c_is_killed_at_its_timeout_retried_then_failed(start_worker):
    blocked = jobs.sleep_in_c.enqueue(1000)  # timeout=1, max_attempts=2
    worker = start_worker("--concurrency", "1")
    wait_for(
        lambda: status(blocked.id) == "failed", what="both attempts to time out", worker=worker
    )
    row = job(blocked.id)
    assert row.attempts == 2
    assert error_classes(blocked.id) == [TIMEOUT, TIMEOUT]
    assert "its process was killed" in row.errors[0]["message"]
    after = jobs.report_pid.enqueue()
    wait_for(lambda: status(after.id) == "succeeded", what="a job after the kills", worker=worker)
    assert worker.alive()
    assert zombies_of(worker.pid) == set(), "killed children are reaped"


def test_an_infinite_loop_is_killed_at_its_timeout(start_worker):
    spinning = jobs.spin.enqueue()  # timeout=1, max_attempts=1
    worker = start_worker("--concurrency", "1")
    wait_for(lambda: status(spinning.id) == "failed", what="the loop to time out", worker=worker)
    assert error_classes(spinning.id) == [TIMEOUT]


def test_a_timeout_also_stops_the_tasks_own_subprocesses(start_worker, tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    hanging = jobs.hang_with_a_subprocess.enqueue(str(pid_file))
    worker = start_worker("--concurrency", "1")
    wait_for(lambda: status(hanging.id) == "failed", what="the job to time out", worker=worker)
    grandchild = int(pid_file.read_text())
    wait_for(lambda: not is_alive(grandchild), timeout=10, what="the task's subprocess to die")


@pytest.mark.parametrize(
    ("how", "clue"),
    [
        ("exit", "exited with code 3"),
        ("sigkill", "killed by signal SIGKILL"),
        ("segfault", "killed by signal SIGSEGV"),
    ],
)
def test_a_task_that_kills_its_process_fails_clearly_and_the_worker_goes_on(
    start_worker, how, clue
):
    dying = jobs.die.enqueue(how)  # max_attempts=2
    worker = start_worker("--concurrency", "1")
    wait_for(lambda: status(dying.id) == "failed", what="the dying job to fail", worker=worker)
    errors = job(dying.id).errors
    assert [e["exception_class_path"] for e in errors] == [DIED, DIED]
    assert clue in errors[0]["message"]
    after = jobs.report_pid.enqueue()
    wait_for(lambda: status(after.id) == "succeeded", what="a job after the deaths", worker=worker)
    assert worker.alive()
    assert zombies_of(worker.pid) == set(), "dead children are reaped"


def test_a_child_that_died_while_idle_is_replaced_without_costing_the_next_job(start_worker):
    first = jobs.report_pid.enqueue()
    worker = start_worker("--concurrency", "1")
    wait_for(lambda: status(first.id) == "succeeded", what="the first job", worker=worker)
    child = job(first.id).result
    os.kill(child, signal.SIGKILL)  # as the OOM killer would
    wait_for(lambda: not is_alive(child), what="the idle child to die")
    second = jobs.report_pid.enqueue()
    wait_for(lambda: status(second.id) == "succeeded", what="the next job", worker=worker)
    row = job(second.id)
    assert (row.attempts, row.errors) == (1, [])
    assert row.result != child


def test_generator_output_is_stored_by_the_child(start_worker):
    result = jobs.stream.enqueue(3)
    worker = start_worker("--concurrency", "1", "--burst")
    assert worker.wait() == 0, worker.log
    row = job(result.id)
    assert (row.status, row.output, row.result) == (
        "succeeded",
        [{"step": 0}, {"step": 1}, {"step": 2}],
        3,
    )


def test_async_tasks_and_tasks_taking_context_run_in_a_child(start_worker):
    coroutine = jobs.async_pid.enqueue()
    with_context = jobs.attempt_number.enqueue()
    worker = start_worker("--concurrency", "1", "--burst")
    assert worker.wait() == 0, worker.log
    assert status(coroutine.id) == status(with_context.id) == "succeeded"
    assert job(coroutine.id).result not in (None, worker.pid)
    assert job(with_context.id).result == 1


def test_two_jobs_run_at_once_in_two_children(start_worker, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    first = jobs.rendezvous.enqueue(str(a), str(b))
    second = jobs.rendezvous.enqueue(str(b), str(a))
    worker = start_worker("--concurrency", "2", "--burst")
    assert worker.wait(60) == 0, worker.log
    assert status(first.id) == status(second.id) == "succeeded"
    assert job(first.id).result != job(second.id).result
    assert worker.pid not in {job(first.id).result, job(second.id).result}


def test_sigterm_lets_running_jobs_finish_and_leaves_no_child_behind(start_worker, tmp_path):
    release = tmp_path / "release"
    result = jobs.wait_for_file.enqueue(str(release))
    worker = start_worker("--concurrency", "2")
    wait_for(lambda: status(result.id) == "running", what="the job to start", worker=worker)
    wait_for(lambda: len(worker.job_processes()) == 2, what="two children", worker=worker)
    children = worker.children()  # job children and multiprocessing's helper
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "stop requested" in worker.log, what="the worker to take the signal")
    assert worker.alive() and status(result.id) == "running", "the worker waits for its job"
    release.touch()
    assert worker.wait() == 0, worker.log
    assert status(result.id) == "succeeded"
    wait_for(
        lambda: not any(is_alive(pid) for pid in children), timeout=10, what="children to be gone"
    )


def test_at_the_shutdown_timeout_the_child_is_killed_before_its_job_is_given_back(
    start_worker, tmp_path
):
    result = jobs.wait_for_file.enqueue(str(tmp_path / "never"), 1000)
    worker = start_worker("--concurrency", "1", "--shutdown-timeout", "0.5")
    wait_for(lambda: status(result.id) == "running", what="the job to start", worker=worker)
    (child,) = worker.job_processes()
    worker.signal(signal.SIGTERM)
    wait_for(lambda: status(result.id) == "ready", what="the job to be given back", worker=worker)
    assert not is_alive(child), "no other worker may take the job while the child still runs it"
    assert worker.wait() == 0, worker.log
    row = job(result.id)
    assert (row.status, row.attempts, row.errors) == ("ready", 0, []), "given back, not failed"


def test_a_second_signal_kills_the_children_and_exits_at_once(start_worker, tmp_path):
    result = jobs.wait_for_file.enqueue(str(tmp_path / "never"), 1000)
    worker = start_worker("--concurrency", "2")
    wait_for(lambda: status(result.id) == "running", what="the job to start", worker=worker)
    children = worker.children()
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "stop requested" in worker.log, what="the worker to take the signal")
    worker.signal(signal.SIGTERM)
    assert worker.wait() != 0
    wait_for(
        lambda: not any(is_alive(pid) for pid in children), timeout=10, what="children to be gone"
    )


def test_children_die_with_a_killed_worker_even_mid_job(start_worker, tmp_path):
    result = jobs.sleep_in_c.using(timeout=None).enqueue(1000)  # deaf to its pipe, no deadline
    worker = start_worker("--concurrency", "2")
    wait_for(lambda: status(result.id) == "running", what="the job to start", worker=worker)
    children = worker.job_processes()
    assert len(children) == 2
    worker.signal(signal.SIGKILL)
    worker.wait()
    wait_for(
        lambda: not any(is_alive(pid) for pid in children), timeout=10, what="children to be gone"
    )


def test_an_allowed_tasks_timeout_applies_in_thread_isolation_too(start_worker):
    spinning = jobs.spin.enqueue()  # pure Python, so a runner thread can be interrupted
    worker = start_worker("--isolation", "thread", "--concurrency", "1")
    wait_for(lambda: status(spinning.id) == "failed", what="the loop to time out", worker=worker)
    assert error_classes(spinning.id) == [TIMEOUT]


def test_a_worker_whose_children_cannot_start_stops_at_once_and_runs_nothing(
    start_worker, worker_env
):
    waiting = jobs.report_pid.enqueue()
    worker_env["DJANGO_SETTINGS_MODULE"] = "tests.isolation.child_cannot_start_settings"
    worker = start_worker("--concurrency", "2")
    assert worker.wait() != 0
    assert "these settings refuse to load in a child process" in worker.log
    assert "process isolation: a child process exited with code 1 while starting" in worker.log
    row = job(waiting.id)
    assert (row.status, row.attempts) == ("ready", 0)
