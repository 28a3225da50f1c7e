"""--isolation process: each job runs in a child process that a timeout can kill."""

import os
import signal
from pathlib import Path

from tests.testapp.tasks import add, exit_hard, report_pid, sleep_in_c, stream
from tests.worker.conftest import job, status, wait_for


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def test_jobs_run_in_child_processes(run_burst):
    results = [report_pid.enqueue(0.3) for _ in range(4)]
    added = add.enqueue(2, 2)
    run_burst("--isolation", "process", "--concurrency", "2")
    pids = {job(r.id).result for r in results}
    assert len(pids) == 2, "two children ran the four jobs"
    assert os.getpid() not in pids
    assert job(added.id).result == 4


def test_a_task_blocked_in_c_is_killed_at_its_timeout_and_retried(start_worker):
    blocked = sleep_in_c.enqueue(1000)
    worker = start_worker("--isolation", "process", "--concurrency", "1")
    wait_for(
        lambda: status(blocked.id) == "failed",
        timeout=60,
        what="both attempts to time out",
        worker=worker,
    )
    row = job(blocked.id)
    assert row.attempts == 2
    assert [e["exception_class_path"] for e in row.errors] == ["pgqueue.exceptions.TaskTimeout"] * 2
    after = add.enqueue(1, 2)
    wait_for(
        lambda: status(after.id) == "succeeded",
        timeout=30,
        what="a job after the kills",
        worker=worker,
    )


def test_a_task_that_kills_its_process_fails_clearly_and_the_worker_goes_on(start_worker):
    crashing = exit_hard.enqueue(3)
    worker = start_worker("--isolation", "process", "--concurrency", "1")
    wait_for(
        lambda: status(crashing.id) == "failed",
        timeout=60,
        what="the crashing job to fail",
        worker=worker,
    )
    errors = job(crashing.id).errors
    assert [e["exception_class_path"] for e in errors] == [
        "pgqueue.exceptions.ChildProcessDied"
    ] * 2
    assert "exited with code 3" in errors[0]["message"]
    after = add.enqueue(1, 2)
    wait_for(
        lambda: status(after.id) == "succeeded",
        timeout=30,
        what="a job after the crash",
        worker=worker,
    )
    assert worker.process.poll() is None


def test_generator_output_from_a_child(run_burst):
    result = stream.enqueue(3)
    run_burst("--isolation", "process", "--concurrency", "1")
    assert job(result.id).output == [{"step": 0}, {"step": 1}, {"step": 2}]


def test_sigterm_drains_and_leaves_no_child_behind(start_worker):
    result = report_pid.enqueue(1.0)
    worker = start_worker("--isolation", "process", "--concurrency", "2")
    wait_for(
        lambda: status(result.id) == "running", timeout=60, what="the job to start", worker=worker
    )
    children = children_of(worker.pid)
    assert len(children) >= 2
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert status(result.id) == "succeeded"
    wait_for(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in children),
        timeout=10,
        what="children to exit",
    )
