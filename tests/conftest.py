"""Fixtures shared by every test folder: a real PostgreSQL test database, migrated by pytest-django."""

from collections.abc import Iterator

import psycopg
import pytest
from django.db import connections

from pgqueue.drivers import close_drivers


def conninfo(alias: str = "default") -> dict:
    """psycopg.connect() keyword arguments for a Django database alias (the test database)."""
    params = connections[alias].get_connection_params()
    return {
        k: v
        for k, v in params.items()
        if k not in ("cursor_factory", "context", "prepare_threshold")
    }


@pytest.fixture(scope="session", autouse=True)
def _no_stray_backends_at_teardown(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Close this process's pools, and terminate backends that killed worker processes left
    behind, so the test database can be dropped."""
    yield
    close_drivers()
    with django_db_blocker.unblock(), psycopg.connect(**conninfo(), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def pg_conninfo(transactional_db) -> dict:
    """Connection keywords for the migrated test database; tables are emptied after the test."""
    return conninfo()


@pytest.fixture
def pg(pg_conninfo) -> Iterator[psycopg.Connection]:
    """A raw autocommit psycopg connection to the test database, outside Django's transactions."""
    with psycopg.connect(**pg_conninfo, autocommit=True) as conn:
        yield conn


@pytest.fixture
def pg_factory(pg_conninfo) -> Iterator:
    """Open more raw connections (autocommit unless told otherwise); all are closed after the test."""
    opened: list[psycopg.Connection] = []

    def connect(autocommit: bool = True) -> psycopg.Connection:
        conn = psycopg.connect(**pg_conninfo, autocommit=autocommit)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()
