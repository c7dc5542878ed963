"""The train / finetune commands end to end on tiny settings, and their one-line errors."""
import json

import numpy as np
import torch
from typer.testing import CliRunner

from simulator.cli import app
from simulator.core.checkpoint import load_model
from simulator.core.tensors import save_npz
from tests.helpers import frequency_task

runner = CliRunner()

TINY = """
seed = 3
[model]
d_model = 16
dropout = 0.0
[data]
length = 128
val_fraction = 0.25
[train]
full_epochs = 1
mu_epochs = 1
batch_size = 16
[finetune]
epochs = 1
batch_size = 16
[federation]  # one device epoch cannot be matched by FedRep's head + body round: choose the rounds
budget = "as-configured"
rounds = 1
"""


def _setup(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    save_npz(frequency_task(n=64, length=128, seed=1), tmp_path / "source.npz")
    save_npz(frequency_task(n=32, length=128, seed=2), tmp_path / "patient.npz")
    return cfg


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("mupriv ")


def test_train_then_finetune(tmp_path):
    cfg = _setup(tmp_path)
    ckpt, ft = tmp_path / "m.pt", tmp_path / "ft.pt"
    r = runner.invoke(app, ["train", "-c", str(cfg), "--data", str(tmp_path / "source.npz"), "-o", str(ckpt), "--json", str(tmp_path / "t.json")])
    assert r.exit_code == 0, r.output
    train = json.loads((tmp_path / "t.json").read_text())
    assert [p["phase"]["name"] for p in train["phases"]] == ["full", "mu-train"]
    assert train["phases"][1]["phase"]["self_distill"] is True
    assert train["device_cost"]["mu-ft"]["trainable_params"] < train["device_cost"]["full"]["trainable_params"]
    assert 0.0 <= train["validation"]["macro_auroc"] <= 1.0

    r = runner.invoke(app, ["finetune", "--checkpoint", str(ckpt), "--data", str(tmp_path / "patient.npz"),
                            "--source-data", str(tmp_path / "source.npz"), "-o", str(ft), "--json", str(tmp_path / "f.json")])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "f.json").read_text())
    assert result["middle_bitwise_unchanged"] is True
    assert "forgetting_macro_auroc" in result
    before, _ = load_model(ckpt)
    after, _ = load_model(ft)
    assert all(torch.equal(a, b) for a, b in zip(before.middle.parameters(), after.middle.parameters()))
    # The encoder moved unless no epoch beat the starting model on the patient's validation split (best_epoch 0).
    moved = not all(torch.equal(a, b) for a, b in zip(before.encoder.parameters(), after.encoder.parameters()))
    assert moved == (result["phase"]["best_epoch"] >= 1), result["phase"]


def test_unknown_config_key_suggests_the_closest(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[train]\nful_epochs = 2\n")
    r = runner.invoke(app, ["train", "-c", str(cfg)])
    assert r.exit_code == 2
    assert "unknown config key 'train.ful_epochs'; did you mean 'train.full_epochs'?" in r.output
    assert "Traceback" not in r.output


def test_wrong_type_and_missing_files_are_one_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[model]\nd_model = "big"\n')
    r = runner.invoke(app, ["train", "-c", str(cfg)])
    assert r.exit_code == 2 and "model.d_model must be int" in r.output
    r = runner.invoke(app, ["finetune", "--checkpoint", str(tmp_path / "nope.pt")])
    assert r.exit_code == 2 and "nope.pt: checkpoint not found" in r.output


def test_finetune_refuses_a_checkpoint_of_another_architecture(tmp_path):
    cfg = _setup(tmp_path)
    ckpt = tmp_path / "m.pt"
    assert runner.invoke(app, ["train", "-c", str(cfg), "--data", str(tmp_path / "source.npz"), "-o", str(ckpt),
                               "--full-epochs", "0", "--mu-epochs", "0", "--json", str(tmp_path / "t.json")]).exit_code == 0
    other = tmp_path / "other.toml"
    other.write_text(TINY.replace("d_model = 16", "d_model = 32"))
    r = runner.invoke(app, ["finetune", "-c", str(other), "--checkpoint", str(ckpt), "--data", str(tmp_path / "patient.npz")])
    assert r.exit_code == 2 and "another architecture: d_model=16 (config: 32)" in r.output


def test_dataset_with_wrong_leads_is_one_line(tmp_path):
    cfg = _setup(tmp_path)
    np.savez(tmp_path / "eight.npz", x=np.zeros((8, 128, 8), np.float32), y=np.zeros((8, 6), np.float32))
    r = runner.invoke(app, ["train", "-c", str(cfg), "--data", str(tmp_path / "eight.npz")])
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output


def _rows(t):
    return {tuple(r) for r in t.x.flatten(1).numpy().round(6).tolist()}


def test_finetune_picks_its_epoch_on_validation_records_and_reports_on_test_records(tmp_path, monkeypatch):
    """Before, the best epoch was picked on the same records then reported as "after", so "after" could never be
    below "before"."""
    import simulator.cli_train as cli
    import simulator.core.phases as phases

    cfg = _setup(tmp_path)
    ckpt = tmp_path / "m.pt"
    assert runner.invoke(app, ["train", "-c", str(cfg), "--data", str(tmp_path / "source.npz"), "-o", str(ckpt),
                               "--json", str(tmp_path / "t.json")]).exit_code == 0
    seen, evaluated = {}, []
    real_run, real_eval = cli._run_phases, phases.evaluate

    def spy_run(model, plan, train, val, seed):
        seen.update(train=train, val=val)
        return real_run(model, plan, train, val, seed)

    def spy_eval(model, data, *a, **k):
        evaluated.append(data)
        return real_eval(model, data, *a, **k)

    monkeypatch.setattr(cli, "_run_phases", spy_run)
    monkeypatch.setattr(phases, "evaluate", spy_eval)
    r = runner.invoke(app, ["finetune", "--checkpoint", str(ckpt), "--data", str(tmp_path / "patient.npz"),
                            "--epochs", "2", "-o", str(tmp_path / "ft.pt"), "--json", str(tmp_path / "f.json")])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "f.json").read_text())
    test = evaluated[0]  # "before" is measured on the test records
    assert _rows(seen["train"]).isdisjoint(_rows(test)) and _rows(seen["val"]).isdisjoint(_rows(test))
    assert _rows(seen["train"]).isdisjoint(_rows(seen["val"]))
    sel = result["selection"]
    assert sel["on"] == "validation split of the training records"
    assert (sel["fit_records"], sel["val_records"], sel["test_records"]) == (len(seen["train"]), len(seen["val"]), len(test))
    assert sel["fit_records"] + sel["val_records"] + sel["test_records"] == 32
    assert sel["kept_epoch"] == result["phase"]["best_epoch"] and sel["changed_nothing"] == (sel["kept_epoch"] == 0)


def test_full_finetuning_that_kept_epoch_0_does_not_claim_the_middle_guarantee(tmp_path):
    cfg = _setup(tmp_path)
    ckpt = tmp_path / "m.pt"
    assert runner.invoke(app, ["train", "-c", str(cfg), "--data", str(tmp_path / "source.npz"), "-o", str(ckpt),
                               "--json", str(tmp_path / "t.json")]).exit_code == 0
    ruin = tmp_path / "ruin.toml"  # a learning rate that wrecks the model in one epoch: selection keeps epoch 0
    ruin.write_text(TINY.replace("[finetune]\nepochs = 1", "[finetune]\nepochs = 1\nlr = 10.0\nkernel_lr = 10.0"))
    r = runner.invoke(app, ["finetune", "-c", str(ruin), "--checkpoint", str(ckpt), "--data", str(tmp_path / "patient.npz"),
                            "--parts", "encoder,middle,decoder", "-o", str(tmp_path / "ft.pt"), "--json", str(tmp_path / "f.json")])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "f.json").read_text())
    assert result["selection"]["kept_epoch"] == 0 and result["selection"]["changed_nothing"] is True
    assert result["middle_bitwise_unchanged"] is None  # not `true`: the middle trained, and nothing was kept
    assert "fine-tuning changed nothing" in r.output
    assert result["personal_after"]["macro_auroc"] == result["personal_before"]["macro_auroc"]
