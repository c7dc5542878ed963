"""Value checks every config key gets from its declaration, so that no key can be forgotten.

Every float must be finite (TOML accepts ``nan`` and ``inf``, and one NaN learning rate silently turns every
weight into NaN). A key whose field metadata has a ``"range"`` (interval notation: ``"[0, 1)"``, ``"(0, inf)"``,
``"[1, inf)"``) must lie in it; `mupriv config explain` shows the range next to the key's meaning. Checks that
involve more than one key stay in `RunConfig.validate`.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from simulator.errors import MuprivError

_INTERVAL = re.compile(r"^\s*([\[(])\s*(-?inf|[-+0-9.e]+)\s*,\s*(-?inf|[-+0-9.e]+)\s*([\])])\s*$")


@dataclasses.dataclass(frozen=True)
class Interval:
    lo: float
    hi: float
    lo_closed: bool
    hi_closed: bool
    text: str

    def __contains__(self, value: float) -> bool:
        above = value >= self.lo if self.lo_closed else value > self.lo
        below = value <= self.hi if self.hi_closed else value < self.hi
        return above and below


def interval(text: str) -> Interval:
    """``"[0, 1)"`` as an Interval; a malformed one is a programming error (raised at import by the tests)."""
    m = _INTERVAL.match(text)
    if not m:
        raise ValueError(f"config range {text!r} is not interval notation like \"[0, 1)\"")
    return Interval(float(m.group(2)), float(m.group(3)), m.group(1) == "[", m.group(4) == "]", text.strip())


def allowed(field: dataclasses.Field) -> str | None:
    """The range text a field declares, if any."""
    return field.metadata.get("range")


def check_values(obj: Any, prefix: str = "") -> None:
    """Raise a MuprivError naming the first key of the config dataclass ``obj`` (sections included) whose value is
    a non-finite float or lies outside its declared range."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            check_values(value, key)
            continue
        if isinstance(value, float) and not math.isfinite(value):
            example = f" (default {f.default!r})" if isinstance(f.default, float) else ""
            raise MuprivError(f"{key} = {value!r} is not a finite number: give a number{example}")
        rng = allowed(f)
        if rng is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and value not in interval(rng):
            default = "" if f.default is dataclasses.MISSING else f" (default {f.default!r})"
            raise MuprivError(f"{key} = {value!r} is out of range: give a value in {rng}{default}")
