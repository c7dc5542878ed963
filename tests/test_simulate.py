"""`mupriv simulate` end to end on a tiny config: the run folder, its columns and invariants, determinism."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from simulator.cli import app

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
epochs = 1
batch_size = 8
[cohort]
clients = 3
records_per_client = 12
[federation]
rounds = 2
"""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    cfg = root / "tiny.toml"
    cfg.write_text(TINY)
    runner = CliRunner()
    dirs = []
    for i in range(2):
        result = runner.invoke(app, ["simulate", str(cfg), "-o", str(root / f"r{i}"), "--name", "t"],
                               env={"MUPRIV_CACHE_DIR": str(root / "cache")})
        assert result.exit_code == 0, result.output
        (run_dir,) = list((root / f"r{i}").iterdir())
        dirs.append(run_dir)
    return dirs


def test_run_folder_has_every_file_and_column(two_runs):
    run = two_runs[0]
    for name in ("config.toml", "manifest.json", "results.csv", "ledger.csv", "report.md", "report.html"):
        assert (run / name).is_file(), name
    assert not list(run.parent.glob(".*partial"))
    results = pd.read_csv(run / "results.csv")
    assert list(results.columns) == ["seed", "scheme", "client", "metric", "value"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(manifest["schemes"]) == 10 and manifest["config_hash"]
    assert set(results["scheme"]) == set(manifest["schemes"])


def test_bytes_equal_the_ledger_and_on_device_uplinks_are_empty(two_runs):
    run = two_runs[0]
    results = pd.read_csv(run / "results.csv")
    ledger = pd.read_csv(run / "ledger.csv")
    for scheme, rows in results.groupby("scheme"):
        sent = rows[rows["metric"] == "bytes_up"]["value"].sum()
        assert sent == ledger[(ledger["scheme"] == scheme) & (ledger["direction"] == "up")]["bytes"].sum(), scheme
    for scheme in ("mu-ft", "local-ft"):
        up = ledger[(ledger["scheme"] == scheme) & (ledger["direction"] == "up")]
        assert (up["n_params"] == 0).all() and (up["content_bytes"] == 0).all()


def test_same_config_and_seed_give_byte_identical_results(two_runs):
    a, b = (r / "results.csv" for r in two_runs)
    drop = lambda f: f[f["metric"] != "wall_s"]  # noqa: E731 - wall time is measured, not computed
    assert drop(pd.read_csv(a)).equals(drop(pd.read_csv(b)))
    text = [[line for line in p.read_text().splitlines() if ",wall_s," not in line] for p in (a, b)]
    assert text[0] == text[1]


def test_report_rerenders_and_bad_input_is_one_line(two_runs, tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["report", str(two_runs[0])]).exit_code == 0
    bad = runner.invoke(app, ["simulate", str(tmp_path / "nope.toml")])
    assert bad.exit_code == 2 and "config file not found" in bad.output
