"""Numeric bounds declared on config fields, checked when a run starts.

``max_steps: int = at_least(1, 200)`` keeps the field an ``int`` for OmegaConf's type checks and
adds the bound, so ``trainer.max_steps=0`` fails before anything runs with the key, the value
and the allowed range, instead of reporting an untrained result as a success.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any


def at_least(minimum: float, default: Any, why: str = "") -> Any:
    return dataclasses.field(default=default, metadata={"ge": minimum, "why": why})


def above(minimum: float, default: Any, why: str = "") -> Any:
    return dataclasses.field(default=default, metadata={"gt": minimum, "why": why})


def check_bounds(schema: type, values: Any, prefix: str) -> None:
    """Raise ``ValueError`` naming the first field of ``values`` (a plain dict of a config of
    dataclass ``schema``) outside its declared bound; nested dataclasses are walked too."""
    if not dataclasses.is_dataclass(schema) or not isinstance(values, dict):
        return
    for f in dataclasses.fields(schema):
        if f.name not in values:
            continue
        value, key = values[f.name], f"{prefix}.{f.name}" if prefix else f.name
        if isinstance(f.type, type) and dataclasses.is_dataclass(f.type):
            check_bounds(f.type, value, key)
            continue
        nested = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(nested):
            check_bounds(type(nested), value, key)
            continue
        if not ({"ge", "gt"} & set(f.metadata)) or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        why = f" ({f.metadata['why']})" if f.metadata.get("why") else ""
        if isinstance(value, float) and math.isnan(value):
            raise ValueError(f"`{key}=nan`: give a number")
        if "ge" in f.metadata and value < f.metadata["ge"]:
            raise ValueError(f"`{key}={value}`: must be >= {f.metadata['ge']}{why}")
        if "gt" in f.metadata and value <= f.metadata["gt"]:
            raise ValueError(f"`{key}={value}`: must be > {f.metadata['gt']}{why}")
