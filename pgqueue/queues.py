"""Queue names and queue selectors: the same rules as the SQL (pgqueue._check_queue_name)."""

import re

QUEUE_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
QUEUE_NAME_RULE = "a queue name is 1 to 64 ASCII letters, digits or the characters _ - . :"


def is_valid_queue_name(name: object) -> bool:
    return isinstance(name, str) and QUEUE_NAME_RE.fullmatch(name) is not None


def validate_selectors(selectors: list[str]) -> list[str]:
    """Check an ordered list of selectors ('*', 'name', 'prefix*'); raise ValueError naming the bad one."""
    if not selectors:
        raise ValueError(
            "must name at least one queue selector (for example '*' or 'email,default')"
        )
    for selector in selectors:
        if selector == "*":
            continue
        name = selector[:-1] if isinstance(selector, str) and selector.endswith("*") else selector
        if not is_valid_queue_name(name):
            raise ValueError(
                f"has an invalid queue selector {selector!r}: use '*', a queue name, or a name "
                f"prefix followed by '*' ({QUEUE_NAME_RULE})"
            )
    return selectors


def selector_matches(selector: str, queue_name: str) -> bool:
    """Whether a selector matches a queue; a prefix is literal, with no other wildcard."""
    if selector == "*":
        return True
    if selector.endswith("*"):
        return queue_name.startswith(selector[:-1])
    return queue_name == selector
