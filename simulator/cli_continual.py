"""`mupriv continual CONFIG --out DIR`: the continual-learning scenario ([continual]) into its own run folder."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def continual_command(
    config: Optional[Path] = typer.Argument(None, help="TOML config whose continual table sets the scenario (default: every default)."),
    out: Path = typer.Option(Path("runs"), "--out", "-o", help="Folder that receives the run folder (<name>-<time>)."),
    name: str = typer.Option("continual", "--name", help="Run folder name prefix."),
    seed: Optional[int] = typer.Option(None, help="Override the config's seed."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Repeat with seeds seed, seed+1, ...; intervals over (seed, patient)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu (default), cuda, cuda:N or auto (CUDA when available): where models compute; overrides device."),
) -> None:
    """Continual learning on the device: stages of new conditions or electrode placements, a memory budget, and
    finetune / replay-all / random / herding / distill compared on the accuracy matrix (continual.md)."""
    from simulator.config import load_config, with_overrides
    from simulator.continual.output import REPORT_FILE, write_run
    from simulator.continual.run import run_continual
    from simulator.core.device import resolve_device
    from simulator.layout import claim_folder

    cfg = with_overrides(load_config(config), **{"": dict(seed=seed, seeds=seeds, device=device)})
    resolve_device(cfg.device)  # a missing GPU stops here, before a run folder is claimed
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    _, folder = claim_folder(out, f"{name}-{stamp}")
    try:
        with console.status("starting") as status:
            def say(msg: str) -> None:
                status.update(msg)
                console.log(msg)

            results = run_continual(cfg, on_step=say)
    except BaseException:
        if not any(folder.iterdir()):
            folder.rmdir()  # nothing written: leave no empty run folder behind
        raise
    write_run(folder, cfg, results)
    console.print(f"run folder: {folder}")
    typer.echo((folder / REPORT_FILE).read_text())
