"""`mupriv train` and `mupriv finetune`: pretrain on the server, personalise a checkpoint on one patient's records.

Typer command functions, mounted by simulator.cli. Both raise `MuprivError` (one line naming the thing and the fix)
for bad input; the CLI's `user_errors` wrapper turns that into `error: ...` on stderr and exit code 2.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                    TimeElapsedColumn(), console=console, transient=False)


def _write_json(result: dict, path: Optional[Path]) -> None:
    from simulator.core.metrics import json_safe

    text = json.dumps(json_safe(result), indent=2, allow_nan=False)
    if path is None:
        typer.echo(text)
        return
    from simulator.atomic import atomic_write

    atomic_write(path, text + "\n")
    console.print(f"result written to {path}")


def _run_phases(model, phases, train, val, seed: int):
    from simulator.core.phases import train_phase

    results = []
    with _progress() as progress:
        for i, phase in enumerate(phases):
            task = progress.add_task(phase.name, total=max(phase.epochs, 1), status="")

            def on_epoch(log, task=task):
                auroc = "" if log.val_macro_auroc is None else f" val macro-AUROC {log.val_macro_auroc:.3f} macro-F1 {log.val_macro_f1:.3f}"
                progress.update(task, advance=1, status=f"epoch {log.epoch} loss {log.loss:.4f}{auroc}")

            results.append(train_phase(model, phase, train, val, seed=seed * 1000 + i, on_epoch=on_epoch))
            if phase.epochs == 0:
                progress.update(task, advance=1, status="skipped (0 epochs)")
    return results


def _selection(result, fit_set, val_set, test_set) -> dict:
    """How finetune chose the epoch it kept, and on which records (never the test records it reports on)."""
    kept = result.best_epoch
    return {
        "on": "validation split of the training records" if val_set is not None
        else "none: too few training records for a validation split, so the last epoch is kept",
        "fit_records": len(fit_set), "val_records": 0 if val_set is None else len(val_set), "test_records": len(test_set),
        "kept_epoch": kept,
        # epoch 0 is the starting model (None: no epoch ran): then "after" equals "before" by construction
        "changed_nothing": kept in (0, None),
    }


def _phase_summary(result) -> dict:
    return {
        "phase": result.phase.to_dict(),
        "best_epoch": result.best_epoch,
        "best_val_macro_auroc": result.best_val_macro_auroc,
        "steps": result.steps,
        "history": [vars(h) for h in result.history],
    }


def train_command(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config (defaults if omitted; see configs/)."),
    data: Optional[str] = typer.Option(None, "--data", help="WFDB folder, CODE-15 .hdf5 or .npz; overrides data.path. Empty: synthetic."),
    out: Path = typer.Option(Path("model.pt"), "--out", "-o", help="Where to write the checkpoint."),
    full_epochs: Optional[int] = typer.Option(None, help="Override train.full_epochs."),
    mu_epochs: Optional[int] = typer.Option(None, help="Override train.mu_epochs."),
    position: Optional[str] = typer.Option(None, help="Override train.position: start, end or both."),
    self_distill: Optional[bool] = typer.Option(None, "--self-distill/--no-self-distill", help="Override train.self_distill."),
    seed: Optional[int] = typer.Option(None, help="Override the config's seed."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu (default), cuda, cuda:N or auto (CUDA when available): where models compute; overrides device."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the JSON result here instead of stdout."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave bad records out (and count them) instead of stopping; sets data.skip_bad."),
) -> None:
    """Pretrain on the server: full training, then µ-Training of the middle (optionally self-distilled)."""
    from simulator.config import load_config, with_overrides
    from simulator.core.checkpoint import save_checkpoint
    from simulator.core.device import describe, resolve_device
    from simulator.core.model import TDSSM, count_parameters
    from simulator.core.phases import evaluate
    from simulator.core.cost import phase_cost
    from simulator.datasets import load_configured_records, split_train_val

    import torch

    cfg = with_overrides(load_config(config), train=dict(full_epochs=full_epochs, mu_epochs=mu_epochs, position=position,
                                                          self_distill=self_distill), data=dict(path=data, skip_bad=skip_bad or None),
                         **{"": dict(seed=seed, device=device)})
    dev = resolve_device(cfg.device)  # a missing GPU stops here, before the records are read
    records = load_configured_records(cfg.data, cfg.seed)
    train_set, val_set = split_train_val(records, cfg.data.val_fraction, cfg.seed)
    console.print(f"data: {len(train_set)} train / {len(val_set)} validation records, {train_set.length} samples x {train_set.n_leads} leads")
    torch.manual_seed(cfg.seed)
    model = TDSSM(cfg.model).to(dev)  # initialised on the CPU (the same weights everywhere), trained on dev
    plan = cfg.train.plan()
    results = _run_phases(model, plan, train_set, val_set, cfg.seed)
    metrics = evaluate(model, val_set)
    model.cpu()  # the checkpoint and the cost count (simulator.core.cost runs on the CPU) take the CPU model
    save_checkpoint(out, model, config=cfg.to_dict(), extra={"phases": [_phase_summary(r) for r in results], "config_hash": cfg.hash()})
    console.print(f"checkpoint written to {out}; validation macro-AUROC {metrics.macro_auroc:.3f}, macro-F1 {metrics.macro_f1:.3f}")
    _write_json({
        "command": "train", "checkpoint": str(out), "config_hash": cfg.hash(), "seed": cfg.seed, **describe(dev),
        "parameters": count_parameters(model),
        "data": {"train_records": len(train_set), "val_records": len(val_set), "length": train_set.length, "problems": list(records.problems)},
        "phases": [_phase_summary(r) for r in results],
        # The fine-tuning phase too: its device cost next to full training's is the comparison users want.
        "device_cost": {p.name: phase_cost(model, p, train_set.length).to_dict() for p in [*plan, cfg.finetune.phase()]},
        "validation": metrics.to_dict(),
    }, json_out)


def finetune_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A checkpoint written by `mupriv train`."),
    data: Optional[str] = typer.Option(None, "--data", help="The patient's records (WFDB folder, .hdf5, .npz); empty: synthetic."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config; [finetune] and [data] are used. Default: the checkpoint's own."),
    out: Path = typer.Option(Path("model-ft.pt"), "--out", "-o", help="Where to write the fine-tuned checkpoint."),
    epochs: Optional[int] = typer.Option(None, help="Override finetune.epochs."),
    parts: Optional[str] = typer.Option(None, help="Comma-separated parts to train (default encoder,decoder = µ-Fine-Tuning)."),
    source_data: Optional[str] = typer.Option(None, "--source-data", help="Source-task records to measure forgetting on."),
    seed: Optional[int] = typer.Option(None, help="Override the config's seed."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu (default), cuda, cuda:N or auto (CUDA when available): where models compute; overrides device."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the JSON result here instead of stdout."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave bad records out (and count them) instead of stopping; sets data.skip_bad."),
) -> None:
    """Personalise on a device: µ-Fine-Tuning (encoder + decoder; the middle stays bitwise frozen)."""
    import torch

    from simulator.config import load_config, parse_config, with_overrides
    from simulator.core.checkpoint import load_model, read_checkpoint, save_checkpoint
    from simulator.core.cost import phase_cost
    from simulator.core.device import describe, resolve_device
    from simulator.core.metrics import forgetting
    from simulator.core.phases import evaluate
    from simulator.datasets import load_configured_records, split_tensors, split_train_val

    base = load_config(config) if config else parse_config(read_checkpoint(checkpoint)["config"] or {}, f"{checkpoint} (embedded config)")
    part_list = tuple(p.strip() for p in parts.split(",")) if parts else None
    cfg = with_overrides(base, finetune=dict(epochs=epochs, parts=part_list), data=dict(path=data, skip_bad=skip_bad or None),
                         **{"": dict(seed=seed, device=device)})
    dev = resolve_device(cfg.device)
    model, _ = load_model(checkpoint, expected=cfg.model)
    model.to(dev)
    records = load_configured_records(cfg.data, cfg.seed + 1)
    # test records are only reported on; the epoch is picked on a validation split of the training records, so
    # "after" is an honest estimate (picking it on the test records made "after" never lower than "before")
    train_set, test_set = split_train_val(records, cfg.data.val_fraction, cfg.seed)
    split = split_tensors(train_set, cfg.data.val_fraction, cfg.seed + 1)
    fit_set, val_set = split if split is not None else (train_set, None)
    source = None
    if source_data is not None:
        source = load_configured_records(cfg.data, cfg.seed, path=source_data).tensors()
    phase = cfg.finetune.phase()
    before, source_before = evaluate(model, test_set), evaluate(model, source) if source else None
    middle_before = [p.detach().clone() for p in model.middle.parameters()]
    (result,) = _run_phases(model, [phase], fit_set, val_set, cfg.seed)
    after = evaluate(model, test_set)
    selection = _selection(result, fit_set, val_set, test_set)
    middle_unchanged = all(torch.equal(a, b) for a, b in zip(middle_before, model.middle.parameters()))
    model.cpu()  # the checkpoint and the cost count (simulator.core.cost runs on the CPU) take the CPU model
    if "middle" in phase.parts and selection["changed_nothing"]:
        middle_unchanged = None  # unchanged only because nothing was kept: not the µ-Fine-Tuning guarantee
    save_checkpoint(out, model, config=cfg.to_dict(), extra={"phases": [_phase_summary(result)], "finetuned_from": str(checkpoint)})
    if selection["changed_nothing"]:
        console.print("selection kept epoch 0, the starting model (no epoch beat it on the validation records, or none "
                      "ran): fine-tuning changed nothing")
    console.print(f"personal macro-AUROC on {len(test_set)} test records {before.macro_auroc:.3f} -> {after.macro_auroc:.3f}; "
                  f"checkpoint written to {out}")
    report = {
        "command": "finetune", "checkpoint": str(out), "from": str(checkpoint), "config_hash": cfg.hash(), **describe(dev),
        "phase": _phase_summary(result), "selection": selection, "middle_bitwise_unchanged": middle_unchanged,
        "device_cost": phase_cost(model, phase, train_set.length).to_dict(),
        "personal_before": before.to_dict(), "personal_after": after.to_dict(),
    }
    if source is not None:
        source_after = evaluate(model, source)
        report.update(source_before=source_before.to_dict(), source_after=source_after.to_dict(),
                      forgetting_macro_auroc=forgetting(source_before, source_after))
    _write_json(report, json_out)
