"""System checks: settings are valid, and the database's SQL API is the version this code expects."""

from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor

from pgqueue.conf import get_settings
from pgqueue.exceptions import SchemaVersionMismatch
from pgqueue.sqlfiles import SQL_VERSION

#: The tables the migrations create; on databases other than PostgreSQL, their presence is the check.
TABLES = ("pgqueue_job", "pgqueue_queue", "pgqueue_worker")


def _check_tables(alias: str) -> None:
    """Raise SchemaVersionMismatch unless pgqueue's tables exist in ``alias`` (SQLite)."""
    try:
        present = set(connections[alias].introspection.table_names())
    except DatabaseError as exc:
        raise SchemaVersionMismatch(
            f"pgqueue could not list the tables of database {alias!r}: {exc}"
        ) from exc
    missing = [table for table in TABLES if table not in present]
    if missing:
        raise SchemaVersionMismatch(
            f"pgqueue's tables ({', '.join(missing)}) are not in database {alias!r}: run "
            f"'python manage.py migrate pgqueue --database {alias}'"
        )


def check_sql_version(alias: str) -> None:
    """Raise SchemaVersionMismatch unless ``pgqueue.version()`` on ``alias`` equals SQL_VERSION.

    On other databases (SQLite), which have no SQL API, check that the tables exist.
    """
    connection = connections[alias]
    if connection.vendor != "postgresql":
        _check_tables(alias)
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regprocedure('pgqueue.version()') IS NOT NULL")
            installed = cursor.fetchone()[0]
            version = None
            if installed:
                cursor.execute("SELECT pgqueue.version()")
                version = cursor.fetchone()[0]
    except DatabaseError as exc:
        raise SchemaVersionMismatch(
            f"pgqueue could not read its SQL API version from database {alias!r}: {exc}"
        ) from exc
    if version is None:
        raise SchemaVersionMismatch(
            f"pgqueue's SQL API is not installed in database {alias!r}: run "
            f"'python manage.py migrate pgqueue --database {alias}'"
        )
    if version != SQL_VERSION:
        raise SchemaVersionMismatch(
            f"database {alias!r} has pgqueue SQL API version {version}, but this pgqueue expects "
            f"version {SQL_VERSION}: run 'python manage.py migrate pgqueue --database {alias}'"
        )


def _has_unapplied_migrations(alias: str) -> bool:
    executor = MigrationExecutor(connections[alias])
    targets = [key for key in executor.loader.graph.leaf_nodes() if key[0] == "pgqueue"]
    return bool(executor.migration_plan(targets))


@checks.register(checks.Tags.database)
def sql_version_check(app_configs=None, databases=None, **kwargs):
    """Compare the installed SQL API version with the code's (``manage.py check --database``).

    A mismatch is an error, except while pgqueue migrations are pending: then it is a
    warning, as Django's own "unapplied migrations", because ``migrate`` runs these
    checks too and must be able to fix it. The worker refuses to start either way.
    """
    try:
        alias = get_settings().database
    except ImproperlyConfigured:
        return []  # reported by settings_check
    if databases is None or alias not in databases:
        return []
    try:
        check_sql_version(alias)
    except SchemaVersionMismatch as exc:
        if _has_unapplied_migrations(alias):
            return [
                checks.Warning(
                    f"pgqueue migrations are pending in database {alias!r}; 'manage.py migrate' "
                    "installs the SQL API version this code expects",
                    id="pgqueue.W002",
                )
            ]
        return [checks.Error(str(exc), id="pgqueue.E002")]
    return []


@checks.register()
def settings_check(app_configs=None, **kwargs):
    """Report a bad PGQUEUE setting as a check error naming the key."""
    try:
        get_settings()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="pgqueue.E001")]
    return []


@checks.register()
def sqlite_in_production_check(app_configs=None, **kwargs):
    """Warn when the queue lives in SQLite while DEBUG is off: SQLite is for development and demos."""
    try:
        alias = get_settings().database
    except ImproperlyConfigured:
        return []
    if connections[alias].vendor == "sqlite" and not django_settings.DEBUG:
        return [
            checks.Warning(
                f"pgqueue's queue database {alias!r} is SQLite while DEBUG is off. SQLite serialises "
                "every write and has no NOTIFY, so workers poll; it is meant for development and demos.",
                hint="Point PGQUEUE['DATABASE'] at a PostgreSQL database in production.",
                id="pgqueue.W001",
            )
        ]
    return []
