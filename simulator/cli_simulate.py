"""`mupriv simulate [CONFIG]`: cohort, pretraining, every configured scheme, attacks, report."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(stderr=True)
DEFAULT_CONFIG = Path("configs/quickstart.toml")


def simulate_command(
    config: Optional[Path] = typer.Argument(None, help="TOML config (default configs/quickstart.toml)."),
    data: Optional[str] = typer.Option(None, "--data", help="Real records (WFDB folder, CODE-15 .hdf5, .npz); overrides data.path."),
    schemes: Optional[str] = typer.Option(None, "--schemes", help="Comma-separated schemes to run; overrides schemes.run."),
    engine: Optional[str] = typer.Option(None, "--engine", help="inline (default) or ray; overrides federation.engine."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Folder that receives the run folder."),
    name: str = typer.Option("simulate", "--name", help="Run folder name prefix (runs/<name>-<time>)."),
    attacks: bool = typer.Option(False, "--attacks/--no-attacks", help="Attack every scheme's ledger (needs the attacks package)."),
    budget: str = typer.Option("quick", "--attack-budget", help="Attack budget preset: quick, standard or thorough."),
    seed: Optional[int] = typer.Option(None, help="Override the config's seed."),
) -> None:
    """Run the whole comparison and write one run folder (results, ledger, attacks, report)."""
    from simulator.config import load_config, with_overrides
    from simulator.simulate import simulate

    path = config if config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    cfg = with_overrides(load_config(path), data=dict(path=data), federation=dict(engine=engine), **{"": dict(seed=seed)})
    if schemes:
        cfg = with_overrides(cfg, schemes=dict(run=[s.strip() for s in schemes.split(",") if s.strip()]))
    with console.status("starting") as status:
        result = simulate(cfg, runs_root=out, name=name, data_path=data, attack=attacks, attack_budget=budget,
                          on_step=lambda msg: (status.update(msg), console.log(msg)))
    try:
        from simulator.report.terminal import print_comparison

        print_comparison(Console(), result.run_dir)
    except ImportError:
        pass
    console.print(f"run folder: {result.run_dir} (report.html, report.md, results.csv, ledger.csv)")
