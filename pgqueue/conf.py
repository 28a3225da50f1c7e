"""pgqueue's settings: read once from ``settings.PGQUEUE``, validated, with documented defaults.

Every worker option can be set here and overridden on the command line; both paths
go through ``WorkerSettings`` so they are validated the same way.
"""

import dataclasses
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from pgqueue.queues import validate_selectors

#: max_attempts of a job when neither the task nor the caller sets one (the SQL default too).
DEFAULT_MAX_ATTEMPTS = 3


class SettingError(ValueError):
    """A setting has a bad value; ``name`` is the field, rendered by the caller as setting or option."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


def _positive_number(name: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingError(name, f"must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise SettingError(
            name, f"must be {'zero or ' if allow_zero else ''}positive, got {value!r}"
        )
    return float(value)


def _positive_int(name: str, value: Any, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingError(name, f"must be a whole number of at least 1, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """Everything a worker and the enqueue API need to know; see docs/settings.md."""

    database: str = "default"
    queues: tuple[str, ...] = ("*",)
    concurrency: int = 8
    batch_size: int | None = None
    poll_interval: float = 5.0
    heartbeat_interval: float = 5.0
    orphan_after: float = 60.0
    shutdown_timeout: float = 30.0
    backoff_base: float = 5.0
    backoff_max: float = 3600.0
    isolation: str = "thread"
    max_jobs_per_child: int | None = None
    max_jobs: int | None = None
    listen: bool = True
    prune_after: float | None = None
    vacuum_threshold: int = 10_000
    allowed_tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.database, str) or not self.database:
            raise SettingError("database", f"must name a DATABASES alias, got {self.database!r}")
        if isinstance(self.queues, str):
            set_(self, "queues", tuple(q.strip() for q in self.queues.split(",")))
        try:
            set_(self, "queues", tuple(validate_selectors(list(self.queues))))
        except ValueError as exc:
            raise SettingError("queues", str(exc)) from None
        set_(self, "concurrency", _positive_int("concurrency", self.concurrency))
        set_(self, "batch_size", _positive_int("batch_size", self.batch_size, optional=True))
        if self.batch_size is not None and self.batch_size > 1000:
            raise SettingError("batch_size", f"must be at most 1000, got {self.batch_size}")
        set_(self, "max_jobs", _positive_int("max_jobs", self.max_jobs, optional=True))
        set_(
            self,
            "max_jobs_per_child",
            _positive_int("max_jobs_per_child", self.max_jobs_per_child, optional=True),
        )
        for name in ("poll_interval", "heartbeat_interval", "orphan_after", "shutdown_timeout"):
            set_(self, name, _positive_number(name, getattr(self, name)))
        set_(
            self,
            "backoff_base",
            _positive_number("backoff_base", self.backoff_base, allow_zero=True),
        )
        set_(
            self, "backoff_max", _positive_number("backoff_max", self.backoff_max, allow_zero=True)
        )
        if self.prune_after is not None:
            set_(
                self,
                "prune_after",
                _positive_number("prune_after", self.prune_after, allow_zero=True),
            )
        if (
            isinstance(self.vacuum_threshold, bool)
            or not isinstance(self.vacuum_threshold, int)
            or self.vacuum_threshold < 0
        ):
            raise SettingError(
                "vacuum_threshold",
                f"must be a whole number of dead rows, or 0 to leave vacuuming to autovacuum, "
                f"got {self.vacuum_threshold!r}",
            )
        if self.isolation not in ("thread", "process"):
            raise SettingError(
                "isolation", f"must be 'thread' or 'process', got {self.isolation!r}"
            )
        if not isinstance(self.listen, bool):
            raise SettingError("listen", f"must be True or False, got {self.listen!r}")
        if isinstance(self.allowed_tasks, str) or not all(
            isinstance(p, str) and p for p in self.allowed_tasks
        ):
            raise SettingError(
                "allowed_tasks",
                f"must be a list of dotted paths or prefixes, got {self.allowed_tasks!r}",
            )
        set_(self, "allowed_tasks", tuple(self.allowed_tasks))
        if self.orphan_after < 3 * self.heartbeat_interval:
            raise SettingError(
                "orphan_after",
                f"({self.orphan_after:g}s) must be at least three heartbeat intervals "
                f"(heartbeat_interval is {self.heartbeat_interval:g}s), or a healthy worker's "
                "long job could be taken for an orphan",
            )

    @property
    def claim_limit(self) -> int:
        """Most jobs one claim asks for: the batch size, bounded by concurrency."""
        return min(self.batch_size or self.concurrency, self.concurrency)

    def replace(self, **changes: Any) -> "WorkerSettings":
        """Return a copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes)


SETTING_NAMES = {f.name.upper(): f.name for f in dataclasses.fields(WorkerSettings)}


def setting_label(name: str) -> str:
    """How a field is named in settings.py."""
    return f"PGQUEUE['{name.upper()}']"


#: settings.PGQUEUE when the project does not define it (never modified).
_NOT_SET: dict[str, Any] = {}
#: The last validated settings, with the PGQUEUE and DATABASES objects they were read from.
_validated: tuple[object, object, WorkerSettings] | None = None


def get_settings() -> WorkerSettings:
    """Read and validate ``settings.PGQUEUE``; raise ImproperlyConfigured naming the bad key.

    Validated once per PGQUEUE/DATABASES pair of objects (every enqueue asks, and
    validating took longer than the rest of the Python side of an enqueue); replacing
    either setting, as override_settings does, validates again.
    """
    global _validated
    raw = getattr(django_settings, "PGQUEUE", _NOT_SET)
    databases = django_settings.DATABASES
    cached = _validated
    if cached is not None and cached[0] is raw and cached[1] is databases:
        return cached[2]
    result = _read_settings(raw)
    _validated = (raw, databases, result)
    return result


def _read_settings(raw: Any) -> WorkerSettings:
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(f"settings.PGQUEUE must be a dict, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SETTING_NAMES))
    if unknown:
        raise ImproperlyConfigured(
            f"settings.PGQUEUE has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(sorted(SETTING_NAMES))}"
        )
    try:
        result = WorkerSettings(**{SETTING_NAMES[key]: value for key, value in raw.items()})
    except SettingError as exc:
        raise ImproperlyConfigured(f"{setting_label(exc.name)} {exc}") from None
    if result.database not in django_settings.DATABASES:
        raise ImproperlyConfigured(
            f"{setting_label('database')} names {result.database!r}, which is not in DATABASES"
        )
    return result
