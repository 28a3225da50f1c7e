"""Settings of the pgqueue demo: SQLite by default, PostgreSQL when DATABASE_URL says so.

DATABASE_URL=postgresql://postgres@127.0.0.1:5432/pgqueue_demo python manage.py run_demo
"""

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "pgqueue-demo-not-secret"
DEBUG = True
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["pgqueue", "shop"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _database(url: str | None) -> dict:
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DEMO_SQLITE_PATH", str(BASE_DIR / "demo.sqlite3")),
            "OPTIONS": {"timeout": 20},
        }
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got scheme {parsed.scheme!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parsed.path.lstrip("/") or "postgres",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
    }


DATABASES = {"default": _database(os.environ.get("DATABASE_URL"))}

TASKS = {"default": {"BACKEND": "pgqueue.backend.PgQueueBackend"}}

PGQUEUE = {
    # Short intervals so that the demo's retries and scheduled job finish quickly.
    "POLL_INTERVAL": 0.5,
    "HEARTBEAT_INTERVAL": 1.0,
    "ORPHAN_AFTER": 5.0,
    "BACKOFF_BASE": 0.5,
    "CONCURRENCY": 4,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "pgqueue": {"handlers": ["console"], "level": os.environ.get("DEMO_LOG_LEVEL", "ERROR")},
        # Django logs every task start and finish (with tracebacks of failed attempts);
        # the demo's summary shows the same, so keep its output readable.
        "django.tasks": {"handlers": ["console"], "level": "CRITICAL", "propagate": False},
    },
}
