"""Every config value is checked where it is declared: floats finite, each key in its range, one error line."""
from __future__ import annotations

import dataclasses
import math

import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.config import RunConfig, parse_config
from simulator.config_checks import allowed, interval
from simulator.errors import MuprivError

runner = CliRunner()


@pytest.mark.parametrize("table,message", [
    ({"train": {"lr": math.nan}}, "train.lr = nan is not a finite number"),
    ({"finetune": {"lr": math.inf}}, "finetune.lr = inf is not a finite number"),
    ({"train": {"weight_decay": -math.inf}}, "train.weight_decay = -inf is not a finite number"),
    ({"data": {"fs": math.nan}}, "data.fs = nan is not a finite number"),
    ({"model": {"d_model": 0}}, "model.d_model = 0 is out of range: give a value in [1, inf)"),
    ({"model": {"dropout": 1.5}}, "model.dropout = 1.5 is out of range: give a value in [0, 1)"),
    ({"model": {"d_state": 0}}, "model.d_state = 0 is out of range"),
    ({"model": {"ncp_sparsity": 0.95}}, "model.ncp_sparsity = 0.95 is out of range"),
    ({"model": {"ncp_units": 8}}, "model.ncp_units = 8: the NCP decoder needs more than n_classes + 2 = 8"),
    ({"federation": {"timeout_s": -1.0}}, "federation.timeout_s = -1.0 is out of range: give a value in (0, inf)"),
    ({"train": {"alpha": 1.2}}, "train.alpha = 1.2 is out of range: give a value in [0, 1]"),
    ({"train": {"pos_weight": 0.0}}, "train.pos_weight = 0.0 is out of range"),
    ({"cohort": {"shift": 2.0}}, "cohort.shift = 2.0 is out of range"),
    ({"cohort": {"source_fraction": 1.0}}, "cohort.source_fraction = 1.0 is out of range: give a value in (0, 1)"),
    ({"cohort": {"dirichlet_alpha": 0.0}}, "cohort.dirichlet_alpha = 0.0 is out of range"),
    ({"data": {"val_fraction": 0.0}}, "data.val_fraction = 0.0 is out of range"),
    ({"seeds": 0}, "seeds = 0 is out of range"),
])
def test_bad_values_are_refused_naming_the_key_and_the_range(table, message):
    with pytest.raises(MuprivError) as err:
        parse_config(table)
    assert str(err.value).startswith("config: " + message), str(err.value)


def test_every_float_key_is_checked_and_every_range_parses():
    """A new float key is covered by the finiteness check without anyone listing it; ranges are well formed and
    hold their own defaults."""
    def walk(cls, obj, prefix=""):
        for f in dataclasses.fields(cls):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from walk(type(value), value, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", f, value

    keys = list(walk(RunConfig, RunConfig()))
    for key, f, value in keys:
        if allowed(f):
            assert value in interval(allowed(f)), key
        if isinstance(value, float):
            section, _, name = key.rpartition(".")
            table = {section: {name: math.nan}} if section else {name: math.nan}
            with pytest.raises(MuprivError, match="not a finite number"):
                parse_config(table)
    assert sum(1 for _, f, _ in keys if allowed(f)) >= 25


def test_alpha_reaches_self_distillation():
    """train.alpha used to be left out of the plan: every value trained with the phase default 0.8."""
    plan = parse_config({"train": {"alpha": 0.3}}).train.plan()
    assert [p.alpha for p in plan if p.self_distill] == [0.3]


@pytest.mark.parametrize("line", ["lr = nan", "lr = inf", "lr = -inf"])
def test_train_with_a_non_finite_learning_rate_is_one_line(tmp_path, line):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f"[train]\n{line}\n")
    r = runner.invoke(app, ["train", "-c", str(cfg), "-o", str(tmp_path / "m.pt")])
    assert r.exit_code == 2 and r.output.startswith(f"error: {cfg}: train.lr = ") and r.output.count("\n") == 1, r.output
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("section,line", [("model", "d_model = 0"), ("model", "dropout = 1.5"),
                                          ("federation", "timeout_s = -1.0")])
def test_config_check_names_the_key(tmp_path, section, line):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f"[{section}]\n{line}\n")
    r = runner.invoke(app, ["config", "check", str(cfg)])
    assert r.exit_code == 2 and f"{section}.{line.split(' =')[0]} = " in r.output and "Traceback" not in r.output


def test_a_diverging_phase_is_one_line(tmp_path):
    from simulator.core.phases import Phase, train_phase
    from tests.helpers import frequency_task, tiny_model

    phase = Phase("full", ("encoder", "middle", "decoder"), epochs=2, lr=1e6, kernel_lr=1e6, batch_size=16)
    with pytest.raises(MuprivError, match="diverged in epoch 1 .*lower its learning rate"):
        train_phase(tiny_model(), phase, frequency_task(n=32, length=64))
