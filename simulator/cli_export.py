"""`mupriv export RUN_DIR --scheme S --seed N --client C`: one device's final personal model as TorchScript.

A typer command function, mounted by simulator.cli; a missing run folder, scheme, seed or client is a `MuprivError`
naming what the run holds, which the CLI's `user_errors` turns into one `error:` line and exit code 2.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console


def export_command(
    run_dir: Path = typer.Argument(..., help="A finished run folder written by `mupriv simulate`."),
    scheme: str = typer.Option(..., "--scheme", help="The scheme whose device model to export, e.g. mu-ft."),
    seed: int = typer.Option(..., "--seed", help="The study seed of the cell (schemes/<scheme>/seed-<N>/)."),
    client: str = typer.Option(..., "--client", help="The client (device) id, e.g. client-000."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The TorchScript file to write (default: "
                                       "<scheme>-seed-<N>-<client>.ts.pt in the current folder)."),
) -> None:
    """Write a device's final personal model as a TorchScript file (eval mode) and print its size and parameters."""
    from simulator.export import export_device

    target = out if out is not None else Path(f"{scheme}-seed-{seed}-{client}.ts.pt")
    done = export_device(run_dir, scheme, seed, client, target)
    typer.echo(f"{done.path}: {done.size_bytes} bytes, {done.parameters} parameters "
               f"(input: batch x {done.input_shape[1]} samples x {done.input_shape[2]} leads)")
    Console(stderr=True).print(f"load it with torch.jit.load({str(done.path)!r}); it returns one logit per class")
