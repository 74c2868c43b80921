"""The one exception type for input a user has to fix, and the checks every settings class uses to raise it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """Bad input, with a message that names the field or file and the fix.

    The CLI prints it as a one-line error and exits with status 2 instead of a traceback.
    """


def _fix(fix: str) -> str:
    return f": {fix}." if fix else "."


def check_int(field: str, value: object, minimum: int = 1, fix: str = "") -> int:
    """`value` if it is an integer (not a bool) >= `minimum`; else a ConfigError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{field} must be {wanted}, got {value!r}{_fix(fix)}")
    return value


def check_number(field: str, value: object, minimum: float = 0.0, what: str = "a finite number") -> float:
    """`value` as a float if it is a finite real number (not a bool) >= `minimum`; else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{field} must be {what} >= {minimum:g}, got {value!r}.")
    return float(value)


def check_choice(field: str, value: T, choices: Sequence[T]) -> T:
    """`value` if it is one of `choices`; else a ConfigError listing them (None shown as null)."""
    if value not in choices:
        names = ["null" if c is None else repr(c) for c in choices]
        listed = " or ".join(names) if len(names) == 2 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise ConfigError(f"{field} must be {listed}, got {value!r}.")
    return value
