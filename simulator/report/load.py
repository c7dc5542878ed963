"""Read a run folder (`runs/<name>-<time>/`) into frames, with one-line errors for bad input.

Only ``results.csv`` is required. ``timings.csv`` (wall times), ``failures.csv``, ``attacks.csv``, ``ledger.csv``,
``rounds.csv`` (the per-round curves), ``manifest.json``, ``config.toml`` and ``plots/*.png`` are used when present;
a report of a run that has no attacks yet is still a report.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from simulator import layout
from simulator.errors import MuprivError

RESULTS_NAME = "results.csv"
TIMINGS_NAME = "timings.csv"
ATTACKS_NAME = "attacks.csv"
LEAKAGE_NAME = "leakage.csv"
UNITS_NAME = "leakage_units.csv"
LEDGER_NAME = "ledger.csv"
FAILURES_NAME = "failures.csv"
FAILURES_COLUMNS = ("scheme", "client", "round", "error")
MANIFEST_NAME = "manifest.json"
CONFIG_NAME = "config.toml"
PLOTS_DIR = "plots"

RESULTS_COLUMNS = ("seed", "scheme", "client", "metric", "value")
ROUNDS_COLUMNS = ("seed", "scheme", "round", "client", "metric", "value")
ATTACKS_COLUMNS = ("seed", "scheme", "client", "attack", "threat_model", "metric", "value")
LEDGER_COLUMNS = ("scheme", "direction", "bytes")

_REWRITE = "re-run `mupriv simulate` to rewrite it"


@dataclass(frozen=True)
class RunData:
    """Everything a report is made of, read from one run folder."""

    run_dir: Path
    results: pd.DataFrame  # seed:int, scheme, client, metric: str, value: float (NaN allowed)
    attacks: pd.DataFrame | None = None  # seed, scheme, client, round, attack, threat_model, metric, value, settings
    leakage: pd.DataFrame | None = None  # attacks.calibrate.LEAKAGE_COLUMNS: calibrated gains, intervals, verdicts
    ledger: pd.DataFrame | None = None  # one row per message; at least scheme, direction, bytes
    failures: pd.DataFrame | None = None  # one row per client failure: (seed,) scheme, client, round, message_type, error
    rounds: pd.DataFrame | None = None  # rounds.csv: seed, scheme, round:int, client, metric, value
    manifest: dict[str, Any] = field(default_factory=dict)
    config_text: str | None = None
    reconstruction_plots: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        return self.run_dir.name


def load_run(run_dir: str | Path) -> RunData:
    """Read and validate a run folder; raise `MuprivError` naming the file and the fix."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise MuprivError(f"run folder {run_dir} does not exist: pass a folder written by `mupriv simulate` (runs/<name>-<time>/)")
    if not run_dir.is_dir():
        raise MuprivError(f"{run_dir} is not a folder: pass a run folder written by `mupriv simulate` (runs/<name>-<time>/)")
    results_path = run_dir / RESULTS_NAME
    if not results_path.is_file():
        raise MuprivError(f"{results_path} is missing: {run_dir} is not a finished run; "
                          f"finish it with `mupriv simulate --resume {run_dir}`")
    results = _read_long_csv(results_path, RESULTS_COLUMNS, text=("scheme", "client", "metric"))
    if results.empty:
        raise MuprivError(f"{results_path} has no rows: the run recorded no results; {_REWRITE}")

    if (run_dir / TIMINGS_NAME).is_file():  # measured wall times, kept apart so results.csv is reproducible
        timings = _read_long_csv(run_dir / TIMINGS_NAME, RESULTS_COLUMNS, text=("scheme", "client", "metric"))
        results = pd.concat([results, timings], ignore_index=True)

    attacks = ledger = None
    if (run_dir / ATTACKS_NAME).is_file():
        attacks = _read_long_csv(run_dir / ATTACKS_NAME, ATTACKS_COLUMNS,
                                 text=("scheme", "client", "attack", "threat_model", "metric", "settings"))
        if "round" in attacks.columns:
            attacks["round"] = pd.to_numeric(attacks["round"], errors="coerce")
    if (run_dir / LEDGER_NAME).is_file():
        ledger = _read_ledger(run_dir / LEDGER_NAME)
    leakage = _read_leakage(run_dir)
    failures = None
    if (run_dir / FAILURES_NAME).is_file():
        failures = _read_csv(run_dir / FAILURES_NAME)
        _require_columns(failures, run_dir / FAILURES_NAME, FAILURES_COLUMNS)
        if "seed" not in failures.columns:  # a run-scheme folder: one seed
            failures.insert(0, "seed", "")
    rounds = None
    if (run_dir / layout.ROUNDS_FILE).is_file():
        rounds = _read_long_csv(run_dir / layout.ROUNDS_FILE, ROUNDS_COLUMNS, text=("scheme", "client", "metric"))
        rounds["round"] = _numbers(rounds, "round", run_dir / layout.ROUNDS_FILE, integer=True)

    plots_dir = run_dir / PLOTS_DIR
    plots = tuple(sorted(plots_dir.glob("*.png"))) if plots_dir.is_dir() else ()
    config_path = run_dir / CONFIG_NAME
    return RunData(run_dir=run_dir, results=results, attacks=attacks, leakage=leakage, ledger=ledger, failures=failures,
                   rounds=rounds,
                   manifest=_read_manifest(run_dir / MANIFEST_NAME),
                   config_text=config_path.read_text(encoding="utf-8") if config_path.is_file() else None,
                   reconstruction_plots=plots)


def _read_leakage(run_dir: Path) -> pd.DataFrame | None:
    """leakage.csv; without it (a run attacked before it existed, or one cell) it is computed from
    leakage_units.csv when that is there."""
    from attacks.calibrate import LEAKAGE_COLUMNS, UNIT_COLUMNS, calibrate  # pylint: disable=import-outside-toplevel

    path = run_dir / LEAKAGE_NAME
    if path.is_file():
        frame = _read_csv(path)
        _require_columns(frame, path, [c for c in LEAKAGE_COLUMNS if c != "null_kind"])
        if "null_kind" not in frame.columns:
            frame["null_kind"] = ""
        for c in ("estimate", "null", "gain", "ci_low", "ci_high", "level", "compared", "n_units", "n_clients"):
            frame[c] = _numbers(frame, c, path)
        return frame
    units_path = run_dir / UNITS_NAME
    if units_path.is_file():
        units = _read_csv(units_path)
        _require_columns(units, units_path, [c for c in UNIT_COLUMNS if c != "null_kind"])
        for c in ("value", "null", "label"):
            units[c] = _numbers(units, c, units_path)
        return calibrate(units)
    return None


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        # Everything as text first so that a bad cell can be named instead of silently becoming NaN.
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise MuprivError(f"{path} is empty: {_REWRITE}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MuprivError(f"{path} is not a readable CSV ({first}): {_REWRITE}") from None


def _require_columns(frame: pd.DataFrame, path: Path, required: Sequence[str]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise MuprivError(f"{path} lacks column(s) {', '.join(missing)}: expected long form with columns "
                          f"{', '.join(required)}; {_REWRITE}")


def _numbers(frame: pd.DataFrame, column: str, path: Path, *, integer: bool = False) -> pd.Series:
    """Parse a text column as numbers; empty and 'nan' cells are NaN, anything else unparsable is an error."""
    raw = frame[column].str.strip()
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & ~raw.str.lower().isin(["", "nan", "na", "none"])
    if integer:
        bad |= values.notna() & (values % 1 != 0)
        bad |= values.isna()  # a seed must be there
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        kind = "an integer" if integer else "a number (or empty / nan)"
        raise MuprivError(f"{path} line {i + 2}: {column} {frame[column].iloc[i]!r} is not {kind}; {_REWRITE}")
    return values.astype("int64") if integer else values.astype("float64")


def _read_long_csv(path: Path, required: Sequence[str], text: Sequence[str]) -> pd.DataFrame:
    frame = _read_csv(path)
    _require_columns(frame, path, required)
    frame["seed"] = _numbers(frame, "seed", path, integer=True)
    frame["value"] = _numbers(frame, "value", path)
    for c in text:
        if c in frame.columns:
            frame[c] = frame[c].astype(str)
    return frame


def _read_ledger(path: Path) -> pd.DataFrame:
    frame = _read_csv(path)
    _require_columns(frame, path, LEDGER_COLUMNS)
    frame["bytes"] = _numbers(frame, "bytes", path)
    for c in ("round", "seed"):
        if c in frame.columns:
            frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MuprivError(f"{path} is not valid JSON ({exc}): {_REWRITE}, or delete it to report without it") from None
    if not isinstance(manifest, dict):
        raise MuprivError(f"{path} holds a JSON {type(manifest).__name__}, not an object: {_REWRITE}")
    return manifest
