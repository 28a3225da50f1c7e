"""Pick the driver for a Django database alias by its vendor."""

from functools import cache

from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from pgqueue.drivers.base import Driver


@cache
def get_driver(alias: str) -> Driver:
    """The driver for ``alias``: PostgreSQL (SQL functions, NOTIFY) or SQLite (polling)."""
    vendor = connections[alias].vendor
    if vendor == "postgresql":
        from pgqueue.drivers.postgresql import PostgresDriver

        return PostgresDriver(alias)
    if vendor == "sqlite":
        from pgqueue.drivers.sqlite import SQLiteDriver

        return SQLiteDriver(alias)
    raise ImproperlyConfigured(
        f"pgqueue supports PostgreSQL and SQLite; database {alias!r} is {vendor}"
    )
