"""Which task a job may run: registered Task objects, or dotted paths in ALLOWED_TASKS.

Any service with enqueue rights can write any task_path, so a worker never imports
a module because a job names it: it runs a task only if the task was registered
(defined with pgqueue's task class, found by autodiscovering the ``tasks`` modules
of INSTALLED_APPS) or its path matches ALLOWED_TASKS.
"""

from __future__ import annotations

import threading
import types
from typing import TYPE_CHECKING, Any

from django.tasks import Task
from django.utils.module_loading import autodiscover_modules, import_string

from pgqueue.exceptions import TaskNotAllowed

if TYPE_CHECKING:
    from collections.abc import Iterable

_tasks: dict[str, Task] = {}
_lock = threading.Lock()


def register(task: Task) -> None:
    """Remember a task by its module_path; the first definition wins over later .using() copies."""
    with _lock:
        _tasks.setdefault(task.module_path, task)


def registered(task_path: str) -> Task | None:
    """The registered task for a path, without importing anything."""
    return _tasks.get(task_path)


def autodiscover() -> None:
    """Import the ``tasks`` module of every installed app, registering the tasks they define."""
    autodiscover_modules("tasks")


def is_allowed(task_path: str, allowed: Iterable[str]) -> bool:
    """Whether ALLOWED_TASKS admits a path: an exact entry, or an entry 'prefix.*'."""
    for entry in allowed:
        if entry.endswith(".*"):
            if task_path.startswith(entry[:-1]):
                return True
        elif task_path == entry:
            return True
    return False


def resolve(task_path: str, allowed: Iterable[str], backend_alias: str) -> Task:
    """The task to run for a job; TaskNotAllowed (nothing imported) if it may not run."""
    task = registered(task_path)
    if task is not None:
        return task
    if not is_allowed(task_path, allowed):
        raise TaskNotAllowed(
            f"task {task_path!r} is not registered and not in PGQUEUE['ALLOWED_TASKS']; the worker "
            "refused to import it. Define it with @task in an installed app's tasks module, or "
            "allow its path"
        )
    try:
        target = import_string(task_path)
    except ImportError as exc:
        raise TaskNotAllowed(f"allowed task {task_path!r} could not be imported: {exc}") from exc
    if isinstance(target, Task):
        return target
    if not callable(target):
        raise TaskNotAllowed(
            f"allowed task {task_path!r} is a {type(target).__name__}, not a function"
        )
    return _function_task(target, backend_alias)


def _function_task(func: Any, backend_alias: str) -> Task:
    from pgqueue.backend import unvalidated_task

    return unvalidated_task(func=func, backend=backend_alias)


def placeholder_task(
    task_path: str, backend_alias: str, *, queue_name: str = "default", priority: int = 0
) -> Task:
    """A Task whose module_path is ``task_path`` but that cannot be called.

    Used for results of jobs whose task this process does not know (enqueued by
    path, by another service, or no longer defined), so ``get_result()`` works for
    every job without importing anything.
    """
    from pgqueue.backend import unvalidated_task

    module, _, name = task_path.rpartition(".")

    def unknown_task(*args: Any, **kwargs: Any) -> Any:
        raise TaskNotAllowed(f"task {task_path!r} is not known to this process")

    func = types.FunctionType(unknown_task.__code__, {}, name, None, unknown_task.__closure__)
    func.__module__ = module
    func.__qualname__ = name
    return unvalidated_task(
        func=func, backend=backend_alias, queue_name=queue_name, priority=priority
    )
