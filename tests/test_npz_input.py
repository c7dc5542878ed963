"""A tensor .npz as input: bad records, labels outside {0, 1}, and a rate or length other than the config's are
reported or refused in one line, never trained on silently; `data inspect` shows them and no invented rate."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.core.tensors import load_npz
from simulator.errors import MuprivError

runner = CliRunner()

CFG = """
[model]
d_model = 16
dropout = 0.0
[data]
length = 64
fs = 100.0
[train]
full_epochs = 1
mu_epochs = 0
batch_size = 16
"""


def _npz(path, n=24, length=64, fs=None, y_bad=(), x_bad=()):  # noqa: ANN001, ANN202
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, length, 12)).astype(np.float32)
    y = (rng.random((n, 6)) < 0.3).astype(np.float32)
    y[:4, 0], y[4:8, 0] = 1, 0  # both classes present in any split
    for i, value in y_bad:
        y[i, 1] = value
    for i in x_bad:
        x[i, 5, 3] = np.nan
    arrays = dict(x=x, y=y)
    if fs is not None:
        arrays["fs"] = np.array(fs)
    np.savez(path, **arrays)
    return path


def _train(tmp_path, data, *extra):  # noqa: ANN001, ANN202
    cfg = tmp_path / "c.toml"
    cfg.write_text(CFG)
    return runner.invoke(app, ["train", "-c", str(cfg), "--data", str(data), "-o", str(tmp_path / "m.pt"),
                               "--json", str(tmp_path / "t.json"), *extra])


def _error(result) -> str:  # noqa: ANN001
    assert result.exit_code == 2 and "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    return result.output.strip().splitlines()[-1]


def test_labels_outside_0_and_1_are_refused(tmp_path):
    data = _npz(tmp_path / "d.npz", y_bad=[(3, 2.0), (5, 0.5)])
    line = _error(_train(tmp_path, data))
    assert f"{data}: record 3: label 2.0 for RBBB is not 0 or 1" in line and "--skip-bad" in line
    with pytest.raises(MuprivError, match=r"2 record\(s\) have labels other than 0 or 1 \(record 3"):
        load_npz(data)


def test_skip_bad_leaves_bad_records_out_and_counts_them(tmp_path):
    data = _npz(tmp_path / "d.npz", y_bad=[(3, 2.0)], x_bad=[7])
    r = _train(tmp_path, data, "--skip-bad")
    assert r.exit_code == 0, r.output
    problems = json.loads((tmp_path / "t.json").read_text())["data"]["problems"]
    assert any("skipped" in p and "record 3" in p for p in problems) and any("record 7: NaN" in p for p in problems)
    result = json.loads((tmp_path / "t.json").read_text())["data"]
    assert result["train_records"] + result["val_records"] == 22


def test_unknown_labels_may_hold_anything_and_are_masked(tmp_path):
    y = np.zeros((4, 6), np.float32)
    y[0, 2] = np.nan
    known = np.ones((4, 6), bool)
    known[0, 2] = False
    np.savez(tmp_path / "k.npz", x=np.zeros((4, 8, 12), np.float32), y=y, known=known)
    t = load_npz(tmp_path / "k.npz")
    assert float(t.y[0, 2]) == 0.0 and not bool(t.known[0, 2])  # a NaN target times a 0 mask would still be NaN


def test_a_length_or_rate_other_than_the_configs_is_refused(tmp_path):
    line = _error(_train(tmp_path, _npz(tmp_path / "long.npz", length=128)))
    assert "records are 128 samples long but data.length = 64" in line and "set data.length = 128" in line
    line = _error(_train(tmp_path, _npz(tmp_path / "rate.npz", fs=250.0)))
    assert "at 250 Hz but data.fs = 100" in line and "set data.fs = 250" in line
    assert _train(tmp_path, _npz(tmp_path / "ok.npz", fs=100.0)).exit_code == 0


def test_inspect_reports_bad_records_and_no_invented_rate(tmp_path):
    data = _npz(tmp_path / "d.npz", y_bad=[(3, 2.0)], x_bad=[7])
    line = _error(runner.invoke(app, ["data", "inspect", str(data)]))
    assert "record 3: label 2.0 for RBBB is not 0 or 1" in line and "--skip-bad" in line
    r = runner.invoke(app, ["data", "inspect", str(data), "--skip-bad"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "22 records" in r.output and "at a rate the file does not state" in r.output and "400 Hz" not in r.output
    assert "2 record(s) skipped" in r.output and "record 7: NaN or infinite samples" in r.output
    stated = runner.invoke(app, ["data", "inspect", str(_npz(tmp_path / "s.npz", fs=250.0))], env={"COLUMNS": "200"})
    assert stated.exit_code == 0 and "at 250 Hz" in stated.output


@pytest.mark.parametrize("command", ["train", "finetune", "simulate", "run-scheme"])
def test_the_skip_bad_hint_names_a_flag_every_data_command_has(command):
    r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--skip-bad" in r.output
