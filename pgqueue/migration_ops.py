"""Migration operations that install pgqueue's versioned SQL on PostgreSQL.

On PostgreSQL the SQL files in ``sql/`` create the tables, indexes and functions,
so they are the single source of truth there. On other databases (SQLite) the
same tables are created from the Django models, and the lifecycle runs in Python.
"""

from django.db.migrations.operations.base import Operation

from pgqueue.sqlfiles import render_sql


def _tables_schema(schema_editor) -> str:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        schema = cursor.fetchone()[0]
    if schema is None:
        raise RuntimeError(
            "pgqueue cannot be installed: the connection's search_path names no existing schema "
            "to create its tables in"
        )
    return schema_editor.quote_name(schema)


class InstallSQL(Operation):
    """Apply ``sql/<name>.sql`` on PostgreSQL, and ``sql/<name>_reverse.sql`` to undo it."""

    reversible = True
    reduces_to_sql = True
    atomic = True

    def __init__(self, name: str):
        self.name = name

    def deconstruct(self):
        return (self.__class__.__qualname__, [self.name], {})

    def state_forwards(self, app_label, state):
        pass

    def _run(self, schema_editor, file_name: str) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        schema_editor.execute(render_sql(file_name, _tables_schema(schema_editor)), params=None)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        self._run(schema_editor, self.name)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        self._run(schema_editor, f"{self.name}_reverse")

    def describe(self):
        return f"Install pgqueue SQL {self.name} (PostgreSQL only)"


class PortableTables(Operation):
    """Run model operations on databases other than PostgreSQL; always record them in the state."""

    reversible = True
    reduces_to_sql = True

    def __init__(self, operations):
        self.operations = operations

    def deconstruct(self):
        return (self.__class__.__qualname__, [self.operations], {})

    def state_forwards(self, app_label, state):
        for operation in self.operations:
            operation.state_forwards(app_label, state)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return
        for operation in self.operations:
            next_state = from_state.clone()
            operation.state_forwards(app_label, next_state)
            operation.database_forwards(app_label, schema_editor, from_state, next_state)
            from_state = next_state

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return
        states = [from_state]
        for operation in self.operations:
            next_state = states[-1].clone()
            operation.state_forwards(app_label, next_state)
            states.append(next_state)
        for operation, before, after in reversed(
            list(zip(self.operations, states[:-1], states[1:], strict=True))
        ):
            operation.database_backwards(app_label, schema_editor, after, before)

    def describe(self):
        return "Create pgqueue tables from the models (databases other than PostgreSQL)"
