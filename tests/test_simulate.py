"""`mupriv simulate` end to end on a tiny config: the run folder, its columns and invariants, determinism."""
from __future__ import annotations

import json
from dataclasses import replace

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
budget = "as-configured"
rounds = 2
[schemes.dp-fedavg]
noise = "seeded"  # byte identity needs reproducible DP noise; by default a device's noise is secret
"""


class _Interrupt(KeyboardInterrupt):
    pass


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Run A: the CLI, every scheme and every attack. Run B: the same config and seed through the
    Python API, interrupted after three cells and finished with `resume` (attacks off: they do not
    touch results.csv). Returns (run A, run B, the cells run B ran after resuming)."""
    import simulator.simulate as sim
    from simulator.config import load_config

    root = tmp_path_factory.mktemp("sim")
    cfg = root / "tiny.toml"
    cfg.write_text(TINY)
    env = {"MUPRIV_CACHE_DIR": str(root / "cache")}
    result = CliRunner().invoke(app, ["simulate", str(cfg), "-o", str(root / "a"), "--name", "t"], env=env)
    assert result.exit_code == 0, result.output
    (run_a,) = list((root / "a").iterdir())

    mp = pytest.MonkeyPatch()
    mp.setenv("MUPRIV_CACHE_DIR", str(root / "cache"))
    real, calls = sim._run_cell, []

    def counting(work, study, scheme, seed, *args):
        if len(calls) == 3 and not any(c == "resumed" for c in calls):
            raise _Interrupt
        calls.append(scheme)
        return real(work, study, scheme, seed, *args)

    mp.setattr(sim, "_run_cell", counting)
    with pytest.raises(_Interrupt):
        sim.simulate(load_config(cfg), runs_root=root / "b", name="t", attack=False)
    (partial,) = list((root / "b").glob(".t-*.partial"))
    assert not (partial / "results.csv").exists()  # an interrupted run never looks finished
    calls.append("resumed")
    run_b = sim.resume(partial).run_dir
    mp.undo()
    return run_a, run_b, calls[calls.index("resumed") + 1:]


def test_run_folder_has_every_file_and_column(two_runs):
    run = two_runs[0]
    for name in ("config.toml", "manifest.json", "results.csv", "timings.csv", "ledger.csv", "attacks.csv",
                 "leakage.csv", "leakage_units.csv", "report.md", "report.html"):
        assert (run / name).is_file(), name
    assert not list(run.parent.glob(".*partial"))
    results = pd.read_csv(run / "results.csv")
    assert list(results.columns) == ["seed", "scheme", "client", "metric", "value"]
    assert "wall_s" not in set(results["metric"]) and "wall_s" in set(pd.read_csv(run / "timings.csv")["metric"])
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(manifest["schemes"]) == 10 and manifest["config_hash"] and manifest["seeds"] == [0]
    assert set(results["scheme"]) == set(manifest["schemes"])
    for scheme in manifest["schemes"]:
        cell = run / "schemes" / scheme / "seed-0"
        assert (cell / "scheme.json").is_file() and (cell / "ledger" / "ledger.csv").is_file(), scheme
        # the finished folder keeps every device's final model (what `mupriv export` and the device-lost threat read)
        clients = json.loads((cell / "scheme.json").read_text())["clients"]
        assert sorted(p.name for p in (cell / "models").glob("*.pt")) == sorted(f"{c}.pt" for c in clients), scheme


def test_every_scheme_is_attacked_or_marked_not_applicable(two_runs):
    attacks = pd.read_csv(two_runs[0] / "attacks.csv")
    assert {"seed", "scheme", "client", "round", "attack", "threat_model", "metric", "value", "settings",
            "note"} <= set(attacks.columns)
    assert set(attacks["scheme"]) == set(pd.read_csv(two_runs[0] / "results.csv")["scheme"])
    for scheme in ("mu-ft", "local-ft"):  # nothing was sent: no wire score, the reason instead
        rows = attacks[attacks["scheme"] == scheme]
        wire = rows[rows["threat_model"] != "device-lost"]
        assert set(wire["metric"]) == {"applicable"} and (wire["value"] == 0).all()
        assert (wire["note"] == "not applicable: nothing leaves the device").all()
        # a lost or seized device is a different position: its personalised model is attacked
        lost = set(rows[rows["threat_model"] == "device-lost"]["attack"])
        assert lost and all(name.startswith("mi-") and name.endswith("@device-lost") for name in lost), lost
    central = attacks[(attacks["scheme"] == "central") & (attacks["metric"].isin(["r", "label_exact"]))]
    assert (central["value"] == 1).all() and set(central["threat_model"]) == {"data-custodian"}
    # membership inference also takes the positions of whoever holds a released or lost model
    wire = attacks[~attacks["threat_model"].isin(["global-model", "device-lost"])]
    fedavg = wire[wire["scheme"] == "fedavg"]
    assert {"labels", "attribute", "features", "dlg", "ig", "multistep"} <= set(fedavg["attack"])
    assert set(fedavg["threat_model"]) == {"curious-server"}
    assert {"global-model", "device-lost"} <= set(attacks[attacks["scheme"] == "fedavg"]["threat_model"])
    dp = attacks[attacks["scheme"] == "dp-fedavg"]
    dp_wire = wire[(wire["scheme"] == "dp-fedavg") & ~wire["attack"].str.startswith("dp-audit")]
    assert set(dp_wire["threat_model"]) == {"curious-server-dp"}
    # the DP audit: an empirical lower bound never above the accountant's epsilon for a valid mechanism
    audit = dp[dp["attack"].str.startswith("dp-audit")].pivot_table(index=["attack", "threat_model"], columns="metric",
                                                                     values="value")
    assert set(audit.index.get_level_values("attack")) == {"dp-audit-gradient", "dp-audit-input"}
    assert ((audit["eps_lower_bound"] >= 0) & (audit["eps_lower_bound"] <= audit["eps_accountant"])).all()
    # calibrated leakage: per-unit scores and verdicts with their nulls
    leakage = pd.read_csv(two_runs[0] / "leakage.csv")
    assert {"verdict", "gain", "ci_low", "ci_high", "null_kind"} <= set(leakage.columns)
    assert set(leakage["verdict"]) <= {"leaks", "no evidence"}
    assert (leakage[leakage["scheme"] == "central"]["verdict"] == "leaks").any()
    assert {"value", "null", "quantity"} <= set(pd.read_csv(two_runs[0] / "leakage_units.csv").columns)
    assert set(wire[wire["scheme"] == "secagg-fedavg"]["threat_model"]) == {"curious-server-secagg"}
    assert list((two_runs[0] / "plots").glob("fedavg-*.png"))  # example reconstructions for the report
    assert "## Example reconstructions" in (two_runs[0] / "report.md").read_text()


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


def _curves(run):
    rounds = pd.read_csv(run / "rounds.csv")
    last = rounds[rounds["round"] == rounds.groupby("scheme")["round"].transform("max")]
    return rounds, last


def test_rounds_csv_has_every_round_and_client_of_every_scheme(two_runs):
    run = two_runs[0]
    rounds, _ = _curves(run)
    assert list(rounds.columns) == ["seed", "scheme", "round", "client", "metric", "value"]
    clients = set(pd.read_csv(run / "results.csv")["client"])
    expect = {"personal_macro_auroc", "personal_macro_f1", "source_macro_auroc", "bytes_up", "bytes_down"}
    for scheme, rows in rounds.groupby("scheme"):
        # TINY: 2 federated rounds; mu-ft, local-ft and central per epoch (finetune.epochs = 1); round 0 = pretrained
        last = 1 if scheme in ("mu-ft", "local-ft", "central") else 2
        metrics = expect | ({"epsilon"} if scheme == "dp-fedavg" else set())
        grid = rows.groupby(["round", "client"])["metric"].apply(set)
        assert set(grid.index) == {(r, c) for r in range(last + 1) for c in clients}, scheme
        assert all(m == metrics for m in grid), scheme
        # every scheme starts from the same pretrained model
        start = rows[(rows["round"] == 0) & (rows["metric"] == "source_macro_auroc")]["value"]
        assert start.nunique() == 1, scheme
    assert set(rounds["scheme"]) == set(pd.read_csv(run / "results.csv")["scheme"])


def test_the_last_round_is_the_final_result_and_bytes_add_up_to_the_ledger(two_runs):
    run = two_runs[0]
    rounds, last = _curves(run)
    results = pd.read_csv(run / "results.csv").set_index(["scheme", "client", "metric"])["value"]
    for metric in ("personal_macro_auroc", "personal_macro_f1", "source_macro_auroc", "epsilon", "bytes_up", "bytes_down"):
        curve = last[last["metric"] == metric].set_index(["scheme", "client"])["value"]
        assert len(curve), metric
        final = results.xs(metric, level="metric").reindex(curve.index)
        assert curve.equals(final), metric  # the same model scored the same way, NaN where AUROC is undefined
    ledger = pd.read_csv(run / "ledger.csv")
    for (scheme, direction), rows in ledger.groupby(["scheme", "direction"]):
        if direction in ("up", "down"):
            sent = last[(last["scheme"] == scheme) & (last["metric"] == f"bytes_{direction}")]["value"].sum()
            assert sent == rows["bytes"].sum(), (scheme, direction)
    for _, rows in rounds[rounds["metric"].isin(["bytes_up", "bytes_down", "epsilon"])].groupby(["scheme", "client", "metric"]):
        assert rows.sort_values("round")["value"].is_monotonic_increasing  # cumulative


def test_rounds_csv_is_byte_identical_after_a_resume(two_runs):
    run_a, run_b, _ = two_runs
    assert (run_a / "rounds.csv").read_bytes() == (run_b / "rounds.csv").read_bytes()


def test_scoring_the_curves_leaves_training_alone(two_runs, tmp_path):
    """The same cells with report.curves = false give the same results.csv rows: the round probes and their
    scoring draw no random numbers from the training streams."""
    from simulator.config import load_config
    from simulator.simulate import simulate

    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY + "[report]\ncurves = false\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("MUPRIV_CACHE_DIR", str(two_runs[0].parent.parent / "cache"))
    schemes = ("local-ft", "dp-fedavg", "fedrep")
    try:
        off = simulate(replace(load_config(cfg), schemes=replace(load_config(cfg).schemes, run=schemes)),
                       runs_root=tmp_path / "off", name="off", attack=False).run_dir
    finally:
        mp.undo()
    assert not (off / "rounds.csv").exists()
    on = pd.read_csv(two_runs[0] / "results.csv", dtype=str)
    on = on[on["scheme"].isin(schemes)].reset_index(drop=True)
    assert on.equals(pd.read_csv(off / "results.csv", dtype=str))


def test_same_config_and_seed_give_byte_identical_results_even_after_a_resume(two_runs):
    run_a, run_b, _ = two_runs
    a, b = ((r / "results.csv").read_text().splitlines() for r in (run_a, run_b))
    assert [x for x in a if x not in set(b)] == [] and a == b


def test_resume_runs_only_the_unfinished_cells(two_runs):
    _, run_b, after = two_runs
    schemes = json.loads((run_b / "manifest.json").read_text())["schemes"]
    assert after == schemes[3:]  # the three cells done before the interruption were not redone
    assert not list(run_b.parent.glob(".*partial"))


def test_resume_refuses_a_finished_run_and_settings(two_runs):
    runner = CliRunner()
    done = runner.invoke(app, ["simulate", "--resume", str(two_runs[0])])
    assert done.exit_code == 2 and "finished run" in done.output
    mixed = runner.invoke(app, ["simulate", "--resume", str(two_runs[0]), "--seeds", "2"])
    assert mixed.exit_code == 2 and "drop --seeds" in mixed.output


def test_seeds_repeat_the_study_with_derived_seeds(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    result = CliRunner().invoke(app, ["simulate", str(cfg), "-o", str(tmp_path / "r"), "--name", "s", "--seeds", "2",
                                      "--seed", "5", "--schemes", "mu-ft,fedavg", "--no-attacks"],
                                env={"MUPRIV_CACHE_DIR": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    (run,) = list((tmp_path / "r").iterdir())
    results = pd.read_csv(run / "results.csv")
    assert sorted(results["seed"].unique()) == [5, 6]
    auroc = results[results["metric"] == "personal_macro_auroc"].pivot_table(index="client", columns="seed", values="value")
    assert not auroc[5].equals(auroc[6])  # a different cohort and pretraining per seed
    from simulator.report import load_run, scheme_summary

    summary = scheme_summary(load_run(run)).set_index(["scheme", "quantity"])
    row = summary.loc[("fedavg", "personal_macro_auroc")]
    assert row["n_seeds"] == 2 and row["ci_low"] <= row["mean"] <= row["ci_high"]  # a 95% interval over the seeds
    assert not (run / "attacks.csv").exists()

    # attacking the finished run afterwards fills the privacy column for every (scheme, seed) cell
    attacked = CliRunner().invoke(app, ["attack", str(run), "--budget", "quick"])
    assert attacked.exit_code == 0, attacked.output
    attacks = pd.read_csv(run / "attacks.csv")
    assert sorted(attacks["seed"].unique()) == [5, 6] and set(attacks["scheme"]) == {"mu-ft", "fedavg"}
    assert (run / "plots" / "fedavg-best.png").is_file() and "fedavg" in (run / "report.md").read_text()


def test_report_rerenders_and_bad_input_is_one_line(two_runs, tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["report", str(two_runs[0])]).exit_code == 0
    bad = runner.invoke(app, ["simulate", str(tmp_path / "nope.toml")])
    assert bad.exit_code == 2 and "config file not found" in bad.output


def test_pretraining_cache_is_keyed_by_the_thread_count():
    """The thread count changes float summation order, so a model pretrained on 1 thread must not be
    reused by a 2-thread run as if it were the same (it changed a metric in the 4th decimal)."""
    import torch

    from simulator.config import load_config
    from simulator.study import pretrain_key

    cfg = load_config("configs/quickstart.toml")
    before = torch.get_num_threads()
    try:
        keys = []
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            keys.append(pretrain_key(cfg, None))
    finally:
        torch.set_num_threads(before)
    assert keys[0] == keys[2] != keys[1]


def test_pretraining_cache_is_keyed_by_the_code(monkeypatch):
    """A new version of the training code must not reuse a model an older version pretrained."""
    import simulator.study as study
    from simulator.config import load_config

    cfg = load_config("configs/quickstart.toml")
    before = study.pretrain_key(cfg, None)
    assert len(study.pretraining_code_digest()) == 16
    monkeypatch.setattr(study, "pretraining_code_digest", lambda: "another-version")
    assert study.pretrain_key(cfg, None) != before


def test_results_parquet_holds_the_same_table_as_results_csv(two_runs):
    pytest.importorskip("pyarrow")  # the optional `parquet` extra (the test extra installs it)
    run = two_runs[0]
    parquet = pd.read_parquet(run / "results.parquet")
    csv = pd.read_csv(run / "results.csv")
    assert list(parquet.columns) == list(csv.columns) and len(parquet) == len(csv)
    pd.testing.assert_frame_equal(parquet[["seed", "scheme", "client", "metric"]], csv[["seed", "scheme", "client", "metric"]])
    assert ((parquet["value"] - csv["value"]).abs().fillna(0) < 1e-6 * (1 + csv["value"].abs().fillna(0))).all()
