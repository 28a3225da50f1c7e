"""A stop signal is obeyed while the worker still retries its registration, children included."""

import signal

from django.db import connection

from tests.isolation.conftest import is_alive, wait_for


def test_sigterm_while_registration_keeps_failing_stops_the_worker_and_its_children(start_worker):
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE pgqueue_worker ADD CONSTRAINT isolation_test_no_workers CHECK (false) NOT VALID"
        )
    try:
        worker = start_worker("--concurrency", "2")
        wait_for(
            lambda: "could not register the worker" in worker.log,
            what="registration to fail",
            worker=worker,
        )
        children = worker.children()
        assert len(worker.job_processes()) == 2
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0, worker.log
        wait_for(
            lambda: not any(is_alive(pid) for pid in children),
            timeout=10,
            what="children to be gone",
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE pgqueue_worker DROP CONSTRAINT isolation_test_no_workers")
