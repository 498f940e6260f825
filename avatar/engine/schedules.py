"""Loss-weight schedules: every loss term ``loss_<name>`` is weighted by ``lambda_<name>``.

A weight is a number (constant) or ``[start_step, start_value, end_value, end_step]``: linear
from start_value at start_step to end_value at end_step, constant outside (threestudio's form).
Schedules are pure functions of the global step, so resuming a run restores them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def validate_weight(name: str, spec: Any) -> None:
    if isinstance(spec, bool):
        raise ValueError(f"`{name}` must be a number or [start_step, start_value, end_value, end_step], got {spec!r}")
    if isinstance(spec, (int, float)):
        _check_value(name, spec, spec)
        return
    if isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) == 4:
        start_step, start_value, end_value, end_step = spec
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in spec) and end_step > start_step:
            for value in (start_value, end_value):
                _check_value(name, value, spec)
            return
    raise ValueError(
        f"`{name}` must be a number or [start_step, start_value, end_value, end_step] with "
        f"end_step > start_step, got {spec!r}"
    )


def _check_value(name: str, value: float, spec: Any) -> None:
    if not math.isfinite(value):
        raise ValueError(f"`{name}={spec}`: a loss weight must be a finite number")
    if value < 0:
        raise ValueError(
            f"`{name}={spec}`: a loss weight must be >= 0 (a negative weight maximises the term); "
            f"to ablate the term set it to 0"
        )


def weight_at(spec: Any, step: int) -> float:
    if isinstance(spec, (int, float)):
        return float(spec)
    start_step, start_value, end_value, end_step = (float(x) for x in spec)
    t = min(max((step - start_step) / (end_step - start_step), 0.0), 1.0)
    return start_value + t * (end_value - start_value)


def is_always_zero(spec: Any) -> bool:
    """A term whose weight is zero at every step is never computed."""
    if isinstance(spec, (int, float)):
        return spec == 0
    return spec[1] == 0 and spec[2] == 0
