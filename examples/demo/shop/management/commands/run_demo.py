"""``python manage.py run_demo``: enqueue a batch, run a worker until it is done, print what happened."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Count, Max, Min

import pgqueue
from pgqueue.models import Job
from shop.tasks import build_report, charge_card, restock, send_receipt, send_reminder

FINISHED = ("succeeded", "failed", "cancelled")


class Command(BaseCommand):
    help = "Enqueue a batch of demo jobs, run pgqueue_worker until they are done, and summarise."

    def add_arguments(self, parser):
        parser.add_argument(
            "--receipts", type=int, default=500, help="plain jobs to enqueue (default 500)"
        )
        parser.add_argument(
            "--timeout", type=float, default=120, help="seconds to wait for the batch"
        )

    def handle(self, *args, **options):
        if options["receipts"] < 0:
            raise CommandError("--receipts must be zero or more")
        Job.objects.filter(task_path__startswith="shop.tasks.").delete()
        ids = self._enqueue(options["receipts"])
        self.stdout.write(f"Enqueued {len(ids['all'])} jobs in one transaction.")
        worker = self._start_worker()
        try:
            self._wait(ids["all"], options["timeout"], worker)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        self._summary(ids)

    def _enqueue(self, receipts: int) -> dict:
        with transaction.atomic():
            batch = pgqueue.enqueue_many(
                [{"task": send_receipt, "args": [order]} for order in range(1, receipts + 1)]
            )
            charge = charge_card.enqueue(1001)
            report = build_report.enqueue(10)
            reminder = send_reminder.using(run_after=timedelta(seconds=2)).enqueue(1001)
            low = restock.using(priority=-10).enqueue("paper")
            high = restock.using(priority=50).enqueue("ink")
        every = [r.id for r in batch] + [r.id for r in (charge, report, reminder, low, high)]
        return {
            "all": every,
            "charge": charge.id,
            "report": report.id,
            "reminder": reminder.id,
            "low": low.id,
            "high": high.id,
        }

    def _start_worker(self) -> subprocess.Popen:
        manage = Path(sys.argv[0]).resolve()
        self.stdout.write("Starting: python manage.py pgqueue_worker")
        return subprocess.Popen(
            [sys.executable, str(manage), "pgqueue_worker", "-v", "0"], env=os.environ.copy()
        )

    def _wait(self, ids: list, timeout: float, worker: subprocess.Popen) -> None:
        deadline = time.monotonic() + timeout
        last = -1
        while True:
            done = Job.objects.filter(pk__in=ids, status__in=FINISHED).count()
            if done != last:
                self.stdout.write(f"  {done}/{len(ids)} finished")
                last = done
            if done == len(ids):
                return
            if worker.poll() is not None:
                raise CommandError(f"the worker exited early with status {worker.returncode}")
            if time.monotonic() > deadline:
                raise CommandError(
                    f"the batch did not finish within {timeout:g}s ({done}/{len(ids)})"
                )
            time.sleep(0.25)

    def _summary(self, ids: dict) -> None:
        jobs = Job.objects.filter(pk__in=ids["all"])
        out = self.stdout.write
        out("\n== pgqueue demo: what happened ==")
        out("Jobs per status:")
        for row in jobs.values("status").annotate(n=Count("id")).order_by("status"):
            out(f"  {row['status']:<10} {row['n']}")

        charge = pgqueue.get_result(ids["charge"])
        out(f"\nRetried job (charge_card): {charge.status}, {charge.attempts} attempts")
        for error in charge.errors:
            out(f"  failed attempt: {error.traceback.strip().splitlines()[-1]}")
        out(f"  result: {charge.return_value!r}")

        report = pgqueue.get_result(ids["report"])
        out(f"\nGenerator job (build_report) streamed {len(report.output)} values:")
        out("  " + ", ".join(f"{v['step']}/{v['of']}" for v in report.output))
        out(f"  result: {report.return_value!r}")

        reminder = Job.objects.get(pk=ids["reminder"])
        delay = (reminder.started_at - reminder.enqueued_at).total_seconds()
        out(f"\nScheduled job (send_reminder, run_after = +2s): started {delay:.2f}s after enqueue")

        high = Job.objects.get(pk=ids["high"])
        low = Job.objects.get(pk=ids["low"])
        earlier = jobs.filter(started_at__lt=high.started_at).count()
        out(
            f"\nPriorities: restock(priority=50) started after {earlier} other jobs; "
            f"restock(priority=-10) after {jobs.filter(started_at__lt=low.started_at).count()}"
        )

        span = jobs.filter(status="succeeded", task_path="shop.tasks.send_receipt").aggregate(
            first=Min("started_at"), last=Max("finished_at"), n=Count("id")
        )
        if span["n"]:
            seconds = max((span["last"] - span["first"]).total_seconds(), 1e-6)
            out(
                f"\nThroughput: {span['n']} plain jobs in {seconds:.2f}s = {span['n'] / seconds:,.0f} jobs/s"
            )
        out(f"Database: {Job.objects.db} ({Job._meta.db_table} on {_vendor()})")


def _vendor() -> str:
    from django.db import connection

    return connection.vendor
