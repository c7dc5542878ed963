"""Schemes on Flower: invariants of what crosses the wire, per-client results, failures, DP accounting."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict

from baselines.registry import get_scheme, scheme_names
from baselines.setup import probe_model, read_probe
from simulator.client_scores import device_scores, weights_digest
from simulator.config import parse_config
from simulator.core.phases import evaluate
from simulator.errors import MuprivError
from simulator.ledger import DOWN, SERVER, UP
from simulator.runner import run_scheme, to_long
from simulator.study import build_study
from tests.helpers import tiny_study

ALL = ["mu-ft", "local-ft", "central", "distill-share", "fedavg", "fedprox", "dp-fedavg", "secagg-fedavg", "fedrep", "fedper",
       "fed-mu"]

TINY = tiny_study()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("study")
    return build_study(parse_config(TINY), root / "work", cache_dir=root / "cache")


@pytest.fixture(scope="module")
def runs(study, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {name: run_scheme(study, name, root / name) for name in ALL}


def _param_names(study, parts):
    return {n for n, _ in study.pretrained().named_parameters() if n.split(".")[0] in parts}


def test_every_scheme_is_registered_and_unknown_names_list_the_valid_ones():
    assert sorted(scheme_names()) == sorted(ALL)
    with pytest.raises(MuprivError, match="valid schemes: .*fedavg"):
        get_scheme("fedavgg")
    with pytest.raises(MuprivError, match="did you mean 'mu'"):
        get_scheme("fedprox").make_params({"muu": 1.0})
    with pytest.raises(MuprivError, match="unknown scheme 'nope'"):
        parse_config({"schemes": {"run": ["nope"]}})


@pytest.mark.parametrize("name", ["mu-ft", "local-ft"])
def test_on_device_schemes_send_nothing_up(runs, name):
    frame = runs[name].ledger.to_frame()
    up = frame[frame["direction"] == UP]
    assert len(up) == 3  # one empty acknowledgement per device
    assert (up["n_params"] == 0).all() and (up["content_bytes"] == 0).all()
    assert all(not names for names in up["tensor_names"]) and all(not rec for rec in up["records"])
    assert (runs[name].table["content_bytes_up"] == 0).all()


def test_mu_ft_leaves_the_middle_bitwise_unchanged_on_every_device(runs, study):
    pretrained = dict(study.pretrained().named_parameters())
    run = runs["mu-ft"]
    for c in study.clients:
        state = read_probe(run.setup.probe_dir, c.partition)["state"]
        for name, value in state.items():
            if name.startswith("middle."):
                assert torch.equal(value, pretrained[name]), name
        # ... while the parts it trains did move
        assert not torch.equal(state["encoder.weight"], pretrained["encoder.weight"])


@pytest.mark.parametrize("name,parts", [("fed-mu", ("middle",)), ("fedrep", ("encoder", "middle")),
                                        ("fedper", ("encoder", "middle")), ("fedavg", ("encoder", "middle", "decoder"))])
def test_partial_schemes_send_only_their_shared_parts(runs, study, name, parts):
    frame = runs[name].ledger.to_frame()
    up = frame[(frame["direction"] == UP) & frame["message_type"].str.startswith("train")]
    assert len(up) == 3 * 2
    expected = {f"arrays/{n}" for n in _param_names(study, parts)}
    for names in up["tensor_names"]:
        assert set(names) == expected


def test_fedavg_bytes_per_round_are_model_size_times_clients(runs, study):
    from flwr.common.serde import recorddict_to_proto

    from baselines.setup import parts_record

    frame = runs["fedavg"].ledger.to_frame()
    model = study.pretrained()
    n_params = sum(p.numel() for p in model.parameters())
    # the serialised model alone (a Flower ArrayRecord of every parameter)
    model_bytes = len(recorddict_to_proto(RecordDict({"arrays": parts_record(model, ("encoder", "middle", "decoder"))})).SerializeToString())
    assert model_bytes > 4 * n_params
    for rnd in (1, 2):
        for direction in (DOWN, UP):
            msgs = frame[(frame["round"] == rnd) & (frame["direction"] == direction) & frame["message_type"].eq("train")]
            assert len(msgs) == 3
            assert (msgs["n_params"] == n_params).all()
            # every client's message serialises to the same size: the model plus a fixed envelope
            assert msgs["content_bytes"].nunique() == 1
            per = int(msgs["content_bytes"].iloc[0])
            assert model_bytes <= per <= model_bytes + 256  # + the small config / metrics record
            assert msgs["content_bytes"].sum() == 3 * per


def test_client_table_bytes_equal_the_ledger_and_results_are_complete(runs):
    for name, run in runs.items():
        frame, table = run.ledger.to_frame(), run.table
        assert list(table["client"]) == ["client-000", "client-001", "client-002"]
        assert table["bytes_up"].sum() == frame.loc[frame["direction"] == UP, "bytes"].sum(), name
        assert table["bytes_down"].sum() == frame.loc[frame["direction"] == DOWN, "bytes"].sum(), name
        assert table["personal_macro_auroc"].notna().any(), name
        assert (table["error"] == "").all(), name
        long = to_long(table, seed=0)
        assert list(long.columns) == ["seed", "scheme", "client", "metric", "value"]


def test_central_uploads_raw_records_and_dp_reports_epsilon(runs, study):
    frame = runs["central"].ledger.to_frame()
    up = frame[frame["direction"] == UP]
    payload = runs["central"].ledger.payload(int(up.iloc[0]["row"]))
    assert payload["data/x"].shape[1:] == (256, 12)
    dp = runs["dp-fedavg"].table
    assert (dp["epsilon"] > 0).all() and np.isfinite(dp["epsilon"]).all()
    assert runs["mu-ft"].table["trainable_params"].iloc[0] < runs["local-ft"].table["trainable_params"].iloc[0]


def test_secagg_server_sees_only_masked_vectors_and_the_aggregate(runs, study):
    ledger = runs["secagg-fedavg"].ledger
    frame = ledger.to_frame()
    names = _param_names(study, ("encoder", "middle", "decoder"))
    for _, row in frame[frame["direction"] == UP].iterrows():
        assert not ({t.split("/", 1)[-1] for t in row["tensor_names"]} & names), "a plain update went up"
    agg = frame[frame["direction"] == SERVER]
    assert list(agg["round"]) == [1, 2]
    assert all(r["metrics"]["num-clients"] == 3 for r in agg["records"])


def test_a_client_that_fails_is_reported_and_the_round_goes_on(study, tmp_path):
    broken = dataclasses.replace(study.clients[1], data_path=tmp_path / "missing.npz")
    bad_study = dataclasses.replace(study, clients=[study.clients[0], broken, study.clients[2]])
    run = run_scheme(bad_study, "fedavg", tmp_path / "run")
    errors = run.federation.errors()
    assert set(errors["partition_id"]) == {1} and set(errors["round"]) == {1, 2}
    table = run.table.set_index("client")
    assert "round 1" in table.loc["client-001", "error"]
    assert table.loc["client-000", "error"] == "" and not math.isnan(table.loc["client-000", "personal_macro_auroc"])


def test_same_config_and_seed_give_the_same_table(study, runs, tmp_path):
    again = run_scheme(study, "fedprox", tmp_path / "again")
    cols = [c for c in again.table.columns if c != "wall_s"]
    assert again.table[cols].equals(runs["fedprox"].table[cols])


def test_unreachable_target_epsilon_is_refused_before_training(study, tmp_path):
    params = get_scheme("dp-fedavg").make_params({"target_epsilon": 0.01})
    with pytest.raises(MuprivError, match="cannot be reached"):
        run_scheme(study, "dp-fedavg", tmp_path / "dp", params=params)
    assert not (tmp_path / "dp" / "probes").exists()


def test_dp_epsilon_grows_per_round_and_matches_opacus(study, tmp_path):
    from opacus.accountants import RDPAccountant

    from baselines.dp_local import dp_history, dp_train_on_device, epsilon_of
    from simulator.runner import scheme_setup

    scheme = get_scheme("dp-fedavg")
    params = scheme.make_params({"noise_multiplier": 1.3})
    setup = scheme_setup(study, scheme, params, tmp_path)
    client = study.clients[0]
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "data-path": str(client.data_path)},
                      state=RecordDict(), run_config={})
    model = study.pretrained()
    before = [p.detach().clone() for p in model.parameters()]
    eps = []
    for rnd in (1, 2, 3):
        dp_train_on_device(setup, context, model, ("encoder", "middle", "decoder"), 1, rnd, 1.3, 1.0, 1e-5)
        eps.append(epsilon_of(dp_history(context), 1e-5))
    assert eps[0] < eps[1] < eps[2]
    reference = RDPAccountant()
    q = min(1.0, 8 / len(client.train))
    for _ in range(sum(h[2] for h in dp_history(context))):
        reference.step(noise_multiplier=1.3, sample_rate=q)
    assert eps[-1] == pytest.approx(reference.get_epsilon(1e-5), rel=1e-9)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_scheme_record_holds_the_dp_parameters_the_devices_used(study, tmp_path):
    """With target_epsilon set, the devices train at the noise multiplier the preflight derived, and scheme.json
    (which the attacker's threat model reads) must say that one, not the configured 1.0; DP-SGD on the device
    keeps its learning rate constant, so the granted schedule is "constant"."""
    params = get_scheme("dp-fedavg").make_params({"target_epsilon": 20.0})
    run = run_scheme(study, "dp-fedavg", tmp_path / "dp", params=params)
    record = run.record(study)
    used = run.setup.params["noise_multiplier"]
    assert used != params.noise_multiplier and record.dp.noise_multiplier == used
    assert record.threat.schedule == "constant"
    assert run.table["epsilon"].max() == pytest.approx(20.0, rel=0.05)
    assert run_scheme(study, "fedavg", tmp_path / "fa").record(study).threat.schedule == "cosine"


def test_device_dp_noise_is_secret_unless_seeded_for_simulation(study, tmp_path):
    """A server that knows the run seed could replay seeded DP noise and subtract it (the DP audit did, and got
    1,997 of 2,000 canary guesses right). By default the noise and batch sampling come from the OS: two runs with
    the same config and seed send different updates. "seeded" repeats exactly, and scheme.json says which."""
    def update(noise: str, name: str) -> np.ndarray:
        run = run_scheme(study, "dp-fedavg", tmp_path / name, params=get_scheme("dp-fedavg").make_params({"noise": noise}))
        assert run.record(study).dp.noise == noise
        frame = run.ledger.to_frame()
        row = int(frame[(frame["direction"] == UP) & (frame["partition_id"] == 0)].iloc[0]["row"])
        return np.concatenate([np.ravel(a) for a in run.ledger.payload(row).values()])

    assert not np.array_equal(update("secret", "s1"), update("secret", "s2"))
    assert np.array_equal(update("seeded", "d1"), update("seeded", "d2"))
    with pytest.raises(MuprivError, match="noise 'os' unknown"):
        run_scheme(study, "dp-fedavg", tmp_path / "bad", params=get_scheme("dp-fedavg").make_params({"noise": "os"}))


def test_nan_dp_parameters_are_refused():
    """A NaN noise multiplier used to pass `noise_multiplier < 0` and every client then failed every round."""
    for bad in ({"noise_multiplier": float("nan")}, {"max_grad_norm": float("nan")}, {"delta": float("nan")}):
        with pytest.raises(MuprivError, match="noise_multiplier >= 0"):
            get_scheme("dp-fedavg").make_params(bad)


def test_memoised_scores_equal_scoring_every_model(runs, study):
    """The study remembers evaluations by exact weights: each client's scores equal those of evaluating its model
    afresh, and fedavg's devices, which all end with the final global model, share one source evaluation."""
    before = evaluate(study.pretrained(), study.source_eval)
    for name in ("fedavg", "fedrep", "mu-ft"):
        table = runs[name].table.set_index("client")
        digests = set()
        for c in study.clients:
            model = probe_model(study.config.model, read_probe(runs[name].setup.probe_dir, c.partition)["state"])
            digests.add(weights_digest(model))
            fresh = device_scores(evaluate(model, c.test), evaluate(model, study.source_eval), before)
            for key, value in fresh.items():
                assert table.loc[c.id, key] == value or (math.isnan(value) and math.isnan(table.loc[c.id, key])), \
                    (name, c.id, key)
            pretrained = evaluate(study.pretrained(), c.test)
            assert table.loc[c.id, "pretrained_personal_macro_auroc"] == pretrained.macro_auroc
        assert len(digests) == (1 if name == "fedavg" else len(study.clients)), name
    assert study.scores.hits >= (len(ALL) - 1) * len(study.clients)  # the pretrained model, once per client


def test_client_level_dp_noise_repeats_with_the_seed(study, tmp_path):
    """Client-level DP's server noise (Flower's wrapper draws it from numpy's global generator) is seeded by the run:
    the same seed gives the same final models whatever numpy's state was before, the noise is really there, and
    the caller's numpy state is given back."""
    name = "dp-fedavg"

    def finals(tag: str, noise: float, numpy_seed: int) -> list[bytes]:
        params = get_scheme(name).make_params({**vars(study.config.scheme_params(name)), "mode": "client-level",
                                               "noise_multiplier": noise})
        np.random.seed(numpy_seed)  # what the caller left in numpy's generator must not matter
        before = np.random.get_state()[1].copy()
        run = run_scheme(study, name, tmp_path / tag, params=params)
        assert np.array_equal(np.random.get_state()[1], before)
        return [b"".join(t.numpy().tobytes() for _, t in sorted(read_probe(run.setup.probe_dir, c.partition)["state"].items()))
                for c in study.clients]

    first = finals("a", 1.0, 1)
    assert finals("b", 1.0, 2) == first
    assert finals("quiet", 0.0, 1) != first
