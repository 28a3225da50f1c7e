"""Strict JSON for job arguments, results and output: what is stored is what comes back."""

import json
import math
import re
from typing import Any

_SCALARS = (str, int, float, bool, type(None))
#: Exactly these types come back from storage as they went in (most results are one of them).
_UNCHANGED = frozenset((str, int, bool, type(None)))
#: PostgreSQL's jsonb and text cannot hold U+0000, so no stored string may contain it.
_NUL = "\x00"
_NUL_PROBLEM = "a NUL character (\\u0000), which PostgreSQL cannot store"
#: Nor can text that is not valid Unicode: a lone surrogate has no UTF-8 encoding.
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """Why PostgreSQL cannot store the string ``text``, or None."""
    if _NUL in text:
        return _NUL_PROBLEM
    if not text.isascii() and (match := _SURROGATE.search(text)):
        return (
            f"an unpaired surrogate ({ascii(match.group())[1:-1]}), which is not valid Unicode text"
        )
    return None


def _storable(text: str) -> bool:
    return _NUL not in text and (text.isascii() or not _SURROGATE.search(text))


def is_flat(value: Any) -> bool:
    """Whether ``value`` is a list of str, int, bool or None, or a dict from str to those
    (no string holding a NUL): valid JSON that storage gives back unchanged, so it needs
    no deeper check or copy. Most job arguments are; this test is much cheaper than the
    general ones."""
    if type(value) is list:
        return all(
            (kind := type(item)) in _UNCHANGED and (kind is not str or _storable(item))
            for item in value
        )
    if type(value) is dict:
        return all(
            type(key) is str
            and _storable(key)
            and (kind := type(item)) in _UNCHANGED
            and (kind is not str or _storable(item))
            for key, item in value.items()
        )
    return False


def find_non_json(value: Any, path: str) -> str | None:
    """Return a description of the first value under ``value`` that is not plain JSON, or None."""
    if is_flat(value):
        return None
    # Each entry is (item, path of its container, key in it); a path is only built for an error.
    stack: list[tuple[Any, Any, Any]] = [(value, None, path)]
    while stack:
        item, parent, key = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"{_path(parent, key)} is {item!r}, which JSON cannot represent"
        if isinstance(item, str) and (problem := text_problem(item)):
            return f"{_path(parent, key)} contains {problem}"
        if isinstance(item, _SCALARS):
            continue
        where = (parent, key)
        if isinstance(item, list | tuple):
            stack.extend((v, where, i) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    return f"{_path(parent, key)} has a non-string key {k!r}"
                if problem := text_problem(k):
                    return f"{_path(parent, key)} has a key {k!r} that contains {problem}"
                stack.append((v, where, repr(k)))
        else:
            return (
                f"{_path(parent, key)} is {type(item).__name__} {_short_repr(item)}, "
                "which is not JSON-serialisable"
            )
    return None


def _path(parent: Any, key: Any) -> str:
    """The printed path of an item from its (container, key) chain: args[0]['name']."""
    parts = []
    while parent is not None:
        parts.append(f"[{key}]")
        parent, key = parent
    return key + "".join(reversed(parts))


def storable_text(text: str) -> str:
    """``text`` with each NUL written as the four characters \\x00 and each unpaired
    surrogate as its \\u escape, so that PostgreSQL can store it (for error messages
    and tracebacks, which are not job data and must be stored whatever they hold)."""
    text = text.replace(_NUL, "\\x00")
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def dumps(value: Any, path: str) -> str:
    """Serialise ``value`` as strict JSON; raise TypeError naming the offending part."""
    problem = find_non_json(value, path)
    if problem is not None:
        raise TypeError(problem)
    return json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def normalize(value: Any, path: str) -> Any:
    """Return ``value`` as it will come back from storage (tuples become lists); TypeError if not JSON."""
    kind = type(value)
    if kind in _UNCHANGED and (kind is not str or _storable(value)):
        return value
    return json.loads(dumps(value, path))
