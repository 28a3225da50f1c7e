"""Read the versioned SQL files shipped in ``pgqueue.sql`` and render them for a database."""

from importlib.resources import files

#: The SQL API version this Python code was written for; ``pgqueue.version()`` must match it.
SQL_VERSION = 1

#: Replaced by the quoted schema of Django's tables (see sql/0001_initial.sql).
TABLES_SCHEMA_TOKEN = "@tables@"


def read_sql(name: str) -> str:
    """Return the text of ``sql/<name>.sql``."""
    return files("pgqueue.sql").joinpath(f"{name}.sql").read_text(encoding="utf-8")


def render_sql(name: str, quoted_tables_schema: str) -> str:
    """Return ``sql/<name>.sql`` with its tables qualified by the given (already quoted) schema."""
    return read_sql(name).replace(TABLES_SCHEMA_TOKEN, quoted_tables_schema)
