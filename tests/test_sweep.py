"""Sweeps: --set parsing, the grid, one folder for all points, resume per cell, and the trade-off report."""
from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.config import load_config
from simulator.errors import MuprivError
from simulator.config import apply_settings, check_axes
from simulator.config_grid import Axis, grid, parse_set, parse_sweep, parse_value

TINY = """
seed = 0
[model]
d_model = 16
d_state = 8
[data]
synthetic_records = 64
fs = 50.0
length = 256
[train]
full_epochs = 1
mu_epochs = 1
[finetune]
epochs = 2
batch_size = 8
[cohort]
clients = 3
records_per_client = 12
[schemes]
run = ["mu-ft", "dp-fedavg"]
[schemes.dp-fedavg]
noise = "seeded"
"""


class _Interrupt(KeyboardInterrupt):
    pass


def test_values_parse_as_toml_and_bare_words_as_strings():
    assert parse_value("3e-3") == 0.003 and parse_value("2") == 2 and parse_value("true") is True
    assert parse_value("start") == "start" and parse_value('["mu-ft", "fedavg"]') == ["mu-ft", "fedavg"]
    assert parse_set("train.lr=1e-2") == ("train.lr", 0.01)
    assert parse_sweep("schemes.dp-fedavg.noise_multiplier=0.5,1,2") == Axis("schemes.dp-fedavg.noise_multiplier",
                                                                                (0.5, 1, 2))
    for bad in ("train.lr", "=3", "train.lr="):
        with pytest.raises(MuprivError, match="KEY=VALUE"):
            parse_set(bad)


def test_set_goes_through_the_config_parser_with_one_line_errors():
    cfg = load_config(None)
    changed = apply_settings(cfg, [("train.lr", 0.02), ("schemes.fedprox.mu", 0.1), ("cohort.clients", 6)])
    assert changed.train.lr == 0.02 and changed.cohort.clients == 6 and changed.scheme_params("fedprox").mu == 0.1
    with pytest.raises(MuprivError, match="unknown config key 'train.lrr'; did you mean 'train.lr'"):
        apply_settings(cfg, [("train.lrr", 1.0)])
    with pytest.raises(MuprivError, match="noise_multiplier"):
        apply_settings(cfg, [("schemes.dp-fedavg.noise_multplier", 1.0)])
    with pytest.raises(MuprivError, match="train.lr is a value, not a table"):
        apply_settings(cfg, [("train.lr.x", 1.0)])
    with pytest.raises(MuprivError, match="repeat a key"):
        check_axes(cfg, (Axis("train.lr", (1e-3,)), Axis("train.lr", (1e-2,))))


def test_grid_is_every_combination_first_axis_slowest():
    axes = (Axis("a", (1, 2)), Axis("b", ("x", "y", "z")))
    points = grid(axes)
    assert len(points) == 6 and points[0] == (("a", 1), ("b", "x")) and points[3] == (("a", 2), ("b", "x"))


def test_a_sweep_table_in_the_config_is_checked_point_by_point(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(TINY + '\n[sweep]\n"schemes.dp-fedavg.noise_multiplier" = [0.5, 2.0]\n')
    load_config(good)  # the [sweep] table is not a setting: the base config loads
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY + '\n[sweep]\n"train.lr" = [0.01, -1.0]\n')
    with pytest.raises(MuprivError, match="train.lr"):
        load_config(bad)


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """A noise-multiplier sweep of 2 points x 2 schemes, interrupted after 3 cells and resumed."""
    import simulator.simulate as sim

    root = tmp_path_factory.mktemp("sweep")
    cfg = root / "tiny.toml"
    cfg.write_text(TINY)
    mp = pytest.MonkeyPatch()
    mp.setenv("MUPRIV_CACHE_DIR", str(root / "cache"))
    real, calls = sim._run_cell, []

    def counting(work, study, scheme, seed, *args):
        if len(calls) == 3 and "resumed" not in calls:
            raise _Interrupt
        calls.append(f"{work.name}/{scheme}")
        return real(work, study, scheme, seed, *args)

    mp.setattr(sim, "_run_cell", counting)
    args = ["simulate", str(cfg), "-o", str(root / "runs"), "--name", "nm", "--no-attacks",
            "--sweep", "schemes.dp-fedavg.noise_multiplier=0.5,2", "--set", "finetune.lr=5e-3"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 2 and "interrupted" in first.output
    (partial,) = list((root / "runs").glob(".nm-*.partial"))
    assert not (partial / "sweep.csv").exists()  # an interrupted sweep never looks finished
    calls.append("resumed")
    done = CliRunner().invoke(app, ["simulate", "--resume", str(partial)])
    mp.undo()
    assert done.exit_code == 0, done.output
    (run,) = [p for p in (root / "runs").iterdir() if not p.name.startswith(".")]
    return run, calls


def test_one_folder_holds_every_point_and_resume_redoes_only_unfinished_cells(sweep_run):
    run, calls = sweep_run
    points = pd.read_csv(run / "sweep.csv")
    assert list(points.columns) == ["point", "schemes.dp-fedavg.noise_multiplier"]
    assert points["schemes.dp-fedavg.noise_multiplier"].tolist() == [0.5, 2.0]
    after = calls[calls.index("resumed") + 1:]
    assert calls[:3] == [".p00.partial/mu-ft", ".p00.partial/dp-fedavg", ".p01.partial/mu-ft"]
    assert after == [".p01.partial/dp-fedavg"]  # the three finished cells were kept
    results = pd.read_csv(run / "results.csv")
    assert list(results.columns)[:2] == ["point", "seed"] and set(results["point"]) == {"p00", "p01"}
    for point, nm in (("p00", 0.5), ("p01", 2.0)):
        point_cfg = load_config(run / "points" / point / "config.toml")
        assert point_cfg.scheme_params("dp-fedavg").noise_multiplier == nm and point_cfg.finetune.lr == 5e-3
        assert (run / "points" / point / "report.md").is_file()
    eps = results[(results["metric"] == "epsilon") & (results["scheme"] == "dp-fedavg")].groupby("point")["value"].mean()
    assert eps["p00"] > eps["p01"] > 0  # more noise, smaller epsilon
    for name in ("rounds.csv", "failures.csv"):  # the points' files, stacked with their point
        stacked = pd.read_csv(run / name)
        parts = [pd.read_csv(run / "points" / p / name).assign(point=p) for p in ("p00", "p01")]
        assert list(stacked.columns)[0] == "point"
        pd.testing.assert_frame_equal(stacked, pd.concat(parts, ignore_index=True)[list(stacked.columns)], check_dtype=False)
        assert name == "failures.csv" or len(stacked) > 0


def test_the_sweep_report_draws_epsilon_against_gain(sweep_run):
    run, _ = sweep_run
    text = (run / "report.md").read_text()
    assert "## Sweep" in text and "points/p01/report.md" in text
    assert "### Points compared with p00 (schemes.dp-fedavg.noise_multiplier=0.5)" in text  # paired, per scheme
    assert "| dp-fedavg | p01 (schemes.dp-fedavg.noise_multiplier=2) | Δ macro-AUROC |" in text
    assert (run / "figures" / "epsilon-vs-gain.png").is_file() and "epsilon-vs-gain.png" in text
    assert (run / "figures" / "gain-vs-0.png").is_file()  # gain against the swept noise multiplier
    rerender = CliRunner().invoke(app, ["report", str(run)])
    assert rerender.exit_code == 0, rerender.output
    assert (run / "report.md").read_text() == text
