"""Django settings for pgqueue's test suite: a real PostgreSQL (PG* environment variables)."""

import os
import tempfile

SECRET_KEY = "pgqueue-tests"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "pgqueue",
    "tests.testapp",
]

TEST_DATABASE = os.environ.get("PGQUEUE_TEST_DATABASE", "test_pgqueue")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "pgqueue"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        "TEST": {"NAME": TEST_DATABASE},
    },
    # The contract suite (tests/contract) runs against this one too. Its test database is
    # a file, not memory, so that worker processes can share it (they get its path in
    # PGQUEUE_SQLITE); one per test process, so that concurrent test runs cannot delete
    # each other's (PostgreSQL's needs PGQUEUE_TEST_DATABASE for that). timeout is
    # SQLite's busy timeout: how long a connection waits for another's write lock before
    # "database is locked" (the driver then retries with backoff).
    "sqlite": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "PGQUEUE_SQLITE", os.path.join(tempfile.gettempdir(), "pgqueue-dev.sqlite3")
        ),
        "OPTIONS": {"timeout": 5},
        "TEST": {
            "NAME": os.path.join(tempfile.gettempdir(), f"{TEST_DATABASE}-{os.getpid()}.sqlite3")
        },
    },
}

TASKS = {
    "default": {
        "BACKEND": "pgqueue.backend.PgQueueBackend",
        "QUEUES": [],
    },
}

PGQUEUE = {
    "BACKOFF_BASE": 0.05,
    "ALLOWED_TASKS": ["tests.worker.allowed_jobs.*"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pgqueue": {"handlers": ["console"], "level": "INFO"}},
}
