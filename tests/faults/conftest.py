"""A throwaway PostgreSQL cluster of the tests' own, to restart and stop (never the shared one)."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests.worker.conftest import run_burst, start_worker, worker_env  # noqa: F401  (shared fixtures)

BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """A PostgreSQL cluster in a temporary directory, run as the postgres user, on 127.0.0.1:port."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.log = root / "postgres.log"

    def _as_postgres(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._as_postgres(
            str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.log),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop("fast")
        self.start()

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, autocommit=True
        )

    def env(self, dbname: str = "faults") -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": "postgres",
            "PGDATABASE": dbname,
        }


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A started throwaway cluster with database 'faults', migrated; removed after the test."""
    if BIN is None or shutil.which("runuser") is None:
        pytest.skip("needs PostgreSQL server binaries and runuser to make a throwaway cluster")
    root = Path(tempfile.mkdtemp(prefix="pgqueue-cluster-"))
    os.chmod(root, 0o777)
    cluster = Cluster(root)
    cluster.init()
    cluster.start()
    try:
        with cluster.connect() as conn:
            conn.execute("CREATE DATABASE faults")
        done = subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--verbosity", "0", "--skip-checks"],
            env=cluster.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def query(cluster: Cluster, sql: str, params: tuple = ()) -> list[tuple]:
    """Run a query on the throwaway cluster, retrying while it restarts."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with cluster.connect("faults") as conn:
                return conn.execute(sql, params).fetchall()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def ledger(transactional_db) -> Iterator:
    """The fault_ledger table tasks record each execution in; yields a reader of its labels."""
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS fault_ledger")
        cursor.execute(
            "CREATE TABLE fault_ledger (label text NOT NULL, pid integer, at timestamptz DEFAULT clock_timestamp())"
        )

    def labels() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT label FROM fault_ledger ORDER BY at")
            return [row[0] for row in cursor.fetchall()]

    yield labels
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS fault_ledger")
