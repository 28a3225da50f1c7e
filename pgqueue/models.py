"""The tables pgqueue works on, as Django models (ORM, admin and the SQLite driver see one schema).

On PostgreSQL these tables are created by ``sql/`` (see ``migration_ops``); the models
must describe exactly what the SQL creates, which tests/migrations checks.
"""

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone


class JobStatus(models.TextChoices):
    """Where a job is in its lifecycle (docs/lifecycle.md draws the transitions)."""

    SCHEDULED = "scheduled"  # waiting for run_after (first run, or a retry after backoff)
    READY = "ready"  # may be claimed now
    RUNNING = "running"  # claimed by a worker; worker_id holds it
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


WAITING_STATUSES = (JobStatus.SCHEDULED, JobStatus.READY)
ACTIVE_STATUSES = (JobStatus.SCHEDULED, JobStatus.READY, JobStatus.RUNNING)
FINISHED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job(models.Model):
    """One job, for its whole life."""

    id = models.BigAutoField(primary_key=True)
    task_path = models.TextField()
    queue_name = models.TextField(default="default")
    priority = models.SmallIntegerField(default=0)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    status = models.TextField(choices=JobStatus.choices)
    run_after = models.DateTimeField(default=timezone.now)
    enqueued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.IntegerField(default=0)
    max_attempts = models.IntegerField()
    unique_key = models.TextField(null=True, blank=True)
    worker_id = models.UUIDField(null=True, blank=True)
    worker_ids = models.JSONField(default=list)
    errors = models.JSONField(default=list)
    result = models.JSONField(null=True, blank=True)
    output = models.JSONField(default=list)

    class Meta:
        db_table = "pgqueue_job"
        indexes = [
            models.Index(
                fields=["-priority", "run_after", "id"],
                name="pgqueue_job_ready_idx",
                condition=Q(status="ready"),
            ),
            models.Index(
                fields=["queue_name", "-priority", "run_after", "id"],
                name="pgqueue_job_ready_by_queue_idx",
                condition=Q(status="ready"),
            ),
            models.Index(
                fields=["run_after"],
                name="pgqueue_job_scheduled_idx",
                condition=Q(status="scheduled"),
            ),
            models.Index(
                fields=["worker_id"],
                name="pgqueue_job_running_idx",
                condition=Q(status="running"),
            ),
            models.Index(
                fields=["finished_at"],
                name="pgqueue_job_finished_idx",
                condition=Q(status__in=["succeeded", "failed", "cancelled"]),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["unique_key"],
                name="pgqueue_job_unique_key_uniq",
                condition=Q(unique_key__isnull=False, status__in=["scheduled", "ready", "running"]),
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=["scheduled", "ready", "running", "succeeded", "failed", "cancelled"]
                ),
                name="pgqueue_job_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(priority__gte=-100, priority__lte=100),
                name="pgqueue_job_priority_in_range",
            ),
            models.CheckConstraint(
                condition=Q(max_attempts__gte=1), name="pgqueue_job_max_attempts_positive"
            ),
            models.CheckConstraint(
                condition=Q(status="running", worker_id__isnull=False)
                | (~Q(status="running") & Q(worker_id__isnull=True)),
                name="pgqueue_job_running_has_worker",
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.id} {self.task_path} [{self.status}]"


class Worker(models.Model):
    """A running worker process; its heartbeat tells the reaper it is alive."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    hostname = models.TextField()
    pid = models.IntegerField()
    queues = models.JSONField(default=list)
    concurrency = models.IntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "pgqueue_worker"

    def __str__(self) -> str:
        return f"worker {self.id} ({self.hostname}:{self.pid})"


class Queue(models.Model):
    """A queue's pause state; a queue without a row is running."""

    name = models.TextField(primary_key=True)
    paused = models.BooleanField(default=False)
    paused_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "pgqueue_queue"

    def __str__(self) -> str:
        return f"queue {self.name}{' (paused)' if self.paused else ''}"
