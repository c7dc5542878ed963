"""Attribute inference from AdamW batch updates: a shadow classifier trained on simulated updates of public
records reads which diagnoses a client holds and how many, better than every no-attack guess and than the
sign rule; it simulates the clients' training faithfully, handles SecAgg aggregates and DP, and reads no truth."""
from __future__ import annotations

import builtins
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from attacks import shadow_updates as su
from attacks.attribute import DEFAULT_FEATURES, attack_attribute, budget_options, feature_names
from attacks.budget import Budget
from attacks.metrics import presence_scores
from attacks.observe import DataSpec, LocalTraining, Observation, observe_run
from attacks.priors import population_prior
from attacks.suite import AttackContext, attack_labels
from attacks.threat import AGGREGATE, THREAT_MODELS, UPDATES, NOISED
from simulator.core.model import ModelConfig, TDSSM
from simulator.core.phases import Phase, train_phase
from simulator.core.tensors import ECGTensors

CFG = ModelConfig(d_model=16, dropout=0.0)
LENGTH = 256
SPEC = DataSpec(LENGTH, 400.0, "record", "tests")
TRAINING = LocalTraining(optimizer="adamw", lr=3e-3, kernel_lr=1e-3, weight_decay=0.01, local_epochs=1, batch_size=8)
PER_CLIENT = 24  # 3 AdamW steps of batch 8
SKEW = 0.8  # each client's own class mix (the generator's Dirichlet patient skew)
K = 192  # shadow clients: fewer than the default, to keep the tests fast


@pytest.fixture(scope="module")
def prior():
    return population_prior(None, SPEC, CFG.n_leads, n_samples=96)


@pytest.fixture(autouse=True)
def fresh_cache():
    su.clear_cache()
    yield
    su.clear_cache()


def skewed_clients(n_clients: int, per_client: int, seed: int, skew: float = SKEW) -> list[ECGTensors]:
    """Each client one synthetic patient (the project's generator) with its own class mix, min-max scaled."""
    from simulator.data.preprocess import PreprocessConfig, preprocess_records
    from simulator.data.synthetic import synthesize

    out = []
    for k in range(n_clients):
        recs = preprocess_records(synthesize(per_client, seed=seed * 1000 + k + 1, n_patients=1, patient_skew=skew),
                                  PreprocessConfig(fs=SPEC.fs, length=LENGTH))
        out.append(ECGTensors.from_arrays(recs.signals, recs.labels))
    return out


def global_params(seed: int) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    return {n: p.detach().numpy().copy() for n, p in TDSSM(CFG).named_parameters()}


def local_update(base: dict[str, np.ndarray], data: ECGTensors, seed: int, training: LocalTraining = TRAINING
                 ) -> tuple[dict[str, np.ndarray], int]:
    """The client's side: the project's AdamW train_phase (cosine schedule, kernel group, shuffled batches)."""
    model = TDSSM(CFG)
    model.load_state_dict({**model.state_dict(), **{n: torch.as_tensor(a) for n, a in base.items()}})
    phase = Phase("device", ("encoder", "middle", "decoder"), training.local_epochs, data="personal", lr=training.lr,
                  batch_size=training.batch_size)
    steps = train_phase(model, phase, data, None, seed=seed).steps
    return {n: p.detach().numpy() - base[n] for n, p in model.named_parameters()}, steps


def observation(base: dict[str, np.ndarray], update: dict[str, np.ndarray], n: int, steps: int | None, *,
                kind: str = "update", num_clients: int = 1, dp: dict | None = None, training: LocalTraining = TRAINING,
                clients: tuple[str, ...] = ()) -> Observation:
    threat = THREAT_MODELS[AGGREGATE if kind == "aggregate" else NOISED if dp else UPDATES]
    return Observation("fedavg", 1, kind, threat, CFG, SPEC, training, global_params=base, update=update, num_examples=n,
                       local_steps=steps, num_clients=num_clients, dp=dp, clients=clients)


def _mean(rows: list[dict[str, float]], key: str) -> float:
    return float(np.nanmean([r[key] for r in rows]))


# ------------------------------------------------------------------------------------------ the simulator
def test_exact_shadow_replay_is_the_projects_local_training(one_torch_thread, prior):
    """One pseudo-client holding a known batch: the exact replay equals train_phase's update (3 AdamW steps on
    one batch, so the private order plays no part); the default linear replay stays close on the decoder."""
    base = global_params(3)
    n = 16
    data = ECGTensors.from_arrays(prior.samples[:n], prior.labels[:n].astype(np.float32))
    training = LocalTraining(optimizer="adamw", lr=3e-3, kernel_lr=1e-3, weight_decay=0.01, local_epochs=3,
                             batch_size=32)
    update, steps = local_update(base, data, seed=0, training=training)
    obs = observation(base, update, n, steps, training=training)
    y = prior.labels[:n]
    one = su.PseudoClients(np.arange(n)[None], (y.sum(0) > 0)[None].astype(np.int64), y.sum(0)[None].astype(float))
    pool = su.Pool(prior.samples, prior.labels)
    exact, _ = su.pseudo_client_updates(obs, pool, one, list(update), mode="exact")
    linear, _ = su.pseudo_client_updates(obs, pool, one, list(update), mode="linear")
    for name in update:
        np.testing.assert_allclose(exact[name][0], update[name], atol=1e-5, err_msg=name)
    decoder = [nm for nm in update if nm.startswith("decoder.")]
    lin = np.concatenate([linear[nm][0].ravel() for nm in decoder])
    true = np.concatenate([update[nm].ravel() for nm in decoder])
    assert np.corrcoef(lin, true)[0, 1] > 0.95
    # The cheap decoder-only gradient path gives the same numbers as the full one.
    head, _ = su.pseudo_client_updates(obs, pool, one, decoder, mode="linear")
    assert all(np.array_equal(head[nm], linear[nm]) for nm in decoder)


def test_pseudo_clients_vary_in_presence_and_counts(prior):
    clients = su.draw_pseudo_clients(prior.labels, 24, 200, np.random.default_rng(0), variants=3)
    y = prior.labels[clients.records % len(prior.labels)]
    assert np.array_equal(clients.counts, y.sum(1)) and np.array_equal(clients.presence, (y.sum(1) > 0).astype(int))
    share_present = clients.presence.mean(0)
    assert ((share_present > 0.2) & (share_present < 0.95)).all(), share_present  # presence varies per class
    assert clients.counts.std(0).min() > 1.0  # and so do the counts
    variant = clients.records // len(prior.labels)
    assert (variant == variant[:, :1]).all() and set(np.unique(variant)) == {0, 1, 2}  # one device per pseudo-client


def test_device_maps_are_the_generators_placement():
    """The attacker's device variants rotate the heart vector exactly as the generator's placement does."""
    from simulator.data.synthetic import _rotation, lead_matrix

    angles = np.random.default_rng(1).normal(0, 30, (4, 3))
    np.testing.assert_allclose(su.rotation(angles), _rotation(angles), atol=1e-12)
    spread = su.DeviceSpread(variants=4, placement_deg=30.0, contact_gain_sd=0.0)
    maps = su.device_maps(spread, np.random.default_rng(2))
    dip = np.random.default_rng(3).normal(size=(50, 3))
    L = lead_matrix()
    np.testing.assert_allclose(dip @ L @ maps[0], dip @ L, atol=1e-9)  # variant 0: the public device itself
    R = su.rotation(np.random.default_rng(2).normal(0.0, 30.0, (4, 3)))
    for i in range(1, 4):
        np.testing.assert_allclose(dip @ L @ maps[i], dip @ (R[i] @ L), atol=1e-9)


# ------------------------------------------------------------------------------------------ the attack
def test_attribute_beats_the_no_attack_guesses_and_the_sign_rule(one_torch_thread, prior):
    """AdamW, batch 8, 3 steps, 24 records per client with a client-specific class mix, two global models x 8
    clients. Presence F1 beats "every class present", "present when the prior makes it likely among 24 records"
    and the sign rule; counts beat n x prior prevalence. Given another client's update instead, the same
    classifier loses its edge: the test measures what the update carries."""
    ctx = AttackContext(prior, Budget(), 0)
    prevalence = prior.prevalence()
    rows, shuffled = [], []
    for seed in (0, 1):
        base = global_params(seed)
        data = skewed_clients(8, PER_CLIENT, seed)
        updates = [local_update(base, d, seed * 100 + k) for k, d in enumerate(data)]
        for k, d in enumerate(data):
            y = d.y.numpy()
            present, counts, n = y.any(0), y.sum(0), len(y)
            obs = observation(base, updates[k][0], n, updates[k][1])
            res = attack_attribute(obs, k, ctx, k=K)
            swap = updates[(k + 3) % len(data)]
            other = attack_attribute(observation(base, swap[0], n, swap[1]), k, ctx, k=K)
            assert res.applicable and res.presence.shape == (6,) and res.counts.shape == (6,)
            rows.append({"attack": presence_scores(res.presence, present)["presence_f1"],
                         "sign": presence_scores(attack_labels(obs, k, ctx).presence, present)["presence_f1"],
                         "all": presence_scores(np.ones(6), present)["presence_f1"],
                         "likely": presence_scores(1 - (1 - prevalence) ** n >= 0.5, present)["presence_f1"],
                         "attack_mae": float(np.abs(res.counts - counts).mean()),
                         "prior_mae": float(np.abs(n * prevalence - counts).mean()), "absent": float((~present).sum())})
            shuffled.append({"attack": presence_scores(other.presence, present)["presence_f1"],
                             "attack_mae": float(np.abs(other.counts - counts).mean())})
    assert _mean(rows, "absent") >= 1.0  # the clients do miss classes: "all present" is not already perfect
    f1 = _mean(rows, "attack")
    for guess in ("all", "likely", "sign"):
        assert f1 > _mean(rows, guess) + 0.05, (guess, rows)
    assert _mean(rows, "attack_mae") < 0.75 * _mean(rows, "prior_mae"), rows
    assert f1 > _mean(shuffled, "attack") + 0.05 and _mean(rows, "attack_mae") < 0.8 * _mean(shuffled, "attack_mae")


def test_one_shadow_set_serves_every_client_of_a_round(one_torch_thread, prior):
    ctx = AttackContext(prior, Budget(), 0)
    base = global_params(0)
    data = skewed_clients(2, PER_CLIENT, 0)
    def obs_of(params: dict[str, np.ndarray], k: int) -> Observation:
        update, steps = local_update(params, data[k], k)
        return observation(params, update, PER_CLIENT, steps)

    # Different observation seeds (the suite gives every observation its own): still one shadow set.
    first = attack_attribute(obs_of(base, 0), 0, AttackContext(prior, Budget(), 11), k=K)
    second = attack_attribute(obs_of(base, 1), 1, AttackContext(prior, Budget(), 12), k=K)
    assert first.settings["shadow_cached"] is False and second.settings["shadow_cached"] is True
    assert second.seconds < first.seconds
    other_round = {n: a + 1e-3 for n, a in base.items()}
    third = attack_attribute(obs_of(other_round, 1), 1, ctx, k=K)
    assert third.settings["shadow_cached"] is False


def test_secagg_aggregates_are_attacked_as_means_of_pseudo_clients(one_torch_thread, prior):
    """The mean update of 3 clients: the shadow aggregates average 3 pseudo-clients; the attack reports the
    union of their diagnoses and the summed counts, and its counts beat the prior's."""
    ctx = AttackContext(prior, Budget(), 0)
    prevalence = prior.prevalence()
    errors, guesses = [], []
    for seed in (0, 1):
        base = global_params(seed)
        data = skewed_clients(6, PER_CLIENT, seed + 10)
        ups = [local_update(base, d, k)[0] for k, d in enumerate(data)]
        for group in (range(0, 3), range(3, 6)):
            mean = {n: np.mean([ups[g][n] for g in group], axis=0) for n in ups[0]}
            y = np.concatenate([data[g].y.numpy() for g in group])
            obs = observation(base, mean, len(y), None, kind="aggregate", num_clients=3)
            res = attack_attribute(obs, 0, ctx, k=K)
            assert res.settings["shadow_clients_per_observation"] == 3 and res.settings["n_examples"] == len(y)
            assert ((res.counts >= 0) & (res.counts <= len(y))).all()
            errors.append(np.abs(res.counts - y.sum(0)).mean())
            guesses.append(np.abs(len(y) * prevalence - y.sum(0)).mean())
    assert np.mean(errors) < 0.8 * np.mean(guesses), (errors, guesses)


def test_dp_shadow_updates_get_the_mechanism(one_torch_thread, prior):
    """Client-level DP: every shadow update is clipped like the real one. DP-SGD: per-record clipping and noise
    make the shadow classifier's own held-out score fall as the noise grows."""
    base = global_params(0)
    data = skewed_clients(1, PER_CLIENT, 0)[0]
    update, steps = local_update(base, data, 0)
    clip = 0.5 * float(np.sqrt(sum((u**2).sum() for u in update.values())))
    client_level = {"mode": "client-level", "noise_multiplier": 1.0, "max_grad_norm": clip}
    shadow = su.shadow_updates(observation(base, update, PER_CLIENT, steps, dp=client_level), prior, 64)
    norms = np.sqrt(sum((u.reshape(64, -1).astype(np.float64) ** 2).sum(1) for u in shadow.updates.values()))
    assert norms.max() <= clip * (1 + 1e-4) and np.median(norms) > 0.99 * clip  # clipped, and the clip binds
    assert shadow.settings["dp"]["mode"] == "client-level"
    ctx = AttackContext(prior, Budget(), 0)
    held = []
    for sigma in (0.0, 4.0):
        dp = {"mode": "dp-sgd", "noise_multiplier": sigma, "max_grad_norm": 1.0}
        res = attack_attribute(observation(base, update, PER_CLIENT, steps, dp=dp), 0, ctx, k=K)
        assert res.settings["shadow_dp"] == {"mode": "dp-sgd", "noise_multiplier": sigma, "max_grad_norm": 1.0}
        held.append(res.settings["held_out_count_mae"])
    assert held[1] > held[0], held


def test_a_middle_only_update_is_attacked_through_its_biases(one_torch_thread, prior):
    """fed-mu shares only the middle: the decoder features are not observed, so the observed biases stand in."""
    base = global_params(0)
    update, steps = local_update(base, skewed_clients(1, PER_CLIENT, 0)[0], 0)
    middle = {n: u for n, u in update.items() if n.startswith("middle.")}
    obs = observation({n: base[n] for n in middle}, middle, PER_CLIENT, steps)
    obs.context_params = {n: a for n, a in base.items() if n not in middle}
    res = attack_attribute(obs, 0, AttackContext(prior, Budget(), 0), k=64)
    assert res.applicable and res.settings["features"] == "decoder+biases" and "not observed" in res.note
    assert res.presence.shape == (6,) and np.isfinite(res.counts).all()


def test_budget_options_default_to_the_modules_and_follow_budget_fields():
    assert budget_options(Budget()) == {"k": su.SHADOW_CLIENTS, "features": DEFAULT_FEATURES, "mode": "linear",
                                        "spread": su.DEVICE_SPREAD}

    class WithFields:  # a Budget with the attribute_* fields the suite would pass
        attribute_shadow_clients, attribute_features, attribute_device_variants = 64, "decoder", 1

    opts = budget_options(WithFields())
    assert opts["k"] == 64 and opts["features"] == "decoder" and opts["spread"].variants == 1


def test_feature_sets_fall_back_to_what_is_shared():
    observed = ["middle.norm.bias", "middle.s4d.output_linear.weight"]  # fed-mu: the middle only
    assert feature_names("decoder", observed) == []
    assert feature_names("decoder+biases", observed) == ["middle.norm.bias"]
    full = [f"decoder.layers.{i}.{p}.{t}" for i in range(3) for p in ("ff", "time") for t in ("weight", "bias")]
    assert feature_names("motor-bias", full) == ["decoder.layers.2.ff.bias", "decoder.layers.2.time.bias"]


# ------------------------------------------------------------------------------------------ no truth
def test_the_attack_reads_no_truth(one_torch_thread, tmp_path, monkeypatch):
    """A real Flower FedAvg run (AdamW, batch 8): with truth/ moved away, and with every open of it spied on, the
    attack gives the same presence and counts; so does an observation stripped of the scoring bookkeeping."""
    from tests.attack_fixtures import fedavg_run_dir

    run = fedavg_run_dir(tmp_path / "run", n_clients=2, per_client=8, optimizer="adamw", lr=3e-3, batch_size=8)
    info, observations = observe_run(run)
    prior = population_prior(None, info.data, info.model.n_leads, 48)
    ctx = AttackContext(prior, Budget(), 0)
    before = [attack_attribute(o, i, ctx, k=64) for i, o in enumerate(observations)]
    su.clear_cache()
    truth = (run / "truth").resolve()
    hidden = tmp_path / "hidden"
    shutil.move(str(truth), hidden)
    reads: list[str] = []
    real_open, real_io_open, real_load = builtins.open, io.open, np.load

    def spy(path) -> None:  # noqa: ANN001
        try:
            if "truth" in Path(path).resolve().parts or hidden in Path(path).resolve().parents:
                reads.append(str(path))
        except TypeError:
            pass

    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (spy(f), real_open(f, *a, **k))[1])
    monkeypatch.setattr(io, "open", lambda f, *a, **k: (spy(f), real_io_open(f, *a, **k))[1])
    monkeypatch.setattr(np, "load", lambda f, *a, **k: (spy(f), real_load(f, *a, **k))[1])
    try:
        after = [attack_attribute(o, i, ctx, k=64) for i, o in enumerate(observations)]
        for o in observations:
            o.clients, o.partition_ids = (), ()
        blind = [attack_attribute(o, i, ctx, k=64) for i, o in enumerate(observations)]
    finally:
        monkeypatch.undo()
        shutil.move(str(hidden), truth)
    assert not reads, reads
    for a, b, c in zip(before, after, blind):
        assert a.applicable and np.array_equal(a.presence, b.presence) and np.array_equal(a.presence, c.presence)
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_array_equal(a.counts, c.counts)
