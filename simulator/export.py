"""A device's final personal model from a run folder, as a TorchScript file: the artefact a wearable engineer deploys.

Every `simulate` cell keeps each device's final model (``schemes/<scheme>/seed-<s>/models/<client>.pt``, a state
dict of the trained parameters; simulator.layout). Exporting rebuilds the public architecture from the cell's
scheme.json, loads those parameters and traces the model in eval mode. Tracing, not `torch.jit.script`: the S4D
kernel computes its block size with `math.isqrt`, which TorchScript's compiler refuses, while a trace records the
tensor operations of one forward pass. The model has no data-dependent control flow, so the trace runs any batch
size; the S4D kernel's block arithmetic is fixed at the traced record length, so it takes records of the run's
``data.length`` samples (its scheme.json data block), as the device does (tests/test_export.py checks both against the
eager model). A traced convolution runs plain FFTs instead of the training-only autograd Function (simulator.core.s4d).
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from baselines.setup import probe_model  # how a kept device model is loaded back
from simulator import layout
from simulator.atomic import atomic_write
from simulator.core.model import ModelConfig, TDSSM, count_parameters
from simulator.errors import MuprivError
from simulator.scheme_record import SchemeRecord


@dataclass(frozen=True)
class Exported:
    path: Path
    size_bytes: int
    parameters: int  # the paper's count: weights plus the fixed wiring-mask entries (count_parameters)
    input_shape: tuple[int, int, int]  # (batch, length, leads) it was traced with: any batch size, this length


def _names(paths: list[Path], strip: str = "") -> str:
    names = sorted(p.name.removeprefix(strip).removesuffix(".pt") for p in paths)
    return ", ".join(names) if names else "none"


def device_cell(run_dir: Path, scheme: str, seed: int) -> Path:
    """The (scheme, seed) cell of a finished `simulate` run folder; a MuprivError naming what exists otherwise."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MuprivError(f"run folder {run_dir} does not exist: pass a folder written by `mupriv simulate`")
    schemes = run_dir / "schemes"
    if not schemes.is_dir():
        raise MuprivError(f"{run_dir} holds no schemes/ folder: pass a run folder written by `mupriv simulate`")
    if not (schemes / scheme).is_dir():
        raise MuprivError(f"scheme {scheme!r} is not in {run_dir}; it has: {_names([p for p in schemes.iterdir() if p.is_dir()])}")
    cell = schemes / scheme / f"seed-{seed}"
    if not cell.is_dir():
        seeds = [p for p in (schemes / scheme).glob("seed-*") if p.is_dir()]
        raise MuprivError(f"seed {seed} of {scheme} is not in {run_dir}; its seeds: {_names(seeds, 'seed-')}")
    return cell


def device_model(cell: Path, client: str) -> TDSSM:
    """The client's final personal model of one cell, in eval mode."""
    record = SchemeRecord.read(Path(cell) / layout.SCHEME_FILE)
    path = layout.model_file(cell, client)
    if not path.is_file():
        kept = list((Path(cell) / layout.MODELS_DIR).glob("*.pt"))
        why = (f"clients with a model: {_names(kept)}" if client not in record.clients
               else "that device left no final model (see failures.csv)")
        raise MuprivError(f"client {client!r} has no model in {cell}; {why}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return probe_model(ModelConfig(**record.model), state)


def export_torchscript(model: TDSSM, length: int, out: Path) -> Exported:
    """Trace `model` (eval mode, no gradients) on a (2, length, leads) input and write it atomically to `out`."""
    model = model.eval()
    example = torch.zeros(2, length, model.cfg.n_leads)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape arithmetic fixed at `length`, as documented
        traced = torch.jit.trace(model, example, check_trace=False)
    buf = io.BytesIO()  # in memory first: a full disk is then an OSError of the write, not torch's RuntimeError
    torch.jit.save(traced, buf)
    data = buf.getvalue()
    atomic_write(Path(out), data)
    return Exported(Path(out), len(data), count_parameters(model)["total"], tuple(example.shape))


def export_device(run_dir: Path, scheme: str, seed: int, client: str, out: Path) -> Exported:
    cell = device_cell(run_dir, scheme, seed)
    record = SchemeRecord.read(cell / layout.SCHEME_FILE)
    if record.data is None:
        raise MuprivError(f"{cell / layout.SCHEME_FILE} has no data block (written before 2026-11-21): the input length "
                          f"to trace with is unknown")
    return export_torchscript(device_model(cell, client), record.data.length, out)
