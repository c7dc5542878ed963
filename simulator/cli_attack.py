"""`mupriv attack RUN_DIR`: attack a finished scheme run, write attacks.csv and plots, print a table.

The command lives on the simulator side because a whole run folder is re-attacked by `simulator.simulate`;
attacks/ itself never imports the simulator's orchestration (README, Layout).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from attacks.budget import PRESETS, get_budget
from simulator.atomic import atomic_write
from simulator.errors import MuprivError

CSV_NAME = "attacks.csv"
SUMMARY_METRICS = ("residual", "label_exact", "presence_f1", "feat_ccos_best", "r", "r_gain", "mse_skill",
                   "reid_top1")
# Short headers so the table fits an 80-column terminal; attacks.csv keeps the full metric names.
HEADERS = {"residual": "resid", "label_exact": "lab=", "presence_f1": "presF1", "count_mae": "cntMAE",
           "feat_ccos_best": "featcos", "r": "r", "r_gain": "r-prior", "mse_skill": "skill", "reid_top1": "reid@1"}


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean of the headline metrics per (scheme, threat model, attack), plus notes for attacks that did not apply."""
    applied = frame[frame["metric"].isin(SUMMARY_METRICS)]
    table = applied.pivot_table(index=["scheme", "threat_model", "attack"], columns="metric", values="value", aggfunc="mean")
    table = table.reindex(columns=[m for m in SUMMARY_METRICS if m in table.columns])
    na = frame[((frame["metric"] == "applicable") & (frame["value"] == 0)) | (frame["metric"] == "skipped")]
    notes = na.groupby(["scheme", "threat_model", "attack"])["note"].first()
    out = table.join(notes.rename("note"), how="outer")
    return out.reset_index()


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def _fmt(v: float) -> str:
    return f"{v:.0e}" if v != 0 and abs(v) < 1e-2 else f"{v:.3f}"


def _print_table(table: pd.DataFrame, console: Console) -> None:
    """One table per (scheme, threat model); attacks that did not apply are listed under it with the reason."""
    for (scheme, threat), part in table.groupby(["scheme", "threat_model"], sort=False):
        metrics = [c for c in SUMMARY_METRICS if c in part.columns and part[c].notna().any()]
        t = Table(title=f"{scheme}: threat model {threat} (mean over clients and rounds)", box=box.SIMPLE_HEAD,
                  padding=(0, 1))
        t.add_column("attack", no_wrap=True, min_width=9)
        for m in metrics:
            t.add_column(HEADERS.get(m, m), justify="right", no_wrap=True, min_width=max(6, len(HEADERS.get(m, m))))
        notes = []
        for _, row in part.iterrows():
            if all(pd.isna(row[m]) for m in metrics):
                notes.append(f"{row['attack']}: {row.get('note', '')}")
                continue
            t.add_row(str(row["attack"]), *("" if pd.isna(row[m]) else _fmt(row[m]) for m in metrics))
        if t.row_count:
            console.print(t)
        for n in notes:
            console.print(f"  {n}")


def attack_command(
    run_dir: Path = typer.Argument(..., help="A run folder of `mupriv simulate` (every scheme), or one scheme run "
                                   "directory (scheme.json, ledger/, truth/)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write attacks.csv and the plots (default: RUN_DIR)."),
    budget: str = typer.Option("quick", "--budget", help=f"Attack budget preset: {', '.join(PRESETS)}."),
    seed: int = typer.Option(0, "--seed", help="Seed of every attack (initialisations, restarts)."),
    device: str = typer.Option("cpu", "--device", help="cpu (default), cuda, cuda:N or auto (CUDA when available): "
                               "where the inversions and membership's shadow models compute."),
) -> None:
    """Attack a scheme run's wire ledger as a curious server; score against the clients' data afterwards."""
    from attacks.plots import pick_cases, plot_case
    from attacks.run import attack_run_report
    from simulator.core.device import resolve_device

    console = Console(stderr=True)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MuprivError(f"run directory {run_dir} does not exist: give a scheme run directory with scheme.json and ledger/")
    preset = get_budget(budget)  # a bad name is a MuprivError naming the presets
    on = resolve_device(device, "--device")  # a missing GPU stops here, before anything is written
    if not (run_dir / "scheme.json").is_file() and (run_dir / "schemes").is_dir():
        if out is not None:
            raise MuprivError("--out applies to one scheme run directory; a run folder is attacked in place")
        from simulator.simulate import attack_run_folder  # pylint: disable=import-outside-toplevel

        frame = attack_run_folder(run_dir, budget, on_step=lambda msg: console.print(f"[dim]{msg}[/dim]"), device=on)
        _print_table(summary(frame), console)
        console.print(f"written: {run_dir / CSV_NAME}, {run_dir / 'plots'}, {run_dir / 'report.html'}")
        return
    out_dir = Path(out) if out is not None else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    def progress(done: int, total: int, what: str) -> None:
        if done < total:
            console.print(f"[dim]attacking {done + 1}/{total}: {what}[/dim]")

    report = attack_run_report(run_dir, preset, seed, progress, device=on)
    _write_csv(report.frame, out_dir / CSV_NAME)
    written = [out_dir / CSV_NAME]
    for tag, case in pick_cases(report.cases).items():
        written.append(plot_case(case, out_dir / f"attack-{tag}.png", tag.rsplit("-", 1)[1], report.prior.fs))
    _print_table(summary(report.frame), console)
    console.print("written: " + ", ".join(str(p) for p in written))
