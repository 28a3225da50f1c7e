"""pgqueue: background jobs for Django on the PostgreSQL you already have.

The public API (``pgqueue.enqueue`` and friends) is imported lazily so that
importing the package does not need configured Django settings.
"""

from typing import Any

__all__ = [
    "cancel",
    "enqueue",
    "enqueue_many",
    "get_result",
    "pause_queue",
    "prune",
    "resume_queue",
    "retry",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from pgqueue import api

        return getattr(api, name)
    raise AttributeError(f"module 'pgqueue' has no attribute {name!r}")
