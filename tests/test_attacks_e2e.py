"""End to end: real Flower runs written as scheme run directories, attacked with `attack_run` and
`attack_command`; the attack stage never reads a client's data."""
from __future__ import annotations

import builtins
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import typer
from typer.testing import CliRunner

import attacks.run as run_mod
from attacks.budget import Budget
from simulator.cli_attack import CSV_NAME, attack_command
from attacks.observe import observe_run
from attacks.run import attack_observations, attack_run, score_results
from simulator.errors import MuprivError
from simulator.ledger import WireLedger
from tests.attack_fixtures import fedavg_run_dir, query_run_dir, secagg_view

# Iteration caps only: the default 1 s time caps stop an inversion at a load-dependent step, and two identical
# attack runs on a busy machine then differed (0.00105 against 0.00183), which the determinism check would flag.
TINY = Budget(name="tiny", max_targets=None, max_records=2, dlg_iters=2, dlg_inner=4, ig_iters=8, multistep_iters=4, prior_samples=8,
             attribute_shadow_clients=32, mi_shadows=0, dlg_seconds=None, ig_seconds=None, multistep_seconds=None)


@pytest.fixture(scope="module")
def threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fedavg_dir(tmp_path_factory, threads) -> Path:
    """2 clients x 2 rounds, one record each, plain SGD: one gradient per update."""
    return fedavg_run_dir(tmp_path_factory.mktemp("fedavg") / "run", n_clients=2, per_client=1, rounds=2, optimizer="sgd")


def _value(frame: pd.DataFrame, attack: str, metric: str) -> pd.Series:
    return frame[(frame["attack"] == attack) & (frame["metric"] == metric)]["value"]


def test_attack_run_on_a_fedavg_run(fedavg_dir):
    frame = attack_run(fedavg_dir, TINY, seed=0)
    assert list(frame.columns) == ["scheme", "client", "round", "attack", "threat_model", "metric", "value", "settings", "note"]
    per_client = frame[~frame["attack"].str.startswith("mi-")]
    assert set(per_client["client"]) == {"client-000", "client-001"} and set(per_client["round"]) == {1, 2}
    assert set(frame[~frame["attack"].str.startswith("mi-")]["threat_model"]) == {"curious-server"}
    # membership inference on every model the server holds: the round's client models and the global models
    mi = frame[frame["attack"].str.startswith("mi-")]
    assert {"mi-loss@client-update", "mi-calibrated@client-update", "mi-loss@global"} <= set(mi["attack"])
    assert set(mi["threat_model"]) == {"curious-server", "global-model"}
    # Batch-1 SGD updates: every diagnosis and the pooled features leak exactly.
    assert (_value(frame, "labels", "label_exact") == 1.0).all() and len(_value(frame, "labels", "label_exact")) == 4
    assert (_value(frame, "features", "feat_ccos_best") > 0.999).all()
    for attack in ("dlg", "ig"):
        res = _value(frame, attack, "residual")
        assert len(res) == 4 and np.isfinite(res).all()
        assert np.isfinite(_value(frame, attack, "r")).all() and np.isfinite(_value(frame, attack, "reid_rank")).all()
    assert (_value(frame, "multistep", "applicable") == 0).all()  # one SGD step: ig covers it
    settings = json.loads(frame[frame["attack"] == "ig"]["settings"].iloc[0])
    assert settings["method"] == "ig" and settings["threat"]["observable"] == "per-client updates"
    one_target = attack_run(fedavg_dir, TINY.with_overrides(max_targets=1, attacks=("dlg",)), seed=0)
    assert len(_value(one_target, "dlg", "residual")) == 1 and len(_value(one_target, "dlg", "skipped")) == 3
    again = attack_run(fedavg_dir, TINY, seed=0)
    pd.testing.assert_series_equal(frame["value"].drop(frame.index[frame["metric"] == "seconds"]),
                                   again["value"].drop(again.index[again["metric"] == "seconds"]))


def test_the_attack_stage_never_reads_client_data(fedavg_dir, monkeypatch):
    """Every open of RUN_DIR/truth/<client>.npz is logged with the stage it happened in. The attack stage
    may read only the server's public files (none exist here); the scoring stage must read the clients'."""
    truth = (fedavg_dir / "truth").resolve()
    reads: list[tuple[str, str]] = []
    stage = ["attack"]
    real_open, real_io_open, real_np_load = builtins.open, io.open, np.load

    def spy(path):  # noqa: ANN001
        try:
            p = Path(path).resolve()
        except TypeError:
            return
        if truth in p.parents and p.name not in ("source.npz", "population_mean.npz"):
            reads.append((stage[0], p.name))

    def fake_open(file, *a, **k):  # noqa: ANN001
        spy(file)
        return real_open(file, *a, **k)

    def fake_io_open(file, *a, **k):  # noqa: ANN001
        spy(file)
        return real_io_open(file, *a, **k)

    def fake_np_load(file, *a, **k):  # noqa: ANN001
        spy(file)
        return real_np_load(file, *a, **k)

    real_score = run_mod.score_results

    def scoring(*a, **k):  # noqa: ANN001
        stage[0] = "score"
        return real_score(*a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_io_open)
    monkeypatch.setattr(np, "load", fake_np_load)
    monkeypatch.setattr(run_mod, "score_results", scoring)
    run_mod.attack_run(fedavg_dir, TINY, seed=1)
    assert reads, "the spy saw no truth read at all: it would not catch a leak either"
    assert all(s == "score" for s, _ in reads), reads
    assert {name for _, name in reads} == {"client-000.npz", "client-001.npz"}


def test_attacks_run_with_truth_absent_and_score_after(fedavg_dir, tmp_path):
    hidden = tmp_path / "hidden-truth"
    shutil.move(str(fedavg_dir / "truth"), hidden)
    try:
        info, observations, prior, results = attack_observations(fedavg_dir, TINY, seed=2)
    finally:
        shutil.move(str(hidden), fedavg_dir / "truth")
    frame, _units, cases = score_results(fedavg_dir, info, observations, results, prior)
    assert (_value(frame, "labels", "label_exact") == 1.0).all()
    assert cases and all(c.rec.shape == c.true.shape for c in cases)


def test_attack_command_writes_csv_and_plots(fedavg_dir, tmp_path):
    app = typer.Typer()
    app.command("attack")(attack_command)
    app.command("noop")(lambda: None)  # two commands, so "attack" stays a subcommand
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["attack", str(fedavg_dir), "--out", str(out), "--budget", "quick", "--seed", "0"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / CSV_NAME)
    assert {"labels", "features", "dlg", "ig"} <= set(frame["attack"])
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "attack-dlg-best.png" in pngs and "attack-ig-median.png" in pngs
    assert all((out / p).stat().st_size > 1000 for p in pngs)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind
    assert "curious-server" in result.output


def test_bad_run_directories_are_one_clear_error(fedavg_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MuprivError, match="scheme.json is missing"):
        attack_run(empty, TINY)
    (empty / "scheme.json").write_text((fedavg_dir / "scheme.json").read_text())
    with pytest.raises(MuprivError, match="ledger is missing"):
        attack_run(empty, TINY)
    (empty / "scheme.json").write_text("{not json")
    with pytest.raises(MuprivError, match="not valid JSON"):
        attack_run(empty, TINY)
    with pytest.raises(MuprivError, match="unknown attack budget"):
        attack_run(fedavg_dir, "huge")


def test_nothing_leaves_the_device(tmp_path, threads):
    run_dir = query_run_dir(tmp_path / "mu-ft", upload=False)
    frame = attack_run(run_dir, TINY)
    assert set(frame["metric"]) == {"applicable"} and (frame["value"] == 0).all()
    assert set(frame["note"]) == {"not applicable: nothing leaves the device"}
    assert set(frame["client"]) == {"client-000", "client-001"}


def test_raw_records_are_a_perfect_score(tmp_path, threads):
    run_dir = query_run_dir(tmp_path / "central", upload=True)
    frame = attack_run(run_dir, TINY)
    assert set(frame["attack"]) == {"raw"} and set(frame["threat_model"]) == {"data-custodian"}
    for metric in ("r", "label_exact", "reid_top1", "presence_exact", "mse_skill"):
        assert (_value(frame, "raw", metric) == 1.0).all(), metric
    assert (_value(frame, "raw", "mse") == 0.0).all()


def test_secagg_sum_is_one_observation_per_round(tmp_path, threads):
    run_dir = fedavg_run_dir(tmp_path / "fedavg4", n_clients=4, per_client=1, rounds=1, optimizer="sgd")
    agg_dir = tmp_path / "secagg"
    shutil.copytree(run_dir, agg_dir)
    secagg_view(WireLedger.load(run_dir / "ledger")).save(agg_dir / "ledger")
    info = json.loads((agg_dir / "scheme.json").read_text())
    info.update(scheme="secagg-fedavg", observable="aggregate only")
    (agg_dir / "scheme.json").write_text(json.dumps(info))
    _, observations = observe_run(agg_dir)
    assert [o.kind for o in observations] == ["aggregate"] and observations[0].num_clients == 4
    assert len(observations[0].clients) == 4
    # Flower's SecAgg+ workflow unmasks the example-weighted MEAN of the clients' parameters: the same
    # observation must come out of that form (inferred, since it lies near the global parameters).
    ups = [o for o in observe_run(run_dir)[1]]
    mean_update = {n: np.mean([o.update[n] for o in ups], axis=0) for n in ups[0].update}
    np.testing.assert_allclose(observations[0].update["decoder.layers.2.ff.bias"], mean_update["decoder.layers.2.ff.bias"],
                               rtol=1e-4, atol=1e-9)
    ledger = WireLedger.load(agg_dir / "ledger")
    server = next(e for e in ledger.entries if e.direction == "server")
    glob = observations[0].global_params
    server.payload = {name: glob[name.split("/", 1)[1]] + a / 4 for name, a in server.payload.items()}
    ledger.save(agg_dir / "ledger")
    (as_mean,) = observe_run(agg_dir)[1]
    assert "params-mean" in as_mean.note
    np.testing.assert_allclose(as_mean.update["decoder.layers.2.ff.bias"], mean_update["decoder.layers.2.ff.bias"],
                               rtol=1e-3, atol=1e-7)
    per_client = attack_run(run_dir, TINY.with_overrides(attacks=("labels", "features")))
    summed = attack_run(agg_dir, TINY.with_overrides(attacks=("labels", "features")))
    assert set(summed["threat_model"]) == {"curious-server-secagg"}
    assert _value(summed, "features", "feat_ccos_best").iloc[0] < _value(per_client, "features", "feat_ccos_best").min() - 0.01


def test_attack_numbers_do_not_depend_on_the_callers_thread_count(fedavg_dir):
    """The attack stage pins its own thread count, so a 2-core laptop and a 64-core server agree."""
    frames = []
    for n in (1, 2):
        torch.set_num_threads(n)
        frames.append(attack_run(fedavg_dir, TINY, seed=0))
        assert torch.get_num_threads() == n  # the caller's count is restored
    torch.set_num_threads(1)
    measured = [f[f["metric"] != "seconds"] for f in frames]  # wall times differ run to run
    pd.testing.assert_frame_equal(measured[0], measured[1])


def test_a_budget_attacks_a_spread_of_rounds_and_says_which_it_skipped(fedavg_dir):
    """max_rounds = 1 keeps the first round (2 or more: the first, the last and evenly between): the other round's
    observations get one "skipped" row each, with the rounds that were attacked."""
    frame = attack_run(fedavg_dir, TINY.with_overrides(max_rounds=1, attacks=("labels",)), seed=0)
    skipped = frame[frame["attack"] == "all"]
    assert len(skipped) == 2 and set(skipped["round"]) == {2} and (skipped["metric"] == "skipped").all()
    assert skipped["note"].str.contains(r"outside the budget's 1 attacked rounds \(\[1\]\)").all()
    assert set(frame[frame["attack"] == "labels"]["round"]) == {1}
