"""Plain functions (no @task) that tests/settings.py allows by dotted path."""


def double(value):
    return value * 2


NOT_CALLABLE = 42


class _Tripler:
    """A callable object that cannot be hashed: still a task that can run."""

    def __call__(self, value):
        return value * 3

    def __hash__(self):
        raise ValueError("not hashable on purpose")


triple = _Tripler()
triple.__qualname__ = "triple"  # what Django's Task.module_path reads
