"""A minimal Django settings module for pgqueue workers: the one the benchmark uses.

It is also the "lean worker" recipe of docs/operations.md: only the apps the
tasks need, no middleware or templates, pgqueue's logger at WARNING.
"""

import os

SECRET_KEY = "pgqueue-bench"
USE_TZ = True
INSTALLED_APPS = ["pgqueue", "bench.benchapp"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "pgqueue_bench"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
    }
}
TASKS = {"default": {"BACKEND": "pgqueue.backend.PgQueueBackend"}}
PGQUEUE = {"HEARTBEAT_INTERVAL": 1.0, "ORPHAN_AFTER": 10.0}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "pgqueue": {"handlers": ["console"], "level": "INFO"},
        "django.tasks": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
