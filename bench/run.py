"""pgqueue's benchmark: throughput, wake-up latency and memory, each against this machine's ceiling.

    python bench/run.py                   # W1-W5, 3 runs each
    python bench/run.py --quick --runs 1  # a smoke run with small sizes
    python bench/run.py --long            # adds W6, a million jobs in a row
    python bench/run.py --workloads W3,W4 --json out.json

It talks to the PostgreSQL named by the PG* variables (default 127.0.0.1:5432,
user postgres) and creates its own database, pgqueue_bench, afresh for every
run. Figures are medians with min-max; nothing here is a test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATABASE = "pgqueue_bench"
os.environ["PGDATABASE"] = DATABASE
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
os.environ.setdefault("PGHOST", "127.0.0.1")
os.environ.setdefault("PGUSER", "postgres")
os.environ.setdefault("PGPORT", "5432")

import psycopg  # noqa: E402

SIZES = {
    "full": {"W1": 10_000, "W2": 50_000, "W3": 20_000, "W4": 200, "W5": 100_000, "W6": 1_000_000},
    "quick": {"W1": 1_000, "W2": 5_000, "W3": 2_000, "W4": 30, "W5": 5_000, "W6": 50_000},
}
#: W3 worker configurations: PROCESSES:OPTIONS (see --w3-config); the default one comes first.
W3_CONFIGS = ["1:", "1:--concurrency 200 --batch-size 50", "2:--concurrency 100 --batch-size 100"]


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def server(dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(dbname=dbname, autocommit=True)


def fresh_database() -> None:
    """Drop and recreate the benchmark database and install pgqueue in it."""
    from django.db import connections

    connections.close_all()
    with server() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--verbosity", "0", "--skip-checks"],
        cwd=ROOT,
        check=True,
    )


def django_ready() -> None:
    import django

    django.setup()


def enqueue_noops(count: int) -> None:
    import pgqueue
    from bench.benchapp.tasks import noop

    for start in range(0, count, 50_000):
        pgqueue.enqueue_many([{"task": noop} for _ in range(min(50_000, count - start))])


def done_count() -> int:
    with server(DATABASE) as conn:
        return conn.execute(
            "SELECT count(*) FROM pgqueue_job WHERE status = 'succeeded'"
        ).fetchone()[0]


def pgbench(script: str, clients: int, seconds: int, init: tuple[str, ...] = ()) -> float:
    """Transactions per second of a pgbench script against the benchmark database."""
    binary = shutil.which("pgbench") or next(
        Path("/usr/lib/postgresql").glob("*/bin/pgbench"), None
    )
    if binary is None:
        raise RuntimeError(
            "pgbench is not installed (Debian: postgresql-contrib / postgresql-client)"
        )
    with server(DATABASE) as conn:
        for statement in init:
            conn.execute(statement)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        [
            str(binary),
            "-n",
            "-c",
            str(clients),
            "-j",
            str(min(clients, 2)),
            "-T",
            str(seconds),
            "-f",
            f.name,
            DATABASE,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(f.name)
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


class WorkerProcess:
    """A pgqueue_worker subprocess of the benchmark database."""

    def __init__(self, args: list[str]):
        descriptor, name = tempfile.mkstemp(suffix=".log")
        self.log_path = Path(name)
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "pgqueue_worker", *args],
            cwd=ROOT,
            stdout=descriptor,
            stderr=subprocess.STDOUT,
        )
        os.close(descriptor)

    def text(self) -> str:
        return self.log_path.read_text()

    def wait_started(self, timeout: float = 60) -> float:
        """Wait for the worker's 'started' log line; return seconds since the process was spawned."""
        deadline = time.monotonic() + timeout
        while "started in" not in self.text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{self.text()}")
            time.sleep(0.002)
        return time.perf_counter() - self.started

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_path.unlink(missing_ok=True)
        return self.process.returncode


def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.02)


# Workloads: each returns {"value": number, "unit": str, "ceiling": number | None, ...}


def w1_single_enqueue(size: int) -> dict:
    from bench.benchapp.tasks import noop

    noop.enqueue()  # warm up the connection and prepared statements
    started = time.perf_counter()
    for _ in range(size):
        noop.enqueue()  # autocommit: one transaction per enqueue
    rate = size / (time.perf_counter() - started)
    ceiling = pgbench(
        "INSERT INTO ceiling_w1 (payload) VALUES ('[]');\n",
        clients=1,
        seconds=5,
        init=("CREATE TABLE IF NOT EXISTS ceiling_w1 (id bigserial PRIMARY KEY, payload jsonb)",),
    )
    return {"value": rate, "unit": "jobs/s", "ceiling": ceiling}


def w2_bulk_enqueue(size: int) -> dict:
    import pgqueue
    from bench.benchapp.tasks import noop

    specs = [{"task": noop, "args": [i]} for i in range(size)]
    started = time.perf_counter()
    pgqueue.enqueue_many(specs)
    rate = size / (time.perf_counter() - started)
    with server(DATABASE) as conn:
        conn.execute(
            "CREATE TABLE ceiling_w2 (id bigserial PRIMARY KEY, task_path text, args jsonb, status text)"
        )
        started = time.perf_counter()
        with conn.cursor().copy("COPY ceiling_w2 (task_path, args, status) FROM STDIN") as copy:
            for i in range(size):
                copy.write_row(("bench.benchapp.tasks.noop", f"[{i}]", "ready"))
        ceiling = size / (time.perf_counter() - started)
    return {"value": rate, "unit": "jobs/s", "ceiling": ceiling}


def w3_drain(size: int, processes: int, args: list[str]) -> dict:
    """The drain runs from the first claim to the last completion, both read from the
    jobs on the database's clock; start-up (spawn to the worker's 'started' line) is
    reported on its own, with the rate it gives when counted in, and so is the time
    from spawning the workers to their exit."""
    enqueue_noops(size)
    with server(DATABASE) as conn:
        conn.execute("VACUUM ANALYZE pgqueue_job")
    spawned = time.perf_counter()
    workers = [WorkerProcess(["--burst", *args]) for _ in range(processes)]
    startup = max(w.wait_started() for w in workers)
    for worker in workers:
        worker.process.wait(timeout=600)
    end_to_end = time.perf_counter() - spawned
    for worker in workers:
        worker.stop()
    with server(DATABASE) as conn:
        done, drain = conn.execute(
            "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at))::float8"
            " FROM pgqueue_job WHERE status = 'succeeded'"
        ).fetchone()
    if done != size:
        raise RuntimeError(f"only {done} of {size} jobs succeeded")
    return {
        "value": size / drain,
        "unit": "jobs/s",
        "startup_s": startup,
        "with_startup": size / (startup + drain),
        "end_to_end_s": end_to_end,
        "ceiling": None,
    }


def w3_ceiling() -> dict:
    """Rows per second a pgbench script claims and marks done, 50 per transaction, with the
    best of 2, 4 and 8 clients. The table holds more rows than the fastest client count
    can take in the time, so no transaction ever finds it empty (which would flatter it)."""
    rows = 1_500_000
    script = (
        "WITH c AS (SELECT id FROM ceiling_w3 WHERE status = 'ready' ORDER BY id LIMIT 50 FOR UPDATE SKIP LOCKED) "
        "UPDATE ceiling_w3 t SET status = 'done', result = 'null' FROM c WHERE t.id = c.id;\n"
    )
    by_clients = {}
    for clients in (2, 4, 8):
        init = (
            "DROP TABLE IF EXISTS ceiling_w3",
            "CREATE TABLE ceiling_w3 (id bigserial PRIMARY KEY, status text NOT NULL, result jsonb)",
            f"INSERT INTO ceiling_w3 (status) SELECT 'ready' FROM generate_series(1, {rows})",
            "CREATE INDEX ON ceiling_w3 (id) WHERE status = 'ready'",
            "VACUUM ANALYZE ceiling_w3",
        )
        by_clients[clients] = 50 * pgbench(script, clients=clients, seconds=5, init=init)
        with server(DATABASE) as conn:
            left = conn.execute(
                "SELECT count(*) FROM ceiling_w3 WHERE status = 'ready'"
            ).fetchone()[0]
        if left == 0:
            raise RuntimeError("the W3 ceiling table ran out of rows; make it larger")
    best = max(by_clients, key=by_clients.get)
    return {"value": by_clients[best], "unit": "rows/s", "ceiling": None, "clients": best}


def w4_latency(size: int, listen: bool, busy: bool = False) -> dict:
    """With ``busy``, one slot runs a long job the whole time, so every stamped job is
    claimed while another job is running (the usual case in production)."""
    from bench.benchapp.tasks import sleep_for, stamp

    args = ["--concurrency", "4"] + ([] if listen else ["--no-listen", "--poll-interval", "0.5"])
    worker = WorkerProcess(args)
    worker.wait_started()
    if busy:
        long_job = sleep_for.enqueue(size * 0.02 + 5)
        with server(DATABASE) as conn:
            wait_until(
                lambda: conn.execute(
                    "SELECT status = 'running' FROM pgqueue_job WHERE id = %s", (int(long_job.id),)
                ).fetchone()[0],
                30,
            )
    time.sleep(0.5)
    latencies = []
    ids = []
    commits = {}
    for _ in range(size):
        result = stamp.enqueue()  # autocommit: committed when this returns
        commits[result.id] = time.time()
        ids.append(result.id)
        time.sleep(0.02)
    with server(DATABASE) as conn:
        wait_until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pgqueue_job WHERE status = 'succeeded' AND task_path = %s",
                    (stamp.module_path,),
                ).fetchone()[0]
                >= size
            ),
            60,
        )
        rows = dict(
            conn.execute(
                "SELECT id::text, result FROM pgqueue_job WHERE task_path = %s",
                (stamp.module_path,),
            ).fetchall()
        )
    worker.stop()
    latencies = sorted((rows[i] - commits[i]) * 1000 for i in ids)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, round(p / 100 * (len(latencies) - 1)))]

    return {"value": pct(50), "unit": "ms p50", "p95": pct(95), "p99": pct(99), "ceiling": None}


def w5_memory(size: int) -> dict:
    worker = WorkerProcess(["--concurrency", "8"])
    worker.wait_started()
    time.sleep(1)
    idle = worker.rss_mib()
    samples = []
    for _ in range(2):
        target = done_count() + size // 2
        enqueue_noops(size // 2)
        wait_until(lambda t=target: done_count() >= t, 600)
        samples.append(worker.rss_mib())
    worker.stop()
    return {"value": idle, "unit": "MiB idle", "after": samples, "ceiling": None}


def _enqueue_noops_in_sql(conn: psycopg.Connection, count: int) -> None:
    """Enqueue no-op jobs with one server-side enqueue_many call: cheap for the producer."""
    conn.execute(
        "SELECT pgqueue.enqueue_many((SELECT jsonb_agg(jsonb_build_object("
        "'task_path', 'bench.benchapp.tasks.noop')) FROM generate_series(1, %s)))",
        (count,),
    )


def w6_sustained(size: int) -> dict:
    """A worker runs ``size`` jobs while a producer keeps a backlog of 20,000 to 50,000 ready;
    the worker prunes finished jobs and keeps the job table vacuumed as configured by default.
    Each tenth of the run is timed as it completes: the last must be as fast as the first."""
    slice_size = max(size // 10, 1)
    low_water, chunk = 20_000, 30_000
    with server(DATABASE) as conn:
        _enqueue_noops_in_sql(conn, min(chunk + low_water, size))
        enqueued = min(chunk + low_water, size)
        conn.execute("VACUUM ANALYZE pgqueue_job")
        fresh_probe = _claim_probe_buffers(conn)  # the cost on a queue that never ran
        worker = WorkerProcess(
            ["--concurrency", "100", "--batch-size", "100", "--prune-after", "0"]
        )
        worker.wait_started()
        marks = [time.perf_counter()]
        sizes = [_job_table_mib(conn)]
        probes = [fresh_probe]
        while len(marks) <= 10:
            waiting = conn.execute(
                "SELECT count(*) FROM pgqueue_job WHERE status IN ('ready', 'running')"
            ).fetchone()[0]
            done = enqueued - waiting
            while len(marks) <= 10 and done >= len(marks) * slice_size:
                marks.append(time.perf_counter())
                sizes.append(_job_table_mib(conn))
                probes.append(_claim_probe_buffers(conn))
                progress(
                    f"W6 {done:,} of {size:,} done; job table {sizes[-1]:.0f} MiB, "
                    f"a claim's index scan reads {probes[-1]} buffers"
                )
            if waiting < low_water and enqueued < size:
                count = min(chunk, size - enqueued)
                _enqueue_noops_in_sql(conn, count)
                enqueued += count
            else:
                time.sleep(0.2)
    worker.stop()
    rates = [slice_size / (b - a) for a, b in itertools.pairwise(marks)]
    return {
        "value": rates[-1] / rates[0],
        "unit": "last/first tenth",
        "rates": [round(r) for r in rates],
        "table_mib": [round(s, 1) for s in sizes],
        "claim_probe_buffers": probes,
        "ceiling": None,
    }


def _claim_probe_buffers(conn: psycopg.Connection) -> int:
    """Buffers a claim's scan of the ready index touches to find 100 jobs: a cost that,
    unlike time, no neighbour on the machine can disturb. Dead index entries raise it."""
    plan = conn.execute(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT id FROM pgqueue_job "
        "WHERE status = 'ready' ORDER BY priority DESC, run_after, id LIMIT 100"
    ).fetchone()[0][0]["Plan"]
    return plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]


def _job_table_mib(conn: psycopg.Connection) -> float:
    """The job table with its indexes and TOAST, in MiB: it must not grow with the run."""
    return conn.execute("SELECT pg_total_relation_size('pgqueue_job')").fetchone()[0] / 2**20


def w3_config(text: str) -> tuple[str, int, list[str]]:
    """Parse --w3-config 'PROCESSES:WORKER OPTIONS', e.g. '2:--concurrency 200 --batch-size 100'."""
    processes, _, options = text.partition(":")
    if not processes.strip().isdigit() or int(processes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected 'PROCESSES:WORKER OPTIONS' such as '2:--concurrency 200', got {text!r}"
        )
    count = int(processes)
    label = f"{count} process{'es' if count > 1 else ''}, " + (options.strip() or "defaults")
    return label, count, options.split()


def run_workload(
    name: str, runs: int, sizes: dict, w3_configs: list[tuple[str, int, list[str]]]
) -> list[tuple[str, list[dict]]]:
    """Run one workload ``runs`` times on a fresh database each time; return labelled results."""
    plans: list[tuple[str, Callable[[], dict]]]
    if name == "W1":
        plans = [("W1 single enqueue", lambda: w1_single_enqueue(sizes["W1"]))]
    elif name == "W2":
        plans = [("W2 bulk enqueue", lambda: w2_bulk_enqueue(sizes["W2"]))]
    elif name == "W3":
        plans = [
            (f"W3 drain, {label}", lambda p=procs, a=args: w3_drain(sizes["W3"], p, a))
            for label, procs, args in w3_configs
        ]
        plans.append(("W3 ceiling: pgbench claim 50 + done, best of 2/4/8 clients", w3_ceiling))
    elif name == "W4":
        plans = [
            ("W4 wake-up latency, NOTIFY", lambda: w4_latency(sizes["W4"], listen=True)),
            (
                "W4 wake-up latency, NOTIFY, one slot busy with a long job",
                lambda: w4_latency(sizes["W4"], listen=True, busy=True),
            ),
            (
                "W4 wake-up latency, polling only (0.5 s)",
                lambda: w4_latency(sizes["W4"], listen=False),
            ),
        ]
    elif name == "W5":
        plans = [("W5 worker memory", lambda: w5_memory(sizes["W5"]))]
    elif name == "W6":
        plans = [("W6 sustained", lambda: w6_sustained(sizes["W6"]))]
    else:
        raise SystemExit(f"unknown workload {name!r}; use W1 to W6")
    results = []
    for label, plan in plans:
        measured = []
        for run in range(runs):
            progress(f"{label}: run {run + 1}/{runs}")
            fresh_database()
            measured.append(plan())
        results.append((label, measured))
    if name == "W3":
        # Every drain is also read against the claim ceiling measured in the same run.
        ceiling = statistics.median(m["value"] for m in results[-1][1])
        for _, measured in results[:-1]:
            for m in measured:
                m["ceiling"] = ceiling
    return results


def summarise(label: str, measured: list[dict]) -> dict:
    values = [m["value"] for m in measured]
    summary = {
        "workload": label,
        "unit": measured[0]["unit"],
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": measured,
    }
    ceilings = [m["ceiling"] for m in measured if m.get("ceiling")]
    if ceilings:
        summary["ceiling_median"] = statistics.median(ceilings)
        summary["fraction_of_ceiling"] = summary["median"] / summary["ceiling_median"]
    for extra in ("p95", "p99", "startup_s", "with_startup", "end_to_end_s"):
        if extra in measured[0]:
            summary[f"{extra}_median"] = statistics.median(m[extra] for m in measured)
    if "after" in measured[0]:
        summary["after_mib"] = [
            statistics.median(m["after"][i] for m in measured) for i in range(2)
        ]
    return summary


def table(summaries: list[dict]) -> str:
    lines = [f"{'workload':<60} {'median':>12} {'min-max':>23}  notes"]
    for s in summaries:
        notes = []
        if "fraction_of_ceiling" in s:
            notes.append(f"{s['fraction_of_ceiling']:.0%} of ceiling {s['ceiling_median']:,.0f}")
        if "p95_median" in s:
            notes.append(f"p95 {s['p95_median']:.1f} ms, p99 {s['p99_median']:.1f} ms")
        if "startup_s_median" in s:
            notes.append(f"start-up {s['startup_s_median']:.2f} s")
        if "with_startup_median" in s:
            notes.append(f"{s['with_startup_median']:,.0f} jobs/s counting start-up")
        if "clients" in s["runs"][0]:
            notes.append("best client counts: " + ", ".join(str(m["clients"]) for m in s["runs"]))
        if "end_to_end_s_median" in s:
            notes.append(f"spawn to exit {s['end_to_end_s_median']:.2f} s")
        if "after_mib" in s:
            notes.append("after jobs: " + ", ".join(f"{m:.1f}" for m in s["after_mib"]) + " MiB")
        if "rates" in s["runs"][0]:
            median_run = min(s["runs"], key=lambda run: abs(run["value"] - s["median"]))
            notes.append(
                "median run, jobs/s per tenth: " + ", ".join(f"{r:,}" for r in median_run["rates"])
            )
            notes.append(
                "job table "
                + " -> ".join(f"{m:.0f}" for m in median_run["table_mib"][::5])
                + " MiB; buffers per claim scan "
                + " -> ".join(str(b) for b in median_run["claim_probe_buffers"][::5])
            )
        digits = 2 if s["median"] < 10 else 1
        lines.append(
            f"{s['workload']:<60} {s['median']:>9,.{digits}f} {s['unit'][:2]:<2} "
            f"{s['min']:>10,.{digits}f}-{s['max']:<10,.{digits}f}  {'; '.join(notes)}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workloads", default="W1,W2,W3,W4,W5", help="comma-separated, from W1 to W6"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per workload (default 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--long", action="store_true", help="add W6 (a million jobs)")
    parser.add_argument(
        "--w6-jobs", type=int, help="jobs in W6 (default 1,000,000; 50,000 with --quick)"
    )
    parser.add_argument(
        "--w3-config",
        type=w3_config,
        action="append",
        metavar="PROCESSES:OPTIONS",
        help="a W3 worker configuration to measure besides the default, such as "
        "'2:--concurrency 200 --batch-size 100' (repeatable; replaces the built-in ones)",
    )
    parser.add_argument(
        "--json", type=Path, help="where to write results (default bench/results/<time>.json)"
    )
    options = parser.parse_args()
    if options.runs < 1:
        parser.error("--runs must be at least 1")
    workloads = [w.strip().upper() for w in options.workloads.split(",") if w.strip()]
    if options.long and "W6" not in workloads:
        workloads.append("W6")
    sizes = dict(SIZES["quick" if options.quick else "full"])
    if options.w6_jobs is not None:
        if options.w6_jobs < 10:
            parser.error("--w6-jobs must be at least 10")
        sizes["W6"] = options.w6_jobs
    try:
        with server() as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.OperationalError as exc:
        raise SystemExit(
            f"no PostgreSQL at {os.environ['PGHOST']}:{os.environ['PGPORT']}: {exc}"
        ) from None
    django_ready()
    print(
        f"pgqueue benchmark: PostgreSQL {version}, {os.cpu_count()} cores, sizes {sizes}",
        file=sys.stderr,
    )
    summaries = []
    try:
        for name in workloads:
            w3_configs = [w3_config(c) for c in W3_CONFIGS]
            if options.w3_config:
                w3_configs = [w3_configs[0], *options.w3_config]
            for label, measured in run_workload(name, options.runs, sizes, w3_configs):
                summaries.append(summarise(label, measured))
                print(table(summaries[-1:]).splitlines()[1], file=sys.stderr, flush=True)
    finally:
        from django.db import connections

        connections.close_all()
        with server() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    print()
    print(table(summaries))
    target = options.json or ROOT / "bench" / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        json.dumps(
            {"postgresql": version, "sizes": sizes, "results": summaries}, indent=2, default=str
        )
    )
    print(f"\nwrote {target}")


if __name__ == "__main__":
    main()
