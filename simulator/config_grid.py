"""A sweep's grid: axes of dotted config keys and their values, every combination of them, and the points' names.

Pure vocabulary, shared by the config (a config file's ``[sweep]`` table is checked point by point when it loads,
simulator.config), the sweep runner (simulator.sweep) and the command line (``--set``, ``--sweep``). It imports no
other project module, so the config can use it without an import circle.
"""
from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.errors import MuprivError

Setting = tuple[str, Any]


@dataclass(frozen=True)
class Axis:
    key: str
    values: tuple[Any, ...]


def parse_value(text: str) -> Any:
    """A TOML value (number, bool, string, list); bare words are strings (``start`` = ``"start"``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(expr: str, flag: str = "--set") -> Setting:
    key, sep, value = expr.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise MuprivError(f"{flag} {expr!r}: write KEY=VALUE with a dotted config key, e.g. {flag} train.lr=3e-3")
    return key.strip(), parse_value(value.strip())


def parse_sweep(expr: str) -> Axis:
    key, sep, values = expr.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or not items:
        raise MuprivError(f"--sweep {expr!r}: write KEY=V1,V2,... with a dotted config key, e.g. "
                          "--sweep schemes.dp-fedavg.noise_multiplier=0.5,1,2,4")
    return Axis(key.strip(), tuple(parse_value(v) for v in items))


def sweep_table_axes(table: Any, source: str) -> tuple[Axis, ...]:
    """The axes of a config's ``[sweep]`` table: ``"dotted.key" = [v1, v2, ...]``."""
    if not isinstance(table, dict):
        raise MuprivError(f"{source}: [sweep] must be a table of \"dotted.key\" = [values], e.g. "
                          "\"schemes.dp-fedavg.noise_multiplier\" = [0.5, 1.0]")
    axes = []
    for key, values in _flatten(table).items():
        if not isinstance(values, list) or not values:
            raise MuprivError(f"{source}: sweep.{key} must be a non-empty list of values, got {values!r}")
        axes.append(Axis(key, tuple(values)))
    return tuple(axes)


def config_axes(path: Path | None) -> tuple[Axis, ...]:
    """The axes of the [sweep] table of a config file (none without one)."""
    if path is None or not Path(path).is_file():
        return ()
    table = tomllib.loads(Path(path).read_text()).get("sweep")
    return () if table is None else sweep_table_axes(table, str(path))


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    """TOML parses an unquoted dotted key into nested tables; quoted or not, a sweep key is the dotted path."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        out.update(_flatten(value, full) if isinstance(value, dict) else {full: value})
    return out


def grid(axes: tuple[Axis, ...]) -> list[tuple[Setting, ...]]:
    """Every combination of the axes' values, the first axis slowest."""
    return [tuple(zip((a.key for a in axes), combo)) for combo in itertools.product(*(a.values for a in axes))]


def point_names(points: list[tuple[Setting, ...]]) -> list[str]:
    width = max(2, len(str(len(points) - 1)))
    return [f"p{i:0{width}d}" for i in range(len(points))]


def toml_text(value: Any) -> str:
    """A value as it would be written in TOML (the sweep.csv cell and the report's labels)."""
    import tomli_w  # pylint: disable=import-outside-toplevel

    return tomli_w.dumps({"v": value}).strip().removeprefix("v = ")
