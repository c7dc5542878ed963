"""Cross-round disaggregation of SecAgg aggregates (attacks/disaggregate.py): exact on synthetic systems,
honest about what is not identifiable, and on real Flower runs with partial participation it turns round
aggregates back into per-client updates that the existing attacks read, without reading any truth."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from attacks.budget import get_budget
from attacks.disaggregate import (KIND, disaggregate, disaggregation_report, mean_true_updates, recovery_scores,
                                  solve_rounds, update_similarity, windows)
from attacks.observe import DataSpec, LocalTraining, Observation, observe_run
from attacks.priors import population_prior
from attacks.run import score_results
from attacks.suite import AttackContext, attack_labels, run_attacks
from attacks.threat import threat_for
from simulator.core.model import TDSSM
from simulator.engine.api import run_federation
from simulator.errors import MuprivError
from simulator.ledger import WireLedger
from simulator.scheme_record import AGGREGATE
from tests.attack_fixtures import CFG, _params_record, client_data, fedavg_apps, secagg_view, write_run_dir

THREAT = threat_for("secagg-fedavg", AGGREGATE)
SHAPES = {"a": (3, 4), "b": (5,)}


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ synthetic systems
def _updates(n_clients: int, seed: int = 0) -> dict[int, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {i: {n: rng.normal(size=s).astype(np.float32) for n, s in SHAPES.items()} for i in range(n_clients)}


def _aggregate(rnd: int, members: tuple[int, ...], updates: dict[int, dict[str, np.ndarray]],
               examples: dict[int, int] | None = None, totals: bool = True) -> Observation:
    """What observe.py makes of a SecAgg+ round: the (example-weighted) mean update of the members."""
    w = np.array([examples[m] if examples else 1.0 for m in members], np.float64)
    mean = {n: (sum(wi * updates[m][n].astype(np.float64) for wi, m in zip(w, members)) / w.sum()).astype(np.float32)
            for n in SHAPES}
    return Observation(scheme="secagg-fedavg", round=rnd, kind="aggregate", threat=THREAT, model=CFG,
                       data=DataSpec(256, 400.0, "record", "test"), training=LocalTraining(optimizer="sgd", lr=0.05),
                       global_params={n: np.full(s, float(rnd), np.float32) for n, s in SHAPES.items()}, update=mean,
                       num_examples=int(w.sum()) if (totals and examples) else None, num_clients=len(members),
                       partition_ids=members, clients=tuple(f"client-{m:03d}" for m in members))


def _system(subsets: list[tuple[int, ...]], updates, **kw) -> list[Observation]:
    return [_aggregate(r + 1, s, updates, **kw) for r, s in enumerate(subsets)]


def _random_subsets(n_clients: int, k: int, rounds: int, seed: int = 0) -> list[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    return [tuple(sorted(rng.choice(n_clients, k, replace=False).tolist())) for _ in range(rounds)]


def test_full_column_rank_recovers_every_client_exactly():
    updates = _updates(6)
    subsets = _random_subsets(6, 3, 10)
    (report,) = disaggregation_report(_system(subsets, updates))
    assert report.solve.rank == 6 and report.solve.identifiable.all() and report.solve.residual < 1e-6
    assert not report.skipped and len(report.observations) == 6
    for o in report.observations:
        truth = updates[int(o.partition_ids[0])]
        assert o.kind == KIND and o.num_clients == 1 and o.threat == THREAT and o.clients == (f"client-{o.partition_ids[0]:03d}",)
        assert update_similarity(o.update, truth)["rel_error"] < 1e-5
        assert o.note.startswith("disaggregated from 10 rounds") and "rank 6 of 6" in o.note and "residual" in o.note
        rows = [r + 1 for r, s in enumerate(subsets) if o.partition_ids[0] in s]
        assert o.round == rows[-1]  # its latest round; its base is the mean of the globals it started from
        np.testing.assert_allclose(o.global_params["a"], np.full(SHAPES["a"], np.mean(rows)), rtol=1e-6)


def test_what_is_not_identifiable_is_reported_not_guessed():
    updates = _updates(5)
    # Pairs 0-1-2 close an odd cycle: identifiable. Pair 3-4 only ever appears together: its split is not.
    report = disaggregate(_system([(0, 1), (1, 2), (0, 2), (3, 4), (3, 4)], updates))
    assert sorted(o.partition_ids[0] for o in report) == [0, 1, 2]
    for o in report:
        assert update_similarity(o.update, updates[o.partition_ids[0]])["rel_error"] < 1e-5
    (full,) = disaggregation_report(_system([(0, 1), (1, 2), (0, 2), (3, 4), (3, 4)], updates))
    assert full.solve.rank == 4 and set(full.skipped) == {"client-003", "client-004"}
    assert all(why.startswith("not identifiable") and "rank 4 of 5" in why for why in full.skipped.values())
    # An even cycle (a bipartite pair graph) determines no client at all, however many rounds repeat it.
    bipartite = _system([(0, 2), (2, 3), (1, 3), (0, 1)] * 3, updates)
    assert disaggregate(bipartite) == []
    (none,) = disaggregation_report(bipartite)
    assert none.solve.rank == 3 and len(none.skipped) == 4 and none.summary()["recovered"] == 0


def test_unequal_clients_are_exact_with_the_round_totals_and_flagged_without():
    updates = _updates(4, seed=1)
    examples = {0: 3, 1: 10, 2: 1, 3: 7}
    subsets = [(0, 1, 2), (1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2)]
    (weighted,) = disaggregation_report(_system(subsets, updates, examples=examples))
    assert weighted.weighting == "examples"
    assert {m: round(n) for m, n in weighted.examples.items()} == examples
    for o in weighted.observations:
        m = o.partition_ids[0]
        assert o.num_examples == examples[m] and update_similarity(o.update, updates[m])["rel_error"] < 1e-5
    (blind,) = disaggregation_report(_system(subsets, updates, examples=examples, totals=False))
    assert blind.weighting == "equal" and "equal weights assumed" in blind.observations[0].note
    assert max(update_similarity(o.update, updates[o.partition_ids[0]])["rel_error"] for o in blind.observations) > 0.1


def test_slow_drift_is_recovered_as_the_clients_mean_and_shows_in_the_residual():
    base, step = _updates(5, seed=2), _updates(5, seed=4)
    subsets = _random_subsets(5, 2, 16, seed=5)
    per_round = {(f"client-{m:03d}", r + 1): {n: base[m][n] + 0.02 * (r + 1) * step[m][n] for n in SHAPES}
                 for r, s in enumerate(subsets) for m in s}
    aggs = []
    for r, s in enumerate(subsets):
        ups = {m: per_round[(f"client-{m:03d}", r + 1)] for m in s}
        aggs.append(_aggregate(r + 1, s, ups))
    (report,) = disaggregation_report(aggs)
    assert report.solve.identifiable.all() and report.solve.residual > 1e-3
    scores = recovery_scores(report.observations, mean_true_updates(per_round))
    assert len(scores) == 5 and min(s["cosine"] for s in scores.values()) > 0.98
    recent = disaggregate(aggs, decay=0.5)  # recent rounds weigh more: still one solution per client
    assert len(recent) == 5 and all("rank 5" in o.note for o in recent)


def test_windows_and_bad_settings():
    assert windows(8, None) == [slice(0, 8)]
    assert windows(8, 4) == [slice(0, 4), slice(4, 8)]
    assert windows(8, 5, 2) == [slice(0, 5), slice(2, 7), slice(3, 8)]
    updates = _updates(3)
    aggs = _system([(0, 1), (1, 2), (0, 2)] * 2, updates)
    per_window = disaggregation_report(aggs, window=3)
    assert [d.rounds.round_numbers for d in per_window] == [(1, 2, 3), (4, 5, 6)]
    assert all(len(d.observations) == 3 for d in per_window)
    with pytest.raises(MuprivError, match="decay"):
        disaggregate(aggs, decay=0.0)
    with pytest.raises(MuprivError, match="window"):
        disaggregate(aggs, window=0)
    # The solver alone: a tall consistent system is solved exactly and every column is identifiable.
    p = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 0]], float)
    x = np.arange(6.0).reshape(3, 2)
    sol = solve_rounds(p, p @ x)
    np.testing.assert_allclose(sol.x, x, atol=1e-12)
    assert sol.rank == 3 and sol.residual < 1e-12 and sol.condition > 1


# ------------------------------------------------------------------------------------------ a real Flower run
ROUNDS = 8


def _partial_fedavg_dir(run_dir: Path, seed: int) -> Path:
    """4 clients of one record each, Flower FedAvg sampling 2 per round, batch-1 SGD, ROUNDS rounds: the
    per-client ledger (truth for the evaluation) of a run whose SecAgg view is attacked."""
    data = client_data(4, 1)
    _, client = fedavg_apps(data, rounds=ROUNDS, lr=0.05, epochs=1, batch_size=1, optimizer="sgd")
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        torch.manual_seed(0)
        strategy = FedAvg(fraction_train=0.5, fraction_evaluate=0.0, min_train_nodes=2, min_evaluate_nodes=0,
                          min_available_nodes=4)
        strategy.start(grid=grid, initial_arrays=_params_record(TDSSM(CFG)), num_rounds=ROUNDS,
                       train_config=ConfigRecord({"lr": 0.05, "local-epochs": 1, "batch-size": 1, "pos-weight": 6.0}))

    result = run_federation(server, client, 4, scheme="fedavg", seed=seed)
    return write_run_dir(run_dir, scheme="fedavg", ledger=result.ledger, data=data, optimizer="sgd", lr=0.05, epochs=1,
                         batch_size=1, observable="per-client updates")


def _secagg_dir(fedavg_dir: Path, out: Path) -> Path:
    """The same run as SecAgg+ leaves it: per round only the sum, K, and the total examples (Flower's SecAgg+
    unmasks the total weight, and its legacy workflow passes every num_examples in clear)."""
    shutil.copytree(fedavg_dir, out)
    ledger = secagg_view(WireLedger.load(fedavg_dir / "ledger"))
    totals: dict[int, int] = {}
    for e in ledger.entries:
        if e.direction == "up":
            totals[e.round] = totals.get(e.round, 0) + int(e.records["metrics"]["num-examples"])
    for e in ledger.entries:
        if e.direction == "server":
            e.records["metrics"]["num-examples"] = totals[e.round]
    ledger.save(out / "ledger")
    info = json.loads((out / "scheme.json").read_text())
    info.update(scheme="secagg-fedavg", observable="aggregate only")
    (out / "scheme.json").write_text(json.dumps(info))
    return out


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory, one_thread) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("partial")
    fed = _partial_fedavg_dir(root / "fedavg", seed=0)
    return fed, _secagg_dir(fed, root / "secagg")


def _true_updates(fedavg_dir: Path) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """Evaluation only: each client's real update per round, from the unmasked per-client ledger."""
    return {(o.clients[0], int(o.round)): o.update for o in observe_run(fedavg_dir)[1] if o.kind == "update"}


def _client_labels() -> dict[str, np.ndarray]:
    """Evaluation only: each client's one record's diagnoses (the same records `_partial_fedavg_dir` trains on)."""
    data = client_data(4, 1)
    return {f"client-{k:03d}": d.y.numpy().astype(int)[0] for k, d in enumerate(data)}


def test_disaggregation_recovers_each_clients_update_and_labels(partial_run, capsys):
    fed, agg = partial_run
    hidden = agg.parent / "hidden-truth"
    shutil.move(str(agg / "truth"), hidden)  # the attack stage runs without any client data on disk
    try:
        info, observations = observe_run(agg)
        (report,) = disaggregation_report(observations, info)
        recovered = disaggregate(observations, info)
        prior = population_prior(agg, info.data, info.model.n_leads, 8)
        ctx = AttackContext(prior, get_budget("quick").with_overrides(attacks=("labels", "features")), 0)
        everything = observations + recovered
        results = [r for i, o in enumerate(everything) for r in run_attacks(o, i, ctx, invert_this=False)]
    finally:
        shutil.move(str(hidden), agg / "truth")
    aggregates = [o for o in observations if o.kind == "aggregate"]
    assert len(aggregates) == ROUNDS and len({o.partition_ids for o in aggregates}) > 1  # different subsets
    assert report.solve.rank == 4 and len(recovered) == 4 and report.weighting == "examples"
    assert all(o.num_examples == 1 and o.threat.name == "curious-server-secagg" for o in recovered)

    truth = mean_true_updates(_true_updates(fed))
    scores = recovery_scores(recovered, truth)
    naive = {c: update_similarity({n: np.mean([o.update[n] for o in aggregates if c in o.clients], axis=0) for n in truth[c]},
                                  truth[c])["cosine"] for c in truth}  # each client read as the mean of its rounds' aggregates
    labels = _client_labels()
    # The label attack on each recovered update vs on the round aggregates, read as each participant's labels.
    dis_hits = {o.clients[0]: bool((attack_labels(o, 0, ctx).labels[0] == labels[o.clients[0]]).all()) for o in recovered}
    agg_hits = [bool((attack_labels(o, 0, ctx).presence == labels[c]).all()) for o in aggregates for c in o.clients]
    with capsys.disabled():
        print(f"\n  rank {report.solve.rank}, condition {report.solve.condition:.3g}, residual {report.solve.residual:.3g}; "
              f"cosine {[round(s['cosine'], 4) for s in scores.values()]}, rel error "
              f"{[round(s['rel_error'], 3) for s in scores.values()]} (mean of its aggregates: cosine "
              f"{[round(naive[c], 3) for c in scores]}); labels exact: disaggregated "
              f"{sum(dis_hits.values())}/4 clients, aggregates {sum(agg_hits)}/{len(agg_hits)} (round, client) pairs")
    assert min(s["cosine"] for s in scores.values()) > 0.95
    assert all(scores[c]["cosine"] > naive[c] + 0.1 for c in scores)
    assert all(dis_hits.values()) and np.mean(agg_hits) < 1.0

    # Scored afterwards like any observation: record-level labels exact for every recovered client.
    frame, _units, _cases = score_results(agg, info, everything, results, prior)
    dis = frame[(frame["attack"] == "labels") & (frame["metric"] == "label_exact")
                & frame["note"].str.startswith("disaggregated")]
    assert len(dis) == 4 and (dis["value"] == 1.0).all()
    feats = frame[(frame["attack"] == "features") & (frame["metric"] == "feat_ccos_best")]
    on_dis = feats[feats["note"].str.startswith("disaggregated")]["value"]
    on_agg = feats[~feats["note"].str.startswith("disaggregated")]["value"]
    assert on_dis.mean() > on_agg.mean()


def test_a_cycle_of_even_length_identifies_nobody(tmp_path, one_thread):
    """Flower's sampling with seed 5 draws pairs on the 4-cycle 0-1-2-3-0 only: rank 3, nothing recovered."""
    agg = _secagg_dir(_partial_fedavg_dir(tmp_path / "fedavg", seed=5), tmp_path / "secagg")
    info, observations = observe_run(agg)
    (report,) = disaggregation_report(observations, info)
    assert report.solve.rank == 3 and report.observations == [] and len(report.skipped) == 4
    assert disaggregate(observations, info) == []
    per_client = observe_run(tmp_path / "fedavg")
    assert disaggregate(per_client[1], per_client[0]) == []  # per-client updates: nothing to disaggregate


# ------------------------------------------------------------------------------------------ the secagg-fedavg scheme
def test_secagg_fedavg_scheme_with_partial_participation(tmp_path, one_thread, monkeypatch, capsys):
    """The real scheme (Flower's SecAgg+ legacy workflow, quantised) with fraction_train 0.5: the ledger names
    each round's participants and total examples, and the disaggregated updates point like the clients' true
    mean updates (recorded on the device side by instrumenting the training call: evaluation only)."""
    import baselines.secagg_fedavg as sa
    from baselines.registry import get_scheme
    from simulator.config import parse_config
    from simulator.runner import run_scheme
    from simulator.study import build_study

    true: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    real_train = sa.train_on_device

    def spy(setup, ctx, model, parts, epochs, rnd):  # noqa: ANN001
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        res = real_train(setup, ctx, model, parts, epochs, rnd)
        true[(f"client-{int(ctx.node_config['partition-id']):03d}", int(rnd))] = {
            n: (p.detach() - before[n]).numpy().copy() for n, p in model.named_parameters()}
        return res

    monkeypatch.setattr(sa, "train_on_device", spy)
    cfg = parse_config({"seed": 1, "model": {"d_model": 16, "d_state": 8}, "data": {"synthetic_records": 64, "fs": 50.0, "length": 256},
                        "train": {"full_epochs": 1, "mu_epochs": 1}, "finetune": {"epochs": 1, "batch_size": 8},
                        "cohort": {"clients": 4, "records_per_client": 12, "test_records": 12},
                        "federation": {"budget": "as-configured", "rounds": 8}})
    study = build_study(cfg, tmp_path / "work", cache_dir=tmp_path / "cache")
    params = get_scheme("secagg-fedavg").make_params({**dataclasses.asdict(cfg.scheme_params("secagg-fedavg")),
                                                      "fraction_train": 0.5})
    run = run_scheme(study, "secagg-fedavg", tmp_path / "run", params=params)
    run.save(tmp_path / "dir", study)
    info, observations = observe_run(tmp_path / "dir")
    aggregates = [o for o in observations if o.kind == "aggregate"]
    assert len(aggregates) == 8 and all(o.num_clients == 2 and len(o.partition_ids) == 2 for o in aggregates)
    assert all(o.num_examples == 24 for o in aggregates)  # 2 clients x 12 records, from the aggregate's metrics
    assert len({o.partition_ids for o in aggregates}) > 2
    for o in aggregates:  # the metrics' participants are the round's recipients
        assert set(o.clients) == {c for c, r in true if r == o.round}
    (report,) = disaggregation_report(observations, info)
    truth = mean_true_updates(true)
    scores = recovery_scores(report.observations, truth)
    names = list(report.rounds.names)
    naive = {c: update_similarity({n: np.mean([o.update[n] for o in aggregates if c in o.clients], axis=0) for n in names},
                                  truth[c], names)["cosine"] for c in scores}
    with capsys.disabled():
        print(f"\n  secagg-fedavg: rounds {[o.partition_ids for o in aggregates]}, rank {report.solve.rank}, condition "
              f"{report.solve.condition:.3g}, residual {report.solve.residual:.3g}; cosine "
              f"{ {c: round(v['cosine'], 3) for c, v in scores.items()} } (mean of its aggregates: "
              f"{ {c: round(v, 3) for c, v in naive.items()} })")
    assert report.weighting == "examples" and all(round(n) == 12 for n in report.examples.values())
    assert scores and min(s["cosine"] for s in scores.values()) > 0.5


def test_attack_run_attacks_the_disaggregated_updates_apart(partial_run):
    """Through `attack_run`: one "disaggregate" row per window (rank, recovered clients), and every attack on a
    recovered update named `<attack>+disagg` so that its scores never mix with the aggregates'."""
    from attacks.run import attack_run

    _, agg = partial_run
    frame = attack_run(agg, get_budget("quick").with_overrides(attacks=("labels",)), seed=0)
    row = frame[(frame["attack"] == "disaggregate") & (frame["metric"] == "applicable")]
    assert len(row) == 1 and row["value"].iloc[0] == 1.0
    settings = json.loads(frame[frame["attack"] == "disaggregate"]["settings"].iloc[0])
    assert settings["rank"] == 4 and settings["recovered"] == 4
    dis = frame[(frame["attack"] == "labels+disagg") & (frame["metric"] == "label_exact")]
    assert len(dis) == 4 and (dis["value"] == 1.0).all()
    assert (frame[frame["attack"] == "labels"]["client"].str.contains(r"\+")).all()  # the aggregates: 2 clients each
