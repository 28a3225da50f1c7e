"""Plain functions (no @task) that tests/settings.py allows by dotted path."""


def double(value):
    return value * 2


NOT_CALLABLE = 42
