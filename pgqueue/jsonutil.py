"""Strict JSON for job arguments, results and output: what is stored is what comes back."""

import json
import math
from typing import Any

_SCALARS = (str, int, float, bool, type(None))
#: Exactly these types come back from storage as they went in (most results are one of them).
_UNCHANGED = frozenset((str, int, bool, type(None)))


def find_non_json(value: Any, path: str) -> str | None:
    """Return a description of the first value under ``value`` that is not plain JSON, or None."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"{where} is {item!r}, which JSON cannot represent"
        if isinstance(item, _SCALARS):
            continue
        if isinstance(item, list | tuple):
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, dict):
            for key, v in item.items():
                if not isinstance(key, str):
                    return f"{where} has a non-string key {key!r}"
                stack.append((v, f"{where}[{key!r}]"))
        else:
            return f"{where} is {type(item).__name__} {_short_repr(item)}, which is not JSON-serialisable"
    return None


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
    if type(value) in _UNCHANGED:
        return value
    return json.loads(dumps(value, path))
