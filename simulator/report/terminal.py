"""The comparison table printed in the terminal at the end of `mupriv simulate` and by `mupriv report`."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from simulator.report.failures import WARN, scheme_failures
from simulator.report.fmt import MISSING, fmt_interval, fmt_stat, fmt_value
from simulator.report.load import RunData, load_run
from simulator.report.tables import leak_verdicts, lookup, run_schemes, scheme_summary

# (header, quantity) of the numeric columns, in order
_COLUMNS = (
    ("macro-F1", "personal_macro_f1"),
    ("macro-AUROC", "personal_macro_auroc"),
    ("Δ AUROC", "improvement_macro_auroc"),
    ("forgetting", "forgetting_macro_auroc"),
    ("up / client", "bytes_up"),
    ("down / client", "bytes_down"),
)
_KINDS = {"personal_macro_f1": "score", "personal_macro_auroc": "score", "improvement_macro_auroc": "delta",
          "forgetting_macro_auroc": "delta", "bytes_up": "bytes", "bytes_down": "bytes"}


def _cell(summary: pd.DataFrame, scheme: str, quantity: str, kind: str) -> str:
    row = lookup(summary, scheme, quantity)
    if row is None:
        return MISSING
    text = fmt_stat(row, kind, ci=False)
    if text != MISSING and (interval := fmt_interval(row, kind, sep=" … ")):
        text += f"\n[dim]95% {interval}[/dim]"
    return text


def _device_cell(summary: pd.DataFrame, scheme: str) -> str:
    parts = []
    for quantity, kind, unit in (("trainable_params", "count", " params"), ("flops_per_step", "flops", " FLOP/step"),
                                 ("peak_memory_bytes", "bytes", " peak")):
        row = lookup(summary, scheme, quantity)
        if row is not None and fmt_stat(row, kind, ci=False) != MISSING:
            # "22.4 G" + " FLOP/step" -> "22.4G FLOP/step"
            parts.append((fmt_value(row["mean"], kind).replace(" ", "") if kind == "flops" else fmt_value(row["mean"], kind)) + unit)
    return "\n".join(parts) if parts else MISSING


# Below this width the comparison is printed as two tables (accuracy and bytes; cost and privacy)
WIDE = 170


def comparison_tables(run: str | Path | RunData, width: int = WIDE) -> list[Table]:
    """One row per scheme: accuracy, forgetting, bytes, device cost, ε, the kinds of leakage detected;
    split over two tables when the terminal is narrower than `WIDE`."""
    run = run if isinstance(run, RunData) else load_run(run)
    summary = scheme_summary(run)
    failures = scheme_failures(run)
    seeds = run.results["seed"].nunique()
    title = f"{run.name}: mean ± sd over clients" + (f", 95% interval over {seeds} seeds" if seeds >= 2 else "")
    privacy = (("on-device cost", "right", lambda s: _device_cell(summary, s)),
               ("ε", "right", lambda s: fmt_stat(e, "epsilon", ci=False) if (e := lookup(summary, s, "epsilon")) else MISSING),
               ("leaks (calibrated)", "left", lambda s: escape(leak_verdicts(summary, s))))
    accuracy = tuple((h, "right", lambda s, q=q: _cell(summary, s, q, _KINDS[q])) for h, q in _COLUMNS)
    groups = [accuracy + privacy] if width >= WIDE else [accuracy, privacy]
    tables = []
    for i, columns in enumerate(groups):
        part = "" if len(groups) == 1 else (" (accuracy, bytes)" if i == 0 else " (device cost, privacy)")
        table = Table(title=title + part, show_lines=True)
        table.add_column("scheme", style="bold", no_wrap=True)
        for header, justify, _ in columns:
            table.add_column(header, justify=justify)
        for s in run_schemes(run):
            name = escape(s) + (f"\n[bold red]{escape(failures[s].label)}[/bold red]" if s in failures else "")
            table.add_row(name, *(cell(s) for _, _, cell in columns))
        tables.append(table)
    return tables


def comparison_table(run: str | Path | RunData) -> Table:
    """The whole comparison as one table."""
    return comparison_tables(run, width=WIDE)[0]


def print_comparison(console: Console, run: str | Path | RunData) -> None:
    run = run if isinstance(run, RunData) else load_run(run)
    for table in comparison_tables(run, console.width):
        console.print(table)
    for f in scheme_failures(run).values():  # after the table, where it is read last
        console.print(f"[bold red]{WARN}[/bold red] {escape(f.sentence)} See failures.csv.")
