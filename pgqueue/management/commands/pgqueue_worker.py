"""``python manage.py pgqueue_worker``: run pgqueue jobs until stopped."""

import argparse
import logging
import sys
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pgqueue.conf import DEFAULT_MAX_ATTEMPTS, SettingError, WorkerSettings, get_settings
from pgqueue.exceptions import SchemaVersionMismatch

_DEFAULTS = WorkerSettings()


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None


class Command(BaseCommand):
    help = (
        "Run pgqueue jobs: claim ready jobs from the selected queues, run them, store their "
        "outcomes. Wakes on NOTIFY within milliseconds (PostgreSQL) and polls as a fallback. "
        "SIGTERM or SIGINT drains running jobs and exits 0; a second signal exits at once. "
        f"Options default to settings.PGQUEUE, then to pgqueue's defaults. Jobs are tried "
        f"max_attempts times (default {DEFAULT_MAX_ATTEMPTS}) with exponential backoff."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        d = _DEFAULTS
        parser.add_argument(
            "--queues",
            help="comma-separated, ordered queue selectors: names, 'prefix*', or '*' for all "
            f"(default: PGQUEUE['QUEUES'] or {','.join(d.queues)})",
        )
        parser.add_argument(
            "--concurrency", type=int, help=f"jobs run at once (default {d.concurrency})"
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            help="most jobs claimed per query (default: concurrency; max 1000)",
        )
        parser.add_argument(
            "--isolation",
            choices=["thread", "process"],
            help="run each job in a runner thread, or in a child process that a timeout can kill "
            f"(default {d.isolation})",
        )
        parser.add_argument(
            "--max-jobs-per-child",
            type=int,
            help="process isolation: replace a child process after it ran this many jobs, "
            "to bound memory a task leaks (default: never)",
        )
        parser.add_argument(
            "--burst", action="store_true", help="exit 0 once nothing is ready and nothing runs"
        )
        parser.add_argument(
            "--max-jobs", type=int, help="exit after claiming this many jobs (and finishing them)"
        )
        parser.add_argument(
            "--poll-interval",
            type=_seconds,
            help=f"seconds between polls when idle (default {d.poll_interval:g})",
        )
        parser.add_argument(
            "--heartbeat-interval",
            type=_seconds,
            help=f"seconds between heartbeats and reaper runs (default {d.heartbeat_interval:g})",
        )
        parser.add_argument(
            "--orphan-after",
            type=_seconds,
            help="seconds without a heartbeat after which a worker is dead and its jobs are requeued; "
            f"at least 3 heartbeat intervals (default {d.orphan_after:g})",
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=_seconds,
            help="seconds running jobs get to finish after SIGTERM before they go back to the queue "
            f"(default {d.shutdown_timeout:g})",
        )
        parser.add_argument(
            "--no-listen", action="store_true", help="do not LISTEN for notifications; poll only"
        )
        parser.add_argument(
            "--prune-after",
            type=_seconds,
            help="delete jobs that finished more than this many seconds ago (default: keep them)",
        )
        parser.add_argument(
            "--vacuum-threshold",
            type=int,
            help="vacuum the job table when it holds this many dead rows; 0 never "
            f"(default {d.vacuum_threshold})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        settings = self._settings(options)
        _configure_logging(options["verbosity"])
        from pgqueue.worker import Worker

        worker = Worker(settings, burst=options["burst"])
        worker.install_signal_handlers()
        try:
            status = worker.run()
        except SchemaVersionMismatch as exc:
            raise CommandError(str(exc)) from None
        if status:
            sys.exit(status)

    def _settings(self, options: dict[str, Any]) -> WorkerSettings:
        try:
            base = get_settings()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        changes = {
            name: options[name]
            for name in (
                "queues",
                "concurrency",
                "batch_size",
                "isolation",
                "max_jobs_per_child",
                "max_jobs",
                "poll_interval",
                "heartbeat_interval",
                "orphan_after",
                "shutdown_timeout",
                "prune_after",
                "vacuum_threshold",
            )
            if options.get(name) is not None
        }
        if options["no_listen"]:
            changes["listen"] = False
        try:
            return base.replace(**changes)
        except SettingError as exc:
            label = (
                f"--{exc.name.replace('_', '-')}"
                if exc.name in changes
                else f"PGQUEUE['{exc.name.upper()}']"
            )
            message = str(exc)
            if exc.name == "orphan_after":
                message = message.replace("heartbeat_interval", "--heartbeat-interval")
            raise CommandError(f"{label} {message}") from None


def _configure_logging(verbosity: int) -> None:
    """Show the worker's log lines unless the project configured the 'pgqueue' logger itself."""
    logger = logging.getLogger("pgqueue")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(
        logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    )
