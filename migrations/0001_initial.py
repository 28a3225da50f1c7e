"""Install pgqueue SQL API version 1 (sql/0001_initial.sql) and its tables.

On PostgreSQL the SQL file creates tables, indexes and functions; elsewhere the
tables are created from the models. See pgqueue.migration_ops.
"""

import uuid

import django.utils.timezone
from django.db import migrations, models

from pgqueue.migration_ops import InstallSQL, PortableTables


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        InstallSQL("0001_initial"),
        PortableTables(
            [
                migrations.CreateModel(
                    name="Queue",
                    fields=[
                        ("name", models.TextField(primary_key=True, serialize=False)),
                        ("paused", models.BooleanField(default=False)),
                        ("paused_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        "db_table": "pgqueue_queue",
                    },
                ),
                migrations.CreateModel(
                    name="Worker",
                    fields=[
                        (
                            "id",
                            models.UUIDField(default=uuid.uuid4, primary_key=True, serialize=False),
                        ),
                        ("hostname", models.TextField()),
                        ("pid", models.IntegerField()),
                        ("queues", models.JSONField(default=list)),
                        ("concurrency", models.IntegerField()),
                        ("started_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("heartbeat_at", models.DateTimeField(default=django.utils.timezone.now)),
                    ],
                    options={
                        "db_table": "pgqueue_worker",
                    },
                ),
                migrations.CreateModel(
                    name="Job",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("task_path", models.TextField()),
                        ("queue_name", models.TextField(default="default")),
                        ("priority", models.SmallIntegerField(default=0)),
                        ("args", models.JSONField(default=list)),
                        ("kwargs", models.JSONField(default=dict)),
                        (
                            "status",
                            models.TextField(
                                choices=[
                                    ("scheduled", "Scheduled"),
                                    ("ready", "Ready"),
                                    ("running", "Running"),
                                    ("succeeded", "Succeeded"),
                                    ("failed", "Failed"),
                                    ("cancelled", "Cancelled"),
                                ]
                            ),
                        ),
                        ("run_after", models.DateTimeField(default=django.utils.timezone.now)),
                        ("enqueued_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("started_at", models.DateTimeField(blank=True, null=True)),
                        ("last_attempted_at", models.DateTimeField(blank=True, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        ("attempts", models.IntegerField(default=0)),
                        ("max_attempts", models.IntegerField()),
                        ("unique_key", models.TextField(blank=True, null=True)),
                        ("worker_id", models.UUIDField(blank=True, null=True)),
                        ("worker_ids", models.JSONField(default=list)),
                        ("errors", models.JSONField(default=list)),
                        ("result", models.JSONField(blank=True, null=True)),
                        ("output", models.JSONField(default=list)),
                    ],
                    options={
                        "db_table": "pgqueue_job",
                        "indexes": [
                            models.Index(
                                condition=models.Q(("status", "ready")),
                                fields=["-priority", "run_after", "id"],
                                name="pgqueue_job_ready_idx",
                            ),
                            models.Index(
                                condition=models.Q(("status", "ready")),
                                fields=["queue_name", "-priority", "run_after", "id"],
                                name="pgqueue_job_ready_by_queue_idx",
                            ),
                            models.Index(
                                condition=models.Q(("status", "scheduled")),
                                fields=["run_after"],
                                name="pgqueue_job_scheduled_idx",
                            ),
                            models.Index(
                                condition=models.Q(("status", "running")),
                                fields=["worker_id"],
                                name="pgqueue_job_running_idx",
                            ),
                            models.Index(
                                condition=models.Q(
                                    ("status__in", ["succeeded", "failed", "cancelled"])
                                ),
                                fields=["finished_at"],
                                name="pgqueue_job_finished_idx",
                            ),
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                condition=models.Q(
                                    ("status__in", ["scheduled", "ready", "running"]),
                                    ("unique_key__isnull", False),
                                ),
                                fields=("unique_key",),
                                name="pgqueue_job_unique_key_uniq",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    (
                                        "status__in",
                                        [
                                            "scheduled",
                                            "ready",
                                            "running",
                                            "succeeded",
                                            "failed",
                                            "cancelled",
                                        ],
                                    )
                                ),
                                name="pgqueue_job_status_valid",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("priority__gte", -100), ("priority__lte", 100)),
                                name="pgqueue_job_priority_in_range",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(("max_attempts__gte", 1)),
                                name="pgqueue_job_max_attempts_positive",
                            ),
                            models.CheckConstraint(
                                condition=models.Q(
                                    models.Q(("status", "running"), ("worker_id__isnull", False)),
                                    models.Q(
                                        models.Q(("status", "running"), _negated=True),
                                        ("worker_id__isnull", True),
                                    ),
                                    _connector="OR",
                                ),
                                name="pgqueue_job_running_has_worker",
                            ),
                        ],
                    },
                ),
            ]
        ),
    ]
