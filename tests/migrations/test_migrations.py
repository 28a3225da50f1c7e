"""Installing, upgrading and removing the SQL API with Django migrations, on scratch databases."""

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from django.db import connections

from pgqueue.models import Job, Queue, Worker
from tests.conftest import conninfo

MIGRATIONS = sorted(
    name.removesuffix(".py")
    for name in os.listdir(os.path.join(os.path.dirname(__file__), "..", "..", "migrations"))
    if name[:4].isdigit() and name.endswith(".py")
)


@pytest.fixture
def scratch(transactional_db) -> Iterator:
    """Create scratch databases (dropped afterwards); yields a factory returning their names."""
    server = {**conninfo(), "dbname": "postgres"}
    created: list[str] = []

    def make() -> str:
        name = f"pgq_mig_{secrets.token_hex(4)}"
        with psycopg.connect(**server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return name

    yield make
    with psycopg.connect(**server, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(
    database: str, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PGDATABASE": database,
        **(extra_env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def migrate(database: str, *args: str, **kwargs) -> None:
    done = manage(database, "migrate", *args, "--verbosity", "0", **kwargs)
    assert done.returncode == 0, done.stderr


def connect(database: str) -> psycopg.Connection:
    return psycopg.connect(**{**conninfo(), "dbname": database}, autocommit=True)


def catalog(database: str) -> dict[str, list]:
    """Everything pgqueue defines, as PostgreSQL itself describes it."""
    with connect(database) as conn:

        def rows(sql: str) -> list:
            return sorted(tuple(map(str, r)) for r in conn.execute(sql).fetchall())

        return {
            "functions": rows(
                "SELECT p.oid::regprocedure, pg_get_functiondef(p.oid), p.proconfig, p.proacl, "
                "obj_description(p.oid, 'pg_proc') FROM pg_proc p "
                "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgqueue'"
            ),
            "columns": rows(
                "SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_name LIKE 'pgqueue\\_%'"
            ),
            "tables": rows(
                "SELECT c.relname, c.relkind, c.reloptions, c.relacl FROM pg_class c "
                "WHERE c.relname LIKE 'pgqueue\\_%' AND c.relkind IN ('r', 'S')"
            ),
            "indexes": rows(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE 'pgqueue\\_%'"
            ),
            "constraints": rows(
                "SELECT conrelid::regclass, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid::regclass::text LIKE '%pgqueue\\_%'"
            ),
            "schemas": rows("SELECT nspname, nspacl FROM pg_namespace WHERE nspname = 'pgqueue'"),
        }


def test_migrate_up_down_to_zero_and_up_again(scratch):
    database = scratch()
    migrate(database)
    installed = catalog(database)
    assert installed["functions"] and installed["schemas"]
    migrate(database, "pgqueue", "zero")
    removed = catalog(database)
    assert all(not rows for rows in removed.values()), removed
    migrate(database)
    assert catalog(database) == installed


def test_step_by_step_equals_a_fresh_install(scratch):
    stepwise, fresh = scratch(), scratch()
    for name in MIGRATIONS:
        migrate(stepwise, "pgqueue", name)
    migrate(fresh)
    assert catalog(stepwise) == catalog(fresh)


def test_models_describe_the_tables_sql_creates(transactional_db):
    with connections["default"].cursor() as cursor:
        for model in (Job, Worker, Queue):
            table = model._meta.db_table
            cursor.execute(
                "SELECT column_name, is_nullable = 'YES' FROM information_schema.columns "
                "WHERE table_name = %s AND table_schema = current_schema()",
                [table],
            )
            in_database = dict(cursor.fetchall())
            in_model = {f.column: f.null for f in model._meta.concrete_fields}
            assert in_database == in_model, table
            cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [table])
            indexes = {r[0] for r in cursor.fetchall()}
            assert {i.name for i in model._meta.indexes} <= indexes
            cursor.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass", [table]
            )
            constraints = {r[0] for r in cursor.fetchall()}
            assert {c.name for c in model._meta.constraints} <= constraints | indexes


def test_models_and_migrations_agree(scratch):
    done = manage(scratch(), "makemigrations", "--check", "--dry-run", "pgqueue")
    assert done.returncode == 0, done.stdout + done.stderr


def test_version_check(scratch):
    database = scratch()
    pending = manage(database, "check", "--database", "default")
    assert "pgqueue.W002" in pending.stderr and "migrate" in pending.stderr
    migrate(database)
    ok = manage(database, "check", "--database", "default")
    assert ok.returncode == 0 and "pgqueue" not in ok.stderr, ok.stderr
    with connect(database) as conn:
        conn.execute(
            "CREATE OR REPLACE FUNCTION pgqueue.version() RETURNS integer LANGUAGE sql AS 'SELECT 99'"
        )
    mismatch = manage(database, "check", "--database", "default")
    assert mismatch.returncode != 0
    assert (
        "pgqueue.E002" in mismatch.stderr
        and "version 99" in mismatch.stderr
        and "migrate" in mismatch.stderr
    )
    worker = manage(database, "pgqueue_worker", "--burst")
    assert worker.returncode != 0 and "version 99" in worker.stderr


def test_tables_follow_the_connections_schema(scratch):
    database = scratch()
    with connect(database) as conn:
        conn.execute("CREATE SCHEMA app")
    migrate(database, extra_env={"PGOPTIONS": "-c search_path=app"})
    with connect(database) as conn:
        schemas = conn.execute(
            "SELECT DISTINCT table_schema FROM information_schema.tables WHERE table_name LIKE 'pgqueue\\_%'"
        ).fetchall()
        assert schemas == [("app",)]
        job_id = conn.execute("SELECT pgqueue.enqueue('a.b')").fetchone()[0]
        assert conn.execute(
            "SELECT status FROM app.pgqueue_job WHERE id = %s", (job_id,)
        ).fetchone() == ("ready",)
