"""Reading resource props as Pulumi hands them to a policy pack.

During preview any value may be unknown (it depends on an output not yet
computed); the engine marks it with one of these sentinel strings, the same
ones pulumi_policy.proxy defines. A check whose input is unknown is skipped,
never reported: `get` returns UNKNOWN for it, `each` drops it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

UNKNOWN_SENTINELS = frozenset({
    "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",  # boolean
    "3eeb2bf0-c639-47a8-9e75-3b44932eb421",  # number
    "04da6b54-80e4-46f7-96ec-b56ff0331ba9",  # string (what the engine sends for any unknown)
    "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",  # array
    "030794c1-ac77-496b-92df-f27374a8bd58",  # asset
    "e48ece36-62e2-4504-bad9-02848725956a",  # archive
    "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",  # object
})
UNKNOWN_STRING = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


class _Unknown:
    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN: Any = _Unknown()


def is_unknown(value: Any) -> bool:
    return value is UNKNOWN or (isinstance(value, str) and value in UNKNOWN_SENTINELS)


def get(obj: Any, *path: str) -> Any:
    """obj[path[0]][path[1]]...: UNKNOWN if a step is unknown, None if one is missing."""
    current = obj
    for key in path:
        if is_unknown(current):
            return UNKNOWN
        if not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return UNKNOWN if is_unknown(current) else current


def each(value: Any) -> list[Any]:
    """The known items of a list (an unknown or missing list has none to check)."""
    if not isinstance(value, list):
        return []
    return [item for item in value if not is_unknown(item)]


def number(value: Any) -> float | None:
    """A known number (the engine sends every number as a float), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
