"""`mupriv compare`: several runs side by side, one column per run, one row per (scheme, quantity)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd
from rich.markup import escape
from rich.table import Table

from simulator.errors import MuprivError
from simulator.report.document import Table as DocTable
from simulator.report.document import to_markdown
from simulator.report.fmt import MISSING, fmt_leakage, fmt_stat
from simulator.report.load import RunData, load_run
from simulator.report.tables import LEAKAGE, QUANTITIES, scheme_key, scheme_summary

COMPARE_QUANTITIES = ("personal_macro_f1", "personal_macro_auroc", "improvement_macro_auroc", "forgetting_macro_auroc",
                      "bytes_up", "bytes_down", "trainable_params", "epsilon", *(q.key for q in LEAKAGE))
_LEAKAGE_KEYS = {q.key for q in LEAKAGE}


def run_labels(runs: Sequence[RunData]) -> list[str]:
    """Column names: the folder names, or the paths as given where two folders share a name."""
    names = [r.name for r in runs]
    labels = [str(r.run_dir) if names.count(r.name) > 1 else r.name for r in runs]
    if len(set(labels)) != len(labels):
        raise MuprivError(f"the same run folder is given twice ({', '.join(labels)}): pass each run once")
    return labels


def _load(run_dirs: Sequence[str | Path | RunData]) -> list[RunData]:
    if not run_dirs:
        raise MuprivError("no run folders given: pass one or more folders written by `mupriv simulate`")
    return [r if isinstance(r, RunData) else load_run(r) for r in run_dirs]


def comparison_long(runs: Sequence[RunData]) -> pd.DataFrame:
    """Every run's scheme_summary rows of COMPARE_QUANTITIES, with a `run` column."""
    frames = [scheme_summary(r).assign(run=label) for r, label in zip(runs, run_labels(runs))]
    long = pd.concat(frames, ignore_index=True)
    return long[long["quantity"].isin(COMPARE_QUANTITIES)].reset_index(drop=True)


def _row_order(long: pd.DataFrame) -> list[tuple[str, str]]:
    keys = set(zip(long["scheme"], long["quantity"]))
    rank = {q: i for i, q in enumerate(COMPARE_QUANTITIES)}
    return sorted(keys, key=lambda k: (scheme_key(k[0]), rank[k[1]]))


def compare_runs(run_dirs: Sequence[str | Path | RunData]) -> pd.DataFrame:
    """Means side by side: index (scheme, quantity), one column per run; NaN where a run lacks it."""
    runs = _load(run_dirs)
    long = comparison_long(runs)
    labels = run_labels(runs)
    means = {(r.run, r.scheme, r.quantity): float(r.mean) for r in long.itertuples(index=False)}
    order = _row_order(long)
    data = {label: [means.get((label, s, q), math.nan) for s, q in order] for label in labels}
    index = pd.MultiIndex.from_arrays([[s for s, _ in order], [q for _, q in order]], names=["scheme", "quantity"])
    return pd.DataFrame(data, index=index).rename_axis(columns="run")


def comparison_cells(runs: Sequence[RunData]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows (scheme, quantity label, one cell per run)."""
    labels = run_labels(runs)
    long = comparison_long(runs)
    rows = []
    for scheme, quantity in _row_order(long):
        q = QUANTITIES[quantity]
        row = [scheme, q.label]
        for label in labels:
            hit = long[(long["run"] == label) & (long["scheme"] == scheme) & (long["quantity"] == quantity)]
            if hit.empty:
                row.append(MISSING)
            elif quantity in _LEAKAGE_KEYS:
                row.append(fmt_leakage(hit.iloc[0].to_dict(), ci=False))
            else:
                row.append(fmt_stat(hit.iloc[0].to_dict(), q.kind, ci=False))
        rows.append(row)
    return ["scheme", "quantity", *labels], rows


def compare_markdown(run_dirs: Sequence[str | Path | RunData]) -> str:
    runs = _load(run_dirs)
    header, rows = comparison_cells(runs)
    table = DocTable(header, rows, caption="mean ± sd over clients (mean over seeds); leakage: the verdict and gain of the "
                                           "calibrated attack with the strongest evidence")
    return to_markdown("mupriv comparison", [table])


def compare_table(run_dirs: Sequence[str | Path | RunData]) -> Table:
    """The same comparison as a rich table; a rule between schemes."""
    runs = _load(run_dirs)
    header, rows = comparison_cells(runs)
    table = Table(title="mean ± sd over clients")
    table.add_column(header[0], style="bold", no_wrap=True)
    table.add_column(header[1])
    for h in header[2:]:
        table.add_column(escape(h), justify="right")
    previous = None
    for row in rows:
        if previous is not None and row[0] != previous:
            table.add_section()
        table.add_row(*(escape(c) for c in ([row[0] if row[0] != previous else "", *row[1:]])))
        previous = row[0]
    return table
