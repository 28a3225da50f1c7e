"""Run each contract test against both drivers: PostgreSQL (the SQL functions) and SQLite (Python).

A test that takes ``alias`` runs twice, once per database, with pgqueue's API
(``PGQUEUE['DATABASE']``) pointed at it; ``driver`` is that database's driver,
whose worker operations the tests call as a worker would.
"""

from collections.abc import Iterator

import pytest
from django.db.models import QuerySet
from django.test import override_settings

from pgqueue.drivers import get_driver
from pgqueue.drivers.base import Driver
from pgqueue.models import Job, Worker


@pytest.fixture(params=["default", "sqlite"], ids=["postgresql", "sqlite"])
def alias(request) -> Iterator[str]:
    """The database alias under test; pgqueue's API is pointed at it."""
    with override_settings(PGQUEUE={"DATABASE": request.param, "BACKOFF_BASE": 0.05}):
        yield request.param


@pytest.fixture
def driver(alias) -> Driver:
    return get_driver(alias)


@pytest.fixture
def jobs(alias) -> QuerySet[Job]:
    """The Job manager on the database under test."""
    return Job.objects.using(alias)


@pytest.fixture
def workers(alias) -> QuerySet[Worker]:
    """The Worker manager on the database under test."""
    return Worker.objects.using(alias)
