"""`mupriv export`: a kept device model as TorchScript computes what the model computes; bad requests are one line."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from simulator import layout
from simulator.cli import app
from simulator.core.model import ModelConfig, TDSSM, count_parameters
from simulator.scheme_record import DataFormat, SchemeRecord, Threat

CFG = ModelConfig(d_model=16, d_state=8)
LENGTH = 96
runner = CliRunner()


def _cell(run_dir, scheme="mu-ft", seed=1, clients=("client-000", "client-001"), kept=("client-000",)):
    """A finished run's cell as `simulate` leaves it: scheme.json and models/<client>.pt (trained parameters only)."""
    cell = run_dir / "schemes" / scheme / f"seed-{seed}"
    cell.mkdir(parents=True)
    record = SchemeRecord(
        scheme=scheme, summary="µ-FT", params={"epochs": 1}, model=dataclasses.asdict(CFG), seed=seed, observable="nothing",
        shared_parts=(), device_parts=("encoder", "decoder"),
        threat=Threat(optimizer="adamw", lr=3e-3, local_epochs=1, batch_size=8, pos_weight=6.0, weight_decay=0.01),
        dp=None, clients=clients, partition_to_client=dict(enumerate(clients)), engine="inline",
        data=DataFormat(length=LENGTH, fs=50.0, scale="none"))
    (cell / layout.SCHEME_FILE).write_text(record.to_json())
    models = {}
    for k, client in enumerate(kept):
        torch.manual_seed(100 + k)
        model = TDSSM(CFG)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))  # not the fresh initialisation: a personalised device
        layout.model_file(cell, client).parent.mkdir(exist_ok=True)
        torch.save({n: p.detach().clone() for n, p in model.named_parameters()}, layout.model_file(cell, client))
        models[client] = model.eval()
    return cell, models


def test_the_exported_module_computes_what_the_device_model_computes(tmp_path, one_torch_thread):
    _, models = _cell(tmp_path / "run")
    out = tmp_path / "device.ts.pt"
    r = runner.invoke(app, ["export", str(tmp_path / "run"), "--scheme", "mu-ft", "--seed", "1", "--client", "client-000",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    size, params = out.stat().st_size, count_parameters(models["client-000"])["total"]
    assert f"{out}: {size} bytes, {params} parameters" in r.output
    loaded = torch.jit.load(str(out))
    torch.manual_seed(7)
    for batch in (1, 3):  # traced with 2 records: any batch size runs
        x = torch.randn(batch, LENGTH, 12)
        with torch.no_grad():
            expected = models["client-000"](x)
        got = loaded(x)
        assert got.shape == (batch, 6)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        fresh = TDSSM(CFG).eval()(x)
    assert not torch.allclose(got, fresh, atol=1e-3)  # the kept weights, not a fresh initialisation


@pytest.mark.parametrize("args, message", [
    (["--scheme", "fedavg", "--seed", "1", "--client", "client-000"], "scheme 'fedavg' is not in {run}; it has: mu-ft"),
    (["--scheme", "mu-ft", "--seed", "4", "--client", "client-000"], "seed 4 of mu-ft is not in {run}; its seeds: 1"),
    (["--scheme", "mu-ft", "--seed", "1", "--client", "client-009"],
     "client 'client-009' has no model in {run}/schemes/mu-ft/seed-1; clients with a model: client-000"),
    (["--scheme", "mu-ft", "--seed", "1", "--client", "client-001"], "that device left no final model"),
])
def test_a_missing_scheme_seed_or_client_is_one_error_naming_what_exists(tmp_path, args, message):
    run = tmp_path / "run"
    _cell(run)
    r = runner.invoke(app, ["export", str(run), *args, "--out", str(tmp_path / "x.pt")])
    assert r.exit_code == 2
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message.format(run=run) in lines[0], r.output
    assert not (tmp_path / "x.pt").exists()


def test_a_missing_run_folder_is_one_error(tmp_path):
    r = runner.invoke(app, ["export", str(tmp_path / "nope"), "--scheme", "mu-ft", "--seed", "0", "--client", "c"])
    assert r.exit_code == 2 and r.output.strip() == f"error: run folder {tmp_path / 'nope'} does not exist: pass a folder " \
                                                    "written by `mupriv simulate`"
