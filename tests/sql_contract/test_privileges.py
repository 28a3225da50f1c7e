"""Privileges: the enqueue-only recipe grants exactly enqueue, nothing is callable by PUBLIC, search_path is pinned."""

import json
import secrets
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from tests.sql_contract.conftest import count_jobs, job, scalar

ENQUEUE_SIGNATURE = "pgqueue.enqueue(text, jsonb, jsonb, text, integer, timestamptz, integer, text)"
TABLES = ("pgqueue_job", "pgqueue_worker", "pgqueue_queue")


def pgqueue_functions(conn: psycopg.Connection) -> list[tuple[str, str, list[str]]]:
    """Every function in schema pgqueue: (signature, name, input argument types)."""
    return conn.execute(
        "SELECT p.oid::regprocedure::text, p.proname, "
        "       ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) t) "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'pgqueue' ORDER BY 1"
    ).fetchall()


def call_with_nulls(name: str, types: list[str]) -> str:
    """A statement calling a pgqueue function with typed NULL arguments."""
    return f"SELECT pgqueue.{name}({', '.join(f'NULL::{t}' for t in types)})"


class Roles:
    """LOGIN roles with random names, and connections as them; all dropped after the test."""

    def __init__(self, admin: psycopg.Connection, conninfo: dict) -> None:
        self.admin = admin
        self.conninfo = conninfo
        self.created: list[str] = []
        self.opened: list[psycopg.Connection] = []

    def create(self, prefix: str = "pgq_enqueuer") -> str:
        role = f"{prefix}_{secrets.token_hex(4)}"
        self.admin.execute(f'CREATE ROLE "{role}" LOGIN')
        self.created.append(role)
        return role

    def connect(self, role: str) -> psycopg.Connection:
        conn = psycopg.connect(**{**self.conninfo, "user": role}, autocommit=True)
        self.opened.append(conn)
        return conn

    def drop_all(self) -> None:
        for conn in self.opened:
            if not conn.closed:
                conn.execute("DISCARD TEMP")  # its pg_temp objects, before DROP OWNED BY
                conn.close()
        for role in self.created:
            self.admin.execute(f'DROP OWNED BY "{role}"')
            self.admin.execute(f'DROP ROLE "{role}"')


@pytest.fixture
def roles(pg, pg_conninfo) -> Iterator[Roles]:
    roles = Roles(pg, pg_conninfo)
    yield roles
    roles.drop_all()


@pytest.fixture
def enqueuer(pg, roles) -> tuple[str, psycopg.Connection]:
    """A fresh LOGIN role given exactly the documented enqueue-only recipe, and a connection as it."""
    role = roles.create()
    pg.execute(f'GRANT USAGE ON SCHEMA pgqueue TO "{role}"')
    pg.execute(f'GRANT EXECUTE ON FUNCTION {ENQUEUE_SIGNATURE} TO "{role}"')
    return role, roles.connect(role)


def test_the_enqueue_only_role_can_enqueue(pg, enqueuer):
    _role, conn = enqueuer
    job_id = scalar(conn, "SELECT pgqueue.enqueue('billing.tasks.charge', '[1]')")
    named = scalar(
        conn,
        "SELECT pgqueue.enqueue('billing.tasks.refund', kwargs => '{\"id\": 7}', "
        "queue_name => 'billing', priority => 5, unique_key => 'refund-7')",
    )
    assert (
        scalar(conn, "SELECT pgqueue.enqueue('billing.tasks.refund', unique_key => 'refund-7')")
        == named
    )
    row = job(pg, named)
    assert (row["task_path"], row["kwargs"], row["queue_name"], row["priority"]) == (
        "billing.tasks.refund",
        {"id": 7},
        "billing",
        5,
    )
    assert job(pg, job_id)["args"] == [1]
    assert scalar(conn, "SELECT pgqueue.version()") == 1


def test_the_enqueue_only_role_gets_the_same_validation(pg, enqueuer):
    _role, conn = enqueuer
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="queue_name"):
        conn.execute("SELECT pgqueue.enqueue('a.b', queue_name => 'x; DROP TABLE pgqueue_job')")
    assert count_jobs(pg) == 0


TABLE_STATEMENTS = [
    "SELECT * FROM public.{table}",
    "SELECT count(*) FROM public.{table}",
    "UPDATE public.{table} SET {column} = {column}",
    "DELETE FROM public.{table}",
    "INSERT INTO public.{table} DEFAULT VALUES",
    "TRUNCATE public.{table}",
]


def test_the_enqueue_only_role_cannot_touch_the_tables(pg, enqueuer, subtests):
    _role, conn = enqueuer
    job_id = scalar(conn, "SELECT pgqueue.enqueue('a.b')")
    before = job(pg, job_id)
    columns = {"pgqueue_job": "status", "pgqueue_worker": "pid", "pgqueue_queue": "paused"}
    for table, column in columns.items():
        for statement in TABLE_STATEMENTS:
            sql = statement.format(table=table, column=column)
            with subtests.test(sql=sql):
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                    conn.execute(sql)
                assert count_jobs(pg) == 1
                assert job(pg, job_id) == before


def test_the_enqueue_only_role_can_call_no_other_function(pg, enqueuer):
    _role, conn = enqueuer
    job_id = scalar(conn, "SELECT pgqueue.enqueue('a.b')")
    others = [
        (sig, name, types)
        for sig, name, types in pgqueue_functions(pg)
        if name not in ("enqueue", "version")
    ]
    names = {name for _sig, name, _types in others}
    assert {
        "enqueue_many",
        "claim_v1",
        "cancel",
        "retry",
        "prune",
        "pause_queue",
        "reap_v1",
    } <= names
    for _signature, name, types in others:
        with pytest.raises(
            psycopg.errors.InsufficientPrivilege, match="permission denied for function"
        ):
            conn.execute(call_with_nulls(name, types))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT pgqueue.cancel(%s)", (job_id,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM pgqueue.claim_v1(gen_random_uuid(), '{*}', 1)")
    assert job(pg, job_id)["status"] == "ready"


def test_granting_enqueue_many_too_is_all_it_takes_to_use_it(pg, enqueuer):
    role, conn = enqueuer
    pg.execute(f'GRANT EXECUTE ON FUNCTION pgqueue.enqueue_many(jsonb) TO "{role}"')
    ids = scalar(
        conn, "SELECT pgqueue.enqueue_many(%s::jsonb)", json.dumps([{"task_path": "a.b"}] * 3)
    )
    assert len(ids) == 3 == count_jobs(pg)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT pgqueue.prune('0 seconds')")


def test_no_function_but_version_is_executable_by_public(pg):
    rows = pg.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'pgqueue' AND EXISTS ("
        "  SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a "
        "  WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')"
    ).fetchall()
    assert [r[0] for r in rows] == ["pgqueue.version()"]


def test_a_role_without_grants_can_execute_nothing_but_version(pg, roles):
    role = roles.create("pgq_nobody")
    rows = pg.execute(
        "SELECT p.oid::regprocedure::text, has_function_privilege(%s, p.oid, 'EXECUTE') "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgqueue'",
        (role,),
    ).fetchall()
    assert len(rows) > 20
    assert sorted(sig for sig, allowed in rows if allowed) == ["pgqueue.version()"]
    for table in TABLES:
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"):
            assert (
                scalar(
                    pg, "SELECT has_table_privilege(%s, %s, %s)", role, f"public.{table}", privilege
                )
                is False
            )
    assert scalar(pg, "SELECT has_schema_privilege(%s, 'pgqueue', 'CREATE')", role) is False
    assert scalar(pg, "SELECT has_schema_privilege(%s, 'pgqueue', 'USAGE')", role) is False


def test_every_function_pins_its_search_path(pg):
    rows = pg.execute(
        "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgqueue'"
    ).fetchall()
    assert len(rows) > 20
    for signature, config in rows:
        assert config is not None and "search_path=pg_catalog, pg_temp" in config, signature


def test_the_public_api_runs_as_its_owner_and_private_helpers_are_not_exposed(pg):
    rows = pg.execute(
        "SELECT p.proname, p.prosecdef, p.proacl IS NULL OR NOT EXISTS ("
        "  SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee <> p.proowner) "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgqueue'"
    ).fetchall()
    for name, security_definer, owner_only in rows:
        if name.startswith("_"):
            assert owner_only, f"private helper {name} is granted to someone"
        elif name != "version":
            assert security_definer, f"{name} is not SECURITY DEFINER"


def test_callers_objects_that_shadow_names_are_never_used(pg, enqueuer):
    """A caller's functions, operators and tables on its search_path (and in pg_temp) change nothing."""
    role, conn = enqueuer
    pg.execute(f'CREATE SCHEMA "{role}" AUTHORIZATION "{role}"')
    job_columns = scalar(
        pg,
        "SELECT string_agg(format('%%I %%s', attname, format_type(atttypid, atttypmod)), ', ' "
        "ORDER BY attnum) FROM pg_attribute "
        "WHERE attrelid = 'public.pgqueue_job'::regclass AND attnum > 0 AND NOT attisdropped",
    )
    conn.execute(f'SET search_path = "{role}", pg_temp, pg_catalog, public')
    for schema in (f'"{role}"', "pg_temp"):
        for table in TABLES:
            columns = job_columns if table == "pgqueue_job" else "name text, id uuid"
            conn.execute(f"CREATE TABLE {schema}.{table} ({columns})")
        conn.execute(f"CREATE TABLE {schema}.calls (name text)")
        shadows = {
            "jsonb_typeof(jsonb)": "text AS $$ INSERT INTO {s}.calls VALUES ('jsonb_typeof') RETURNING 'array' $$",
            "now()": "timestamptz AS $$ INSERT INTO {s}.calls VALUES ('now') RETURNING timestamptz '2999-01-01' $$",
            "length(text)": "integer AS $$ INSERT INTO {s}.calls VALUES ('length') RETURNING 1 $$",
            "octet_length(text)": "integer AS $$ INSERT INTO {s}.calls VALUES ('octet_length') RETURNING 1 $$",
            "isfinite(timestamptz)": "boolean AS $$ INSERT INTO {s}.calls VALUES ('isfinite') RETURNING true $$",
            "pg_notify(text, text)": "void AS $$ INSERT INTO {s}.calls VALUES ('pg_notify') $$",
            "matches(text, text)": "boolean AS $$ INSERT INTO {s}.calls VALUES ('!~') RETURNING false $$",
        }
        for signature, body in shadows.items():
            conn.execute(
                f"CREATE FUNCTION {schema}.{signature} RETURNS {body.format(s=schema)} LANGUAGE sql"
            )
    conn.execute(
        f'CREATE OPERATOR "{role}".!~ (LEFTARG = text, RIGHTARG = text, FUNCTION = "{role}".matches)'
    )
    # The shadows are live for the caller's own unqualified SQL ...
    assert scalar(conn, "SELECT jsonb_typeof('{}'::jsonb)") == "array"
    assert scalar(conn, "SELECT 'a' !~ 'b'") is False
    assert scalar(conn, "SELECT count(*) FROM pgqueue_job") == 0
    conn.execute(f'TRUNCATE "{role}".calls')

    # ... but enqueue uses none of them.
    conn.execute("LISTEN pgqueue_v1")
    job_id = scalar(conn, "SELECT pgqueue.enqueue('a.b', '[1]', unique_key => 'hijack')")
    later = scalar(pg, "SELECT now() + interval '1 hour'")
    scheduled = scalar(conn, "SELECT pgqueue.enqueue('a.b', run_after => %s)", later)
    rejected = [
        "pgqueue.enqueue('a.b', '{}')",
        "pgqueue.enqueue('nodots')",
        f"pgqueue.enqueue('a.{'b' * 300}')",
        f"pgqueue.enqueue('a.b', '[\"{'x' * 1_100_000}\"]')",
        "pgqueue.enqueue('a.b', run_after => 'infinity')",
    ]
    for call in rejected:
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute(f"SELECT {call}")
    ready = job(pg, job_id)
    assert ready["status"] == "ready"
    assert abs(ready["run_after"] - scalar(pg, "SELECT now()")) < timedelta(hours=1)
    assert job(pg, scheduled)["status"] == "scheduled"
    assert count_jobs(pg) == 2
    for schema in (f'"{role}"', "pg_temp"):
        assert scalar(conn, f"SELECT count(*) FROM {schema}.calls") == 0, schema
        for table in TABLES:
            assert scalar(conn, f"SELECT count(*) FROM {schema}.{table}") == 0, (schema, table)
    notifies = [(n.channel, n.payload) for n in conn.notifies(timeout=5, stop_after=2)]
    assert notifies == [("pgqueue_v1", "default"), ("pgqueue_v1", "default")]
