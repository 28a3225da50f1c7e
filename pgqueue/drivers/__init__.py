"""Pick the driver for a Django database alias by its vendor."""

import threading

from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from pgqueue.drivers.base import Driver

_drivers: dict[str, Driver] = {}
_drivers_lock = threading.Lock()


def get_driver(alias: str) -> Driver:
    """The driver for ``alias``: PostgreSQL (SQL functions, NOTIFY) or SQLite (polling).

    One driver per alias per process, so its connection pool is shared.
    """
    with _drivers_lock:
        driver = _drivers.get(alias)
        if driver is None:
            driver = _drivers[alias] = _make_driver(alias)
        return driver


def close_drivers() -> None:
    """Close every driver's own connections (the worker-side pools) and forget the drivers."""
    with _drivers_lock:
        drivers = list(_drivers.values())
        _drivers.clear()
    for driver in drivers:
        driver.close()


def _make_driver(alias: str) -> Driver:
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
