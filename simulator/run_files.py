"""Writing a run folder's files: atomic text and CSV, the config as TOML, and the run-level tables merged from its
cells (results, timings, failures, ledger, rounds, attacks, leakage).

`simulator.simulate` decides what runs and when; this module owns how the results land on disk, so that the
orchestration and the file formats change apart. `simulator.sweep` writes its sweep-level tables with the same helpers.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from simulator import layout
from simulator.atomic import atomic_write
from simulator.ledger import WireLedger, summary_json

Cells = list[tuple[int, str, Path]]  # (seed, scheme, cell folder)


def merge_cells(work: Path, cells: Cells) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The run-level tables from every cell: results.csv (+ .parquet), timings.csv, failures.csv, ledger.csv,
    rounds.csv, attacks.csv and the leakage files. Returns (results, attacks or None when nothing was attacked)."""
    results = pd.concat([pd.read_csv(c / "results.csv") for *_, c in cells], ignore_index=True)
    results.to_csv(work / "results.csv", index=False, float_format="%.10g")
    maybe_parquet(results, work / "results.parquet")
    pd.concat([pd.read_csv(c / "timings.csv") for *_, c in cells], ignore_index=True).to_csv(
        work / "timings.csv", index=False, float_format="%.10g")
    write_failures(work, cells)
    ledgers = []
    for seed, _, c in cells:
        frame = WireLedger.load(c / "ledger").to_frame()
        frame["records"] = [summary_json(r) for r in frame["records"]]  # bytes as their length: no payloads here
        frame.insert(0, "seed", seed)
        ledgers.append(frame)
    pd.concat(ledgers, ignore_index=True).to_csv(work / "ledger.csv", index=False)
    curves = [pd.read_csv(c / layout.ROUNDS_FILE) for *_, c in cells if (c / layout.ROUNDS_FILE).is_file()]
    if curves:
        pd.concat(curves, ignore_index=True).to_csv(work / layout.ROUNDS_FILE, index=False, float_format="%.10g")
    attack_parts = [pd.read_csv(c / name) for *_, c in cells for name in (layout.ATTACKS_FILE, layout.AUDIT_FILE)
                    if (c / name).is_file()]
    attacks = pd.concat(attack_parts, ignore_index=True) if attack_parts else None
    if attacks is not None:
        attacks.to_csv(work / layout.ATTACKS_FILE, index=False, float_format="%.10g")
        write_leakage(work, [c for *_, c in cells])
    return results, attacks


def write_failures(work: Path, cells: Cells) -> None:
    """failures.csv: every cell's client failures with its seed (header only when nothing failed)."""
    parts = []
    for seed, _, c in cells:
        if (c / layout.FAILURES_FILE).is_file():
            frame = pd.read_csv(c / layout.FAILURES_FILE, dtype=str, keep_default_na=False)
            frame.insert(0, "seed", seed)
            parts.append(frame)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["seed", *layout.FAILURE_COLUMNS])
    atomic_csv(frame, work / layout.FAILURES_FILE)


def write_leakage(run_dir: Path, cells: list[Path]) -> None:
    """leakage_units.csv (every cell's units) and leakage.csv (calibrated over every seed at once, each seed's
    patients nested in it: attacks.calibrate)."""
    from attacks.calibrate import UNIT_COLUMNS, calibrate  # pylint: disable=import-outside-toplevel

    # null_kind is empty for membership units and text otherwise: read it as text, not guessed per chunk
    parts = [pd.read_csv(c / layout.UNITS_FILE, keep_default_na=True, dtype={"null_kind": object})
             for c in cells if (c / layout.UNITS_FILE).is_file()]
    units = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["seed", *UNIT_COLUMNS])
    for col in ("scheme", "client", "attack", "threat_model", "quantity", "unit"):
        units[col] = units[col].astype(str)
    atomic_csv(units, run_dir / layout.UNITS_FILE)
    atomic_csv(calibrate(units), run_dir / layout.LEAKAGE_FILE)


def maybe_parquet(frame: pd.DataFrame, path: Path) -> None:
    try:
        import pyarrow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        return
    frame.to_parquet(path, index=False)


def atomic_text(path: Path, text: str) -> None:
    atomic_write(path, text)


def atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic_text(path, frame.to_csv(index=False, float_format="%.10g"))


def toml_safe(value):  # noqa: ANN001, ANN202 - TOML has no None and no tuples
    if isinstance(value, dict):
        return {k: toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [toml_safe(v) for v in value]
    return value
