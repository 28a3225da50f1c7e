"""Thread isolation's hand-off: every submitted job runs once, a job never waits behind a
busy thread while another is idle, and a shutdown starts nothing new."""

import threading
import time
from collections.abc import Iterator

import pytest
from django.utils import timezone

from pgqueue.api import pgqueue_backend
from pgqueue.drivers import get_driver
from pgqueue.drivers.base import ClaimedJob
from pgqueue.execution import Outcome
from pgqueue.isolation import RunningJob, ThreadRunner
from tests.testapp.tasks import add, wait_for_file


def claimed(job_id: int, task_path: str, *args) -> RunningJob:
    now = timezone.now()
    job = ClaimedJob(
        id=job_id,
        task_path=task_path,
        args=list(args),
        kwargs={},
        queue_name="default",
        priority=0,
        run_after=now,
        enqueued_at=now,
        started_at=now,
        attempt=1,
        max_attempts=3,
        worker_ids=["w"],
        errors=[],
    )
    return RunningJob(job=job, worker_id="w")


class Delivered:
    """Collects what a runner delivers, and lets a test wait for a job's outcome."""

    def __init__(self) -> None:
        self.outcomes: dict[int, list[Outcome]] = {}
        self._changed = threading.Condition()

    def __call__(self, running: RunningJob, outcome: Outcome) -> None:
        with self._changed:
            self.outcomes.setdefault(running.job.id, []).append(outcome)
            self._changed.notify_all()

    def wait_for(self, *job_ids: int, timeout: float = 30) -> None:
        with self._changed:
            if not self._changed.wait_for(
                lambda: all(i in self.outcomes for i in job_ids), timeout
            ):
                missing = sorted(set(job_ids) - set(self.outcomes))
                pytest.fail(f"jobs {missing[:10]} were not delivered within {timeout}s")


@pytest.fixture
def runner_of() -> Iterator:
    runners: list[ThreadRunner] = []

    def make(threads: int) -> tuple[ThreadRunner, Delivered]:
        delivered = Delivered()
        runner = ThreadRunner(
            threads,
            backend=pgqueue_backend(),
            driver=get_driver("default"),
            allowed_tasks=(),
            deliver=delivered,
        )
        runner.start()
        runners.append(runner)
        return runner, delivered

    yield make
    for runner in runners:
        runner.shutdown()


def test_every_submitted_job_is_delivered_exactly_once(runner_of):
    runner, delivered = runner_of(4)
    for start in range(0, 300, 50):
        runner.submit([claimed(i, add.module_path, i, 1) for i in range(start, start + 50)])
    delivered.wait_for(*range(300))
    assert sorted(delivered.outcomes) == list(range(300))
    assert all(len(outcomes) == 1 for outcomes in delivered.outcomes.values())
    assert [delivered.outcomes[i][0].result for i in range(300)] == [i + 1 for i in range(300)]


def test_a_job_behind_a_blocked_one_is_taken_by_an_idle_thread(runner_of, tmp_path):
    runner, delivered = runner_of(2)
    gate = tmp_path / "gate"
    runner.submit(
        [
            claimed(1, wait_for_file.module_path, str(gate)),
            claimed(2, add.module_path, 1, 2),
        ]
    )
    delivered.wait_for(2)
    assert 1 not in delivered.outcomes, "the blocked job cannot have finished yet"
    gate.touch()
    delivered.wait_for(1)
    assert delivered.outcomes[1][0].succeeded and delivered.outcomes[2][0].result == 3


def test_a_job_claimed_beside_a_long_one_gets_a_thread_without_the_hand_off(
    runner_of, tmp_path, monkeypatch
):
    """When the busy threads have not taken a job for HANDOFF_DELAY, they are slow, and
    submit() wakes an idle thread itself (the hand-off thread is disabled here)."""
    monkeypatch.setattr(ThreadRunner, "HANDOFF_DELAY", 0.05)
    monkeypatch.setattr(ThreadRunner, "_hand_off", lambda self: None)
    runner, delivered = runner_of(2)
    gate = tmp_path / "gate"
    blocked = claimed(1, wait_for_file.module_path, str(gate))
    runner.submit([blocked])
    wait_until_started(blocked)
    time.sleep(0.1)  # longer than HANDOFF_DELAY since a thread last took a job
    runner.submit([claimed(2, add.module_path, 1, 2)])
    delivered.wait_for(2)
    gate.touch()
    delivered.wait_for(1)


def wait_until_started(running: RunningJob) -> None:
    deadline = time.monotonic() + 30
    while running.interruptible.thread_id is None:
        assert time.monotonic() < deadline, f"job {running.job.id} never started"
        time.sleep(0.01)


def test_after_shutdown_a_job_never_started_stays_unstarted(runner_of, tmp_path):
    runner, delivered = runner_of(1)
    gate = tmp_path / "gate"
    blocked = claimed(1, wait_for_file.module_path, str(gate))
    runner.submit([blocked, claimed(2, add.module_path, 1, 2)])
    wait_until_started(blocked)
    runner.shutdown()
    gate.touch()
    delivered.wait_for(1)
    time.sleep(0.5)  # the thread would take job 2 right after job 1, if it were going to
    assert 2 not in delivered.outcomes, "a job was started after shutdown; the worker gives it back"
