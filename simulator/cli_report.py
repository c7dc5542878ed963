"""`mupriv report RUN_DIR` and `mupriv compare RUN_DIR...`: typer command functions, mounted by simulator.cli.

Both raise `MuprivError` (one line naming the file and the fix) for bad input; the CLI's
`user_errors` wrapper turns that into `error: ...` on stderr and exit code 2.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from simulator.errors import MuprivError


def report_command(
    run_dir: Path = typer.Argument(..., help="A run folder written by `mupriv simulate` (runs/<name>-<time>/)."),
) -> None:
    """Re-render report.md and report.html of a run, and print its comparison table."""
    from simulator.report.load import load_run
    from simulator.report.render import render_report
    from simulator.report.terminal import print_comparison
    from simulator.sweep import is_sweep

    if is_sweep(run_dir):  # a sweep folder: the trade-off across its points (each point has its own report)
        from simulator.report.sweep_report import render_sweep_report

        md, html = render_sweep_report(run_dir)
        Console().print(f"sweep report written to {md} and {html}")
        return
    run = load_run(run_dir)
    md, html = render_report(run)
    console = Console()
    print_comparison(console, run)
    console.print(f"report written to {md} and {html}")


def compare_command(
    run_dirs: list[Path] = typer.Argument(..., help="One or more run folders written by `mupriv simulate`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Also write the comparison: .csv = the means as numbers, anything else = Markdown."),
) -> None:
    """Put runs side by side: one column per run, one row per scheme and quantity."""
    from simulator.report.compare import compare_markdown, compare_runs, compare_table
    from simulator.report.files import write_atomic
    from simulator.report.load import load_run

    runs = [load_run(d) for d in run_dirs]
    Console().print(compare_table(runs))
    if out is None:
        return
    if out.exists() and out.is_dir():
        raise MuprivError(f"--out {out} is a folder: give a file name such as {out / 'compare.md'}")
    if out.suffix.lower() == ".csv":
        write_atomic(out, compare_runs(runs).to_csv(float_format="%.6g"))
    else:
        write_atomic(out, compare_markdown(runs))
    Console(stderr=True).print(f"comparison written to {out}")
