"""Checks of user-given numbers shared by the Python API and the command line: one wording for every command."""
from __future__ import annotations


def require_at_least(name: str, value, minimum) -> None:
    """Raise ValueError unless `value` is a number >= `minimum` (e.g. frames >= 1, workers >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")


def require_positive(name: str, value) -> None:
    """Raise ValueError unless `value` is a number > 0 (sizes, rates)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


def require_in_unit_interval(name: str, value) -> None:
    """Raise ValueError unless 0 <= `value` <= 1 (probabilities, thresholds, fractions)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
