"""Membership inference: the three methods on an overfit model and on a fair null, the metrics, and the
two stages on real scheme run folders (the attack stage never reads a client's records)."""
from __future__ import annotations

import builtins
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import attacks.membership as mi
from attacks.budget import get_budget
from attacks.observe import LocalTraining, observe_run
from attacks.priors import population_prior
from attacks.shadow_models import ShadowRecipe, load_model, local_train, train_shadows
from simulator import layout
from simulator.core.model import PARTS, ModelConfig
from simulator.core.tensors import ECGTensors, save_npz
from simulator.ledger import WireLedger
from tests.attack_fixtures import add_membership_files, client_data, fedavg_run_dir, query_run_dir

CFG = ModelConfig(d_model=16, dropout=0.0)
OVERFIT = LocalTraining(optimizer="adamw", lr=3e-2, kernel_lr=3e-2, weight_decay=0.0, local_epochs=80, batch_size=8,
                        pos_weight=6.0, schedule="cosine")
N_MEMBERS = 12


def _init_params() -> dict[str, np.ndarray]:
    return {n: p.detach().numpy().copy() for n, p in load_model(CFG, {}).named_parameters()}


def _records(n: int, seed: int, length: int = 128) -> ECGTensors:
    """n memorisable records: each lead its own offset plus noise, random diagnoses. (The TDSSM pools over time:
    an untrained d_model-16 model learned only the label prior of 16 synthetic ECGs in 300 epochs, so those
    cannot show memorisation cheaply.)"""
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, 1, CFG.n_leads)) + 0.3 * g.normal(size=(n, length, CFG.n_leads))
    return ECGTensors.from_arrays(x.astype(np.float32), (g.random((n, CFG.n_classes)) < 0.3).astype(np.float32))


def _train(start: dict[str, np.ndarray], data: ECGTensors, seed: int) -> dict[str, np.ndarray]:
    model = load_model(CFG, start)
    local_train(model, data.x, data.y, OVERFIT, PARTS, torch.Generator().manual_seed(seed))
    return {n: p.detach().numpy().copy() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def overfit():
    """A d_model-16 TDSSM trained 80 epochs on 12 records (members); 12 more never seen (non-members); 40 more
    never seen (the null's pool); 32 public records of the same kind for the shadows."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    records = _records(2 * N_MEMBERS, seed=11)
    members, nonmembers = records.subset(range(N_MEMBERS)), records.subset(range(N_MEMBERS, 2 * N_MEMBERS))
    start = _init_params()
    trained = _train(start, members, seed=0)
    public = _records(32, seed=23)
    recipe = ShadowRecipe(OVERFIT, N_MEMBERS, parts=PARTS, view="device")
    shadows = train_shadows(CFG, start, recipe, public.x.numpy(), public.y.numpy(), n_shadows=4, seed=5)
    shadows.users = 1
    target = mi.MembershipTarget("test", "device-lost", "device-lost", None, ("patient",), CFG, OVERFIT.pos_weight,
                                 trained, start, recipe, shadows)
    yield target, members, nonmembers, _records(40, seed=37)
    torch.set_num_threads(before)


def _blocks(**parts: ECGTensors) -> list[mi.Candidates]:
    return [mi.Candidates(name, d.x, d.y, d.known) for name, d in parts.items()]


def test_an_overfit_model_gives_membership_away(overfit):
    target, members, nonmembers, _ = overfit
    scores = mi.MembershipScorer().scores(target, _blocks(members=members, nonmembers=nonmembers))
    labels = np.r_[np.ones(N_MEMBERS), np.zeros(N_MEMBERS)]
    aucs = {m: mi.auc(s, labels) for m, s in scores.items()}
    assert set(aucs) == set(mi.METHODS)
    sd = mi.null_auc_sd(N_MEMBERS, N_MEMBERS)  # 0.12: what a blind scorer's AUC spreads by
    assert aucs["mi-loss"] > 0.5 + 2.5 * sd, aucs
    # The reference-calibrated and LiRA scores remove each record's own difficulty (here: how many diagnoses it
    # has, which sets its loss under pos_weight 6): well clear of chance, and at least as good as the raw loss.
    for method in ("mi-calibrated", "mi-lira"):
        assert aucs[method] > 0.5 + 3 * sd and aucs[method] >= aucs["mi-loss"], aucs


def test_records_the_model_never_saw_score_at_chance(overfit):
    """A fair null: 40 records the model never saw, split at random into 'members' and 'non-members'. The
    attacker's scores do not depend on the split, so the AUC's spread is the Mann-Whitney null's."""
    target, _, _, unseen = overfit
    scores = mi.MembershipScorer().scores(target, _blocks(unseen=unseen))
    sd = mi.null_auc_sd(20, 20)
    aucs = []
    for seed in range(5):
        labels = np.zeros(40)
        labels[np.random.default_rng(seed).permutation(40)[:20]] = 1
        for s in scores.values():
            aucs.append(mi.auc(s, labels))
    assert all(abs(a - 0.5) < 3.5 * sd for a in aucs), (aucs, sd)  # 15 AUCs; 3.5 sd: p = 5e-4 each
    assert abs(float(np.mean(aucs)) - 0.5) < 2 * sd


def test_auc_and_tpr_at_low_fpr():
    labels = np.r_[np.ones(4), np.zeros(100)]
    perfect = np.r_[np.full(4, 1000.0), np.arange(100.0)]
    assert mi.auc(perfect, labels) == 1.0 and mi.tpr_at_fpr(perfect, labels, 0.01) == 1.0
    assert mi.auc(-perfect, labels) == 0.0 and mi.tpr_at_fpr(-perfect, labels, 0.10) == 0.0
    assert mi.auc(np.zeros(104), labels) == 0.5 and mi.tpr_at_fpr(np.zeros(104), labels, 0.10) == 0.0  # ties lose
    # members at ranks just below the top non-member: 1% FPR (1 of 100 non-members) lets them all through
    s = np.r_[np.full(4, 98.5), np.arange(100.0)]
    assert mi.tpr_at_fpr(s, labels, 0.01) == 1.0 and mi.tpr_at_fpr(s, labels, 0.0) == 0.0
    rng = np.random.default_rng(0)
    x, lab = rng.normal(size=50), rng.integers(0, 2, 50)
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in x[lab == 1] for b in x[lab == 0]])
    assert math.isclose(mi.auc(x, lab), brute)


# ------------------------------------------------------------------------------------------ run folders
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real Flower FedAvg run (2 clients x 2 rounds, 4 records each, SGD), with the files the schemes now
    write: truth/heldout/<client>.npz and models/<client>.pt (each device's model after its last training)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    path = add_membership_files(fedavg_run_dir(tmp_path_factory.mktemp("mi") / "run", n_clients=2, per_client=4,
                                               rounds=2, optimizer="sgd", batch_size=2))
    yield path
    torch.set_num_threads(before)


def _prepare(path: Path, **kw):
    info, observations = observe_run(path)
    prior = population_prior(path, info.data, info.model.n_leads, 16)
    return info, observations, mi.prepare_membership(path, info, observations, prior, seed=0, **kw)


def test_the_budget_caps_the_clients_attacked_and_says_so(run_dir):
    _, _, every = _prepare(run_dir, n_shadows=0)
    _, _, first = _prepare(run_dir, n_shadows=0, max_clients=1)
    assert {t.clients for t in every} == {("client-000",), ("client-001",), ("client-000", "client-001")}
    assert {t.clients for t in first} == {("client-000",)}
    assert [t.kind for t in first].count("client-update") == 2 and [t.kind for t in first].count("device-lost") == 1
    assert {t.kind for t in first} == {t.kind for t in every}  # the global model stays a target, client-000 its member
    assert {t.settings["clients_attacked"] for t in every} == {"2 of 2"}
    assert {t.settings["clients_attacked"] for t in first} == {"1 of 2 (the attack budget's mi_max_clients = 1)"}
    assert get_budget("quick").mi_max_clients == 16 and get_budget("thorough").mi_max_clients is None


def test_targets_of_a_fedavg_run(run_dir):
    info, observations, targets = _prepare(run_dir, n_shadows=2, max_targets=1)
    kinds = [t.kind for t in targets]
    assert kinds.count("client-update") == 4 and kinds.count("device-lost") == 2 and kinds.count("global") == 1
    first = observations[0]
    for t, o in zip([t for t in targets if t.kind == "client-update"], observations):
        assert t.threat_model == "curious-server" and t.clients == o.clients and t.round == o.round
        name = "decoder.layers.2.ff.bias"
        np.testing.assert_allclose(t.params[name], o.global_params[name] + o.update[name], rtol=0, atol=1e-7)
        np.testing.assert_array_equal(t.reference[name], o.global_params[name])
    device = {t.clients[0]: t for t in targets if t.kind == "device-lost"}
    for client, t in device.items():
        saved = torch.load(layout.model_file(run_dir, client), weights_only=True)
        for name, tensor in saved.items():
            np.testing.assert_array_equal(t.params[name], tensor.numpy())
        np.testing.assert_array_equal(t.reference["encoder.weight"], first.global_params["encoder.weight"])  # 1st download
        assert t.threat_model == "device-lost" and t.shadows is not None and t.recipe.rounds == 2
    (glob,) = [t for t in targets if t.kind == "global"]
    assert glob.round == 2 and glob.clients == info.clients and glob.threat_model == "global-model"
    with_lira = [t for t in targets if t.kind == "client-update" and t.shadows is not None]
    assert len(with_lira) == 1 and with_lira[0].round == 1  # max_targets=1: the earliest round first
    assert len({id(t.shadows) for t in targets if t.kind == "device-lost"}) == 1  # one shared shadow set

    rows, units = mi.score_membership(targets, run_dir)
    assert list(rows.columns) == mi.COLUMNS
    lira_skipped = rows[(rows.attack == "mi-lira") & (rows.metric == "skipped")]
    assert len(lira_skipped) == 3 and lira_skipped["note"].str.startswith("skipped").all()
    for metric in ("mi_auc", "mi_tpr_at_1fpr", "mi_tpr_at_10fpr", "n_members", "n_nonmembers"):
        assert metric in set(rows.metric)
    per_record = units[(units.kind == "device-lost") & (units.client == "client-000") & (units.attack == "mi-lira")]
    assert len(per_record) == 4 + 6 and per_record["label"].sum() == 4
    assert per_record["unit"].str.startswith("client-000/").all()
    n = rows[(rows.metric == "n_members") & (rows.attack == "mi-loss")].set_index(["client", "round"])["value"]
    assert n.loc[("client-000+client-001", 2)] == 8  # a global model's members: every participant's records
    auc = rows[(rows.metric == "mi_auc")]["value"]
    assert auc.between(0, 1).all()
    _, _, again = _prepare(run_dir, n_shadows=2, max_targets=1, kinds=("device-lost",))  # same seed, same shadows
    for name, a in again[0].shadows.params[1].items():
        np.testing.assert_array_equal(a, device["client-000"].shadows.params[1][name])
    pooled = mi.pooled_metrics(units).set_index(["kind", "attack"])
    assert pooled.loc[("client-update", "mi-loss"), "targets"] == 4 and pooled.loc[("client-update", "mi-lira"), "targets"] == 1
    assert pooled.loc[("device-lost", "mi-lira"), "n_members"] == 8


def test_the_attack_stage_never_reads_client_data(run_dir, monkeypatch):
    """Every open of RUN_DIR/truth/... is logged with its stage: the attack stage may read only the server's
    source data (through the prior); the scoring stage reads the clients' training and held-out records."""
    truth = (run_dir / layout.TRUTH_DIR).resolve()
    reads: list[tuple[str, str]] = []
    stage = ["attack"]
    real = {"open": builtins.open, "io": io.open, "np": np.load, "torch": torch.load}

    def spy(path) -> None:  # noqa: ANN001
        try:
            p = Path(path).resolve()
        except TypeError:
            return
        if truth in p.parents and p.name != layout.SOURCE_FILE:
            reads.append((stage[0], str(p.relative_to(truth))))

    def wrap(key):  # noqa: ANN001, ANN202
        def fake(file, *a, **k):  # noqa: ANN001, ANN202
            spy(file)
            return real[key](file, *a, **k)
        return fake

    monkeypatch.setattr(builtins, "open", wrap("open"))
    monkeypatch.setattr(io, "open", wrap("io"))
    monkeypatch.setattr(np, "load", wrap("np"))
    monkeypatch.setattr(torch, "load", wrap("torch"))
    _, _, targets = _prepare(run_dir, n_shadows=2, max_targets=0, kinds=("client-update", "device-lost"))
    assert not reads, reads
    stage[0] = "score"
    mi.score_membership(targets, run_dir)
    assert {name for _, name in reads} == {"client-000.npz", "client-001.npz", "heldout/client-000.npz",
                                           "heldout/client-001.npz"}


def test_an_on_device_run_exposes_only_the_device_models(tmp_path, one_torch_thread):
    """mu-ft / local-ft: nothing goes up, so the device's model is the only target; the attacker infers which
    parts trained from the artefact and the epochs from the download's config."""
    path = query_run_dir(tmp_path / "mu-ft", upload=False, n_clients=2, per_client=3)
    info, _ = observe_run(path)
    pretrained, _ = mi.starting_model(mi.round_downloads(WireLedger.load(path / layout.LEDGER_DIR), info.model), info.model, 0)
    start = {n: torch.as_tensor(a) for n, a in pretrained.items()}
    layout.heldout_file(path, "x").parent.mkdir(parents=True, exist_ok=True)
    for k, client in enumerate(info.clients):
        moved = {n: (t + 0.01 if n.startswith("decoder.") else t) for n, t in start.items()}
        layout.model_file(path, client).parent.mkdir(parents=True, exist_ok=True)
        torch.save(moved, layout.model_file(path, client))
        save_npz(client_data(1, 3, seed=70 + k)[0], layout.heldout_file(path, client))
    _, _, targets = _prepare(path, n_shadows=0)
    assert [t.kind for t in targets] == ["device-lost", "device-lost"]
    assert all(t.recipe.parts == ("decoder",) and t.recipe.records == 64 for t in targets)  # 2 x batch size 32
    rows, units = mi.score_membership(targets, path)
    assert set(rows[rows.attack == "mi-lira"]["metric"]) == {"applicable"}
    assert set(units["attack"]) == {"mi-loss", "mi-calibrated"} and len(units) == 2 * 2 * 6
