"""`mupriv simulate [CONFIG]`: cohort, pretraining, every configured scheme, attacks, report."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from simulator.errors import DISK_FULL, MuprivError

console = Console(stderr=True)
DEFAULT_CONFIG = Path("configs/quickstart.toml")


def simulate_command(
    config: Optional[Path] = typer.Argument(None, help="TOML config (default configs/quickstart.toml)."),
    data: Optional[str] = typer.Option(None, "--data", help="Real records (WFDB folder, CODE-15 .hdf5, .npz); overrides data.path."),
    schemes: Optional[str] = typer.Option(None, "--schemes", help="Comma-separated schemes to run; overrides schemes.run."),
    engine: Optional[str] = typer.Option(None, "--engine", help="inline (default), ray or deployment; overrides federation.engine."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu (default), cuda, cuda:N or auto (CUDA when available): where models compute; overrides device."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Folder that receives the run folder."),
    name: str = typer.Option("simulate", "--name", help="Run folder name prefix (runs/<name>-<time>)."),
    attacks: Optional[bool] = typer.Option(None, "--attacks/--no-attacks", help="Attack every scheme's ledger (default: attacks.enabled, on)."),
    budget: Optional[str] = typer.Option(None, "--attack-budget", help="Attack budget preset: quick, standard or thorough (default: attacks.budget)."),
    seed: Optional[int] = typer.Option(None, help="Override the config's seed."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Repeat the study with N derived seeds (seed, seed+1, ...); mean and 95% interval."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave bad records out (and count them) instead of stopping; sets data.skip_bad."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Finish an interrupted run folder (runs/.<name>-<time>.partial) without redoing finished cells."),
    settings: Optional[list[str]] = typer.Option(None, "--set", help="KEY=VALUE: set one dotted config key (TOML value), e.g. --set train.lr=3e-3; repeatable."),
    sweep: Optional[list[str]] = typer.Option(None, "--sweep", help="KEY=V1,V2,...: one run per value in one folder; several --sweep make a grid (also a [sweep] table in the config)."),
) -> None:
    """Run the whole comparison and write one run folder (results, ledger, attacks, report)."""
    from simulator.config import apply_settings, load_config, with_overrides
    from simulator.config_grid import config_axes, parse_set, parse_sweep
    from simulator.core.device import resolve_device
    from simulator.simulate import resume as resume_run
    from simulator.simulate import start
    from simulator.sweep import is_sweep, resume_sweep, start_sweep

    axes: tuple = ()
    resuming_sweep = resume is not None and is_sweep(resume)
    if resume is not None:
        given = [flag for flag, v in (("CONFIG", config), ("--data", data), ("--schemes", schemes), ("--engine", engine), ("--device", device),
                                      ("--seed", seed), ("--seeds", seeds), ("--attacks", attacks), ("--attack-budget", budget),
                                      ("--skip-bad", skip_bad or None), ("--set", settings or None), ("--sweep", sweep or None))
                 if v is not None]
        if given:
            raise MuprivError(f"--resume finishes a run with the settings it started with; drop {', '.join(given)}")
    else:
        path = config if config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
        cfg = with_overrides(load_config(path), data=dict(path=data, skip_bad=skip_bad or None), federation=dict(engine=engine),
                             **{"": dict(seed=seed, seeds=seeds, device=device)})
        if schemes:
            cfg = with_overrides(cfg, schemes=dict(run=[s.strip() for s in schemes.split(",") if s.strip()]))
        if settings:
            cfg = apply_settings(cfg, [parse_set(e) for e in settings], "--set")
        axes = config_axes(path) + tuple(parse_sweep(e) for e in sweep or ())
        resolve_device(cfg.device)  # a missing GPU stops here, before a run folder is claimed
    with console.status("starting") as status:
        def say(msg: str) -> None:
            status.update(msg)
            console.log(msg)

        # this run's own folder, claimed before anything runs: the only one an interruption may point to
        sweeping = bool(axes) or resuming_sweep
        if resume is not None:
            work = resume
        elif axes:
            work = start_sweep(cfg, axes, runs_root=out, name=name, data_path=data, attack=attacks, attack_budget=budget)
        else:
            work = start(cfg, runs_root=out, name=name, data_path=data, attack=attacks, attack_budget=budget)
        try:
            if sweeping:
                folder = resume_sweep(work, on_step=say)
            else:
                result = resume_run(work, on_step=say)
        except KeyboardInterrupt:
            raise MuprivError(f"interrupted: finish it with `mupriv simulate --resume {work}`") from None
        except MuprivError:
            if resume is None and not any(Path(work).rglob(".done")):
                shutil.rmtree(work, ignore_errors=True)  # refused before any result: nothing to resume
            raise
        except OSError as e:
            if e.errno not in DISK_FULL:
                raise
            where = e.filename or work
            if Path(work).is_dir():
                raise MuprivError(f"{where}: no space left on device; free some space, then finish this run with "
                                  f"`mupriv simulate --resume {work}` (finished cells are kept)") from None
            raise MuprivError(f"{where}: no space left on device while writing the report of the finished run in "
                              f"{out}; free some space, then run `mupriv report` on it") from None
    if sweeping:
        console.print(f"sweep folder: {folder} (report.html, report.md, sweep.csv, results.csv, points/)")
        return
    from simulator.report.terminal import print_comparison

    print_comparison(Console(), result.run_dir)
    written = ["report.html", "report.md", "results.csv", "failures.csv",
               *(["attacks.csv"] if result.attacks is not None else []), "ledger.csv"]
    console.print(f"run folder: {result.run_dir} ({', '.join(written)})")
