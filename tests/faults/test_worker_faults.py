"""Frozen workers, a killed or silent LISTEN connection: fenced writes and fast recovery."""

import select
import signal
import socket
import threading

from django.db import connection

from pgqueue.models import Job
from tests.testapp.tasks import add, ledger_wait
from tests.worker.conftest import status, wait_for


def test_a_frozen_worker_that_resumes_cannot_complete_a_job_given_away(
    start_worker, ledger, tmp_path
):
    gate = tmp_path / "gate"
    result = ledger_wait.enqueue("frozen-job", str(gate))
    frozen = start_worker("--orphan-after", "1")
    wait_for(lambda: ledger() == ["frozen-job"], what="the first execution", worker=frozen)
    frozen.signal(signal.SIGSTOP)
    try:
        rescuer = start_worker("--orphan-after", "1")
        wait_for(
            lambda: ledger().count("frozen-job") == 2,
            timeout=30,
            what="the job to be reaped and rerun",
            worker=rescuer,
        )
        gate.touch()
        wait_for(
            lambda: status(result.id) == "succeeded", what="the rerun to finish", worker=rescuer
        )
    finally:
        frozen.signal(signal.SIGCONT)
    wait_for(
        lambda: "lease lost" in frozen.log,
        timeout=30,
        what="the resumed worker to find its lease lost",
        worker=frozen,
    )
    row = Job.objects.get(pk=int(result.id))
    assert row.status == "succeeded"
    assert row.attempts == 2
    assert [e["exception_class_path"] for e in row.errors] == ["pgqueue.exceptions.WorkerLost"]
    assert ledger().count("frozen-job") == 2, "the second run is explained by the lost worker"


def _listener_pids() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN pgqueue_v1'"
        )
        return [row[0] for row in cursor.fetchall()]


def test_a_terminated_listen_connection_is_replaced(start_worker):
    worker = start_worker(
        "--poll-interval", "60", "--heartbeat-interval", "0.5", "--orphan-after", "2", fast=False
    )
    wait_for(lambda: len(_listener_pids()) == 1, what="the listener", worker=worker)
    [pid] = _listener_pids()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_for(
        lambda: "listener reconnected" in worker.log,
        what="the listener to reconnect",
        worker=worker,
    )
    result = add.enqueue(1, 2)
    wait_for(
        lambda: status(result.id) == "succeeded",
        timeout=10,
        what="a job woken by the new listener",
        worker=worker,
    )


class SilencingProxy(threading.Thread):
    """Forwards TCP to PostgreSQL; once ``silence_listener`` is set, the first ``victims``
    connections that send LISTEN stop forwarding without closing (a stalled middlebox), the
    later ones just after their LISTEN went out. Other connections keep working."""

    def __init__(self, target: tuple[str, int], victims: int):
        super().__init__(daemon=True)
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.silence_listener = threading.Event()
        self.silenced = threading.Event()
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._victims: list[socket.socket] = []
        self._max_victims = victims

    def run(self) -> None:
        self.server.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the server socket was closed: stop()
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        with client, upstream:
            is_listener = False
            while not self.stopped.is_set():
                readable, _, _ = select.select([client, upstream], [], [], 0.2)
                if is_listener and self.silence_listener.is_set():
                    with self._lock:
                        if client not in self._victims and len(self._victims) < self._max_victims:
                            self._victims.append(client)
                        silenced = client in self._victims
                    if silenced:
                        self.silenced.set()
                        self.stopped.wait(0.2)
                        continue  # hold the connection open, forward nothing
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client and b"LISTEN pgqueue_v1" in data:
                        is_listener = True
                    (upstream if sock is client else client).sendall(data)

    def stop(self) -> None:
        self.stopped.set()
        self.server.close()


def test_a_silent_listener_is_detected_by_its_ping_and_replaced(start_worker, worker_env):
    settings = connection.settings_dict
    # Two victims: the running listener goes silent, and so does its first replacement,
    # whose LISTEN then never gets an answer: only a deadline on every statement gets out.
    proxy = SilencingProxy(
        (settings["HOST"] or "127.0.0.1", int(settings["PORT"] or 5432)), victims=2
    )
    proxy.start()
    try:
        env = {**worker_env, "PGHOST": "127.0.0.1", "PGPORT": str(proxy.port)}
        worker = start_worker(
            "--poll-interval",
            "60",
            "--heartbeat-interval",
            "0.5",
            "--orphan-after",
            "2",
            fast=False,
            env=env,
        )
        wait_for(lambda: "started in" in worker.log, what="the worker to start", worker=worker)
        proxy.silence_listener.set()
        wait_for(proxy.silenced.is_set, what="the proxy to silence the listener")
        wait_for(
            lambda: "listener reconnected" in worker.log,
            timeout=20,
            what="the ping to notice",
            worker=worker,
        )
        result = add.enqueue(2, 3)
        wait_for(
            lambda: status(result.id) == "succeeded",
            timeout=10,
            what="a job woken by the new listener",
            worker=worker,
        )
    finally:
        proxy.stop()


def test_a_job_that_kills_its_worker_every_time_ends_failed_while_others_flow(start_worker):
    from tests.testapp.tasks import exit_hard

    killer = exit_hard.enqueue(7)  # max_attempts=2; in thread isolation it takes the worker down
    for _ in range(2):
        worker = start_worker("--orphan-after", "1")
        assert worker.wait(timeout=60) == 7, worker.log
    survivor = start_worker("--orphan-after", "1")
    others = [add.enqueue(i, i) for i in range(5)]
    wait_for(
        lambda: status(killer.id) == "failed",
        timeout=30,
        what="the killer job to fail",
        worker=survivor,
    )
    wait_for(
        lambda: all(status(r.id) == "succeeded" for r in others), what="other jobs", worker=survivor
    )
    row = Job.objects.get(pk=int(killer.id))
    assert row.attempts == 2
    assert [e["exception_class_path"] for e in row.errors] == ["pgqueue.exceptions.WorkerLost"] * 2
    assert survivor.process.poll() is None
