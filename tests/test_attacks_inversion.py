"""DLG and Inverting Gradients where inversion is known to work (a small fully connected model, one
record), the same code on TDSSM, how every run stops and says so, which model of the update the suite
fits, and the analytic recovery of the decoder's input."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

import attacks.inversion as inversion
from attacks.analytic import rank_one_input, recover_pooled_features
from attacks.budget import Budget
from attacks.inversion import CONVERGED, ITERATION_CAP, NOT_FINITE, TIME_CAP, InversionConfig, Stopper, invert
from attacks.metrics import pearson_per_lead
from attacks.model import attacker_model, bce_loss, kernel_param_names
from attacks.observe import DataSpec, LocalTraining, Observation
from attacks.priors import PopulationPrior
from attacks.replay import MatchProblem, _batches, one_step_update, unrolled_update
from attacks.suite import AttackContext, attack_inversion
from attacks.threat import THREAT_MODELS, UPDATES
from simulator.core.model import ModelConfig, TDSSM
from simulator.core.phases import masked_bce

L, LEADS, C = 48, 2, 6
SGD1 = LocalTraining(optimizer="sgd", lr=0.1, weight_decay=0.0, local_epochs=1, batch_size=1, schedule="constant")


def _signal(seed: int, length: int = L, leads: int = LEADS) -> torch.Tensor:
    t = torch.linspace(0, 1, length)
    rows = [0.5 + 0.3 * torch.sin(2 * np.pi * (2 + k + seed) * t + seed) for k in range(leads)]
    return torch.stack(rows, 1)[None]


def _fc_problem(seed: int, x: torch.Tensor, y: torch.Tensor) -> MatchProblem:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(L * LEADS, 32), nn.Sigmoid(), nn.Linear(32, C)).eval()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    problem = MatchProblem(model, base, tuple(base), {}, SGD1, bce_loss(6.0), (L, LEADS), C, 1)
    problem.target = {k: v.detach() for k, v in one_step_update(problem, x, y, create_graph=False).items()}
    return problem


@pytest.mark.parametrize("seed", [0, 1])
def test_dlg_and_ig_invert_a_small_fc_model(one_torch_thread, seed):
    x = _signal(seed)
    y = torch.tensor([[1.0, 0, 0, 1, 0, 0]]) if seed else torch.tensor([[0.0, 1, 0, 0, 0, 1]])
    problem = _fc_problem(seed, x, y)
    dlg = invert(problem, InversionConfig(method="dlg", iters=20, inner=20, labels="joint", value_range=(0.0, 1.0), seed=seed))
    ig = invert(problem, InversionConfig(method="ig", iters=300, labels="known", value_range=(0.0, 1.0), seed=seed),
                known_labels=y.numpy())
    for rec in (dlg, ig):
        r = np.nanmean(pearson_per_lead(rec.x[0], x[0].numpy()))
        assert r > 0.99, (r, rec.residual)
        assert rec.residual < 1e-4
    assert np.array_equal(dlg.labels, y.numpy().astype(int))  # DLG recovered the labels jointly


def test_dlg_fails_honestly_from_an_unrelated_update(one_torch_thread):
    """Matching an update that no single record of this model produced leaves a large residual:
    the residual tells a failed optimiser apart from a success."""
    x, y = _signal(0), torch.tensor([[1.0, 0, 0, 0, 0, 0]])
    problem = _fc_problem(0, x, y)
    problem.target = {k: torch.randn_like(v) for k, v in problem.target.items()}
    rec = invert(problem, InversionConfig(method="dlg", iters=5, inner=10, labels="known", value_range=(0.0, 1.0)),
                 known_labels=y.numpy())
    assert rec.residual > 0.5


def _tdssm_problem(seed: int, n: int) -> tuple[MatchProblem, torch.Tensor, torch.Tensor]:
    cfg = ModelConfig(d_model=8, d_state=4, dropout=0.0)
    torch.manual_seed(seed)
    core = TDSSM(cfg)
    model = attacker_model(cfg, {k: v.detach().numpy() for k, v in core.named_parameters()})
    x = 0.5 + 0.2 * torch.randn(n, 64, 12, generator=torch.Generator().manual_seed(seed))
    y = (torch.rand(n, 6, generator=torch.Generator().manual_seed(seed + 1)) < 0.4).float()
    base = {k: v.detach().clone() for k, v in model.named_parameters()}
    problem = MatchProblem(model, base, tuple(base), {}, SGD1, bce_loss(6.0), (64, 12), 6, n,
                           kernel_names=kernel_param_names(model))
    problem.target = {k: v.detach() for k, v in one_step_update(problem, x, y, create_graph=False).items()}
    return problem, x, y


@pytest.mark.parametrize("method", ["dlg", "ig"])
def test_the_same_code_runs_on_tdssm_and_reports_its_residual(one_torch_thread, method):
    problem, x, y = _tdssm_problem(0, 1)
    cfg = InversionConfig(method=method, iters=3 if method == "dlg" else 20, inner=5, restarts=2, labels="joint",
                          value_range=(0.0, 1.0), tv_weight=1e-3 if method == "ig" else 0.0)
    rec = invert(problem, cfg)
    assert rec.x.shape == (1, 64, 12) and rec.labels.shape == (1, 6)
    assert len(rec.restart_residuals) == 2 and rec.residual == min(rec.restart_residuals)
    assert np.isfinite(rec.residual) and rec.history
    again = invert(problem, cfg)
    assert np.array_equal(rec.x, again.x)  # seeded: the same reconstruction twice


def test_analytic_features_of_one_record_are_exact(one_torch_thread):
    for seed in range(3):
        cfg = ModelConfig(d_model=16, dropout=0.0)
        torch.manual_seed(seed)
        model = TDSSM(cfg).eval()
        x = torch.rand(1, 64, 12, generator=torch.Generator().manual_seed(seed))
        y = torch.tensor([[0.0, 1, 0, 0, 0, 0]])
        loss = masked_bce(model(x), y, torch.ones_like(y, dtype=torch.bool), 6.0)
        names = [n for n, _ in model.named_parameters() if n.startswith("decoder.layers.0.")]
        grads = dict(zip(names, (g.numpy() for g in torch.autograd.grad(loss, [dict(model.named_parameters())[n] for n in names]))))
        feats, residual = recover_pooled_features(grads, model.decoder.layers[0].mask.numpy(), 16)
        true = model.features(x)[0].detach().numpy()
        assert np.allclose(feats, true, atol=1e-4 * np.abs(true).max()), seed
        assert residual < 1e-4


def test_rank_one_fit_of_a_batch_is_an_average_with_a_residual():
    gen = np.random.default_rng(0)
    xs = gen.normal(size=(2, 5))
    deltas = gen.normal(size=(2, 7))
    W = sum(np.outer(d, x) for d, x in zip(deltas, xs))
    b = deltas.sum(0)
    est, residual = rank_one_input(W, b)
    assert residual > 0.05  # two records are not one
    est1, residual1 = rank_one_input(np.outer(deltas[0], xs[0]), deltas[0])
    assert np.allclose(est1, xs[0]) and residual1 < 1e-12


# ------------------------------------------------------------------------------------------ stopping
def test_the_stopper_names_why_a_run_ended():
    stop = Stopper(tol=0.01, window=3, max_checks=100, deadline=math.inf)
    reasons = [stop.update(v) for v in (1.0, 0.5, 0.25, 0.2499, 0.2499, 0.2499)]
    assert reasons == ["", "", "", "", "", CONVERGED]  # < 1 % better than 3 checks ago
    capped = Stopper(0.0, 5, 3, math.inf)
    assert [capped.update(v) for v in (3.0, 2.0, 1.0)] == ["", "", ITERATION_CAP]
    assert Stopper(0.01, 3, 100, time.perf_counter() - 1.0).update(1.0) == TIME_CAP
    assert Stopper(0.01, 3, 100, math.inf).update(float("nan")) == NOT_FINITE


def test_every_run_says_whether_it_converged(one_torch_thread):
    x, y = _signal(0), torch.tensor([[0.0, 1, 0, 0, 0, 1]])
    problem = _fc_problem(0, x, y)
    dlg = invert(problem, InversionConfig(method="dlg", iters=200, inner=10, tol=1e-3, window=2, labels="known",
                                          value_range=(0.0, 1.0)), known_labels=y.numpy())
    assert dlg.converged and dlg.stop_reason == CONVERGED
    assert 0 < dlg.iterations < 2000 and dlg.evaluations >= dlg.iterations
    capped = invert(problem, InversionConfig(method="ig", iters=5, tol=0.0, labels="known", value_range=(0.0, 1.0)),
                    known_labels=y.numpy())
    assert not capped.converged and capped.stop_reason == ITERATION_CAP and capped.iterations == 5
    timed = invert(problem, InversionConfig(method="dlg", iters=10**6, inner=5, tol=0.0, max_seconds=0.2, restarts=2,
                                            labels="known", value_range=(0.0, 1.0)), known_labels=y.numpy())
    assert timed.stop_reason == TIME_CAP and timed.restart_stops == [TIME_CAP, TIME_CAP] and timed.seconds < 5.0


def test_dlg_rescales_below_lbfgs_absolute_thresholds(one_torch_thread, monkeypatch):
    """torch's L-BFGS drops curvature pairs with y.s <= 1e-10 (absolute): once the residual of a TDSSM update is
    small, plain L-BFGS stalls; DLG's rescaled restarts keep it going."""
    problem, x, y = _tdssm_problem(0, 1)
    problem.to(torch.float64)
    target = one_step_update(problem, x.double(), y.double(), create_graph=False)
    problem.target = {k: v.detach() for k, v in target.items()}
    cfg = InversionConfig(method="dlg", iters=20, inner=20, tol=0.0, labels="known", value_range=(0.0, 1.0))
    rescaled = invert(problem, cfg, known_labels=y.numpy())
    monkeypatch.setattr(inversion, "RESCALE_FACTOR", 0.0)
    plain = invert(problem, cfg, known_labels=y.numpy())
    assert rescaled.residual < 0.5 * plain.residual, (rescaled.residual, plain.residual)


# ------------------------------------------------------------------------------------------ the update's model
def test_unrolled_dummies_follow_the_clients_batches(one_torch_thread):
    assert [len(b) for b in _batches(5, 5, 2)] == [2, 2, 1]  # one dummy per record: the client's own batches
    assert [b.tolist() for b in _batches(2, 6, 2)] == [[0], [0], [1]]  # fewer dummies: the same share of the epoch
    cfg = ModelConfig(d_model=8, d_state=4, dropout=0.0)
    torch.manual_seed(3)
    core = TDSSM(cfg)
    model = attacker_model(cfg, {k: v.detach().numpy() for k, v in core.named_parameters()})
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(5, 32, 12, generator=g), (torch.rand(5, 6, generator=g) < 0.4).float()
    start = {n: p.detach().clone() for n, p in core.named_parameters()}
    opt = torch.optim.SGD(core.parameters(), lr=0.1)
    for i in range(0, 5, 2):  # batches of 2, 2 and 1
        opt.zero_grad()
        masked_bce(core(x[i : i + 2]), y[i : i + 2], torch.ones_like(y[i : i + 2], dtype=torch.bool), 6.0).backward()
        opt.step()
    tr = LocalTraining(optimizer="sgd", lr=0.1, weight_decay=0.0, local_epochs=1, batch_size=2, schedule="constant")
    base = {k: v.detach().clone() for k, v in model.named_parameters()}
    sim, steps = unrolled_update(MatchProblem(model, base, tuple(base), {}, tr, bce_loss(6.0), (32, 12), 6, 5), x, y,
                                 create_graph=False)
    assert steps == 3
    for n, p in core.named_parameters():
        assert torch.allclose(sim[n], p.detach() - start[n], atol=1e-6, rtol=1e-4), n


def _adamw_observation(n_records: int = 6) -> tuple[Observation, PopulationPrior]:
    """A client that took 3 AdamW steps (6 records, batches of 2) on a small TDSSM."""
    cfg = ModelConfig(d_model=8, d_state=4, dropout=0.0)
    torch.manual_seed(5)
    model = TDSSM(cfg)
    tr = LocalTraining(optimizer="adamw", lr=3e-3, weight_decay=0.01, local_epochs=1, batch_size=2)
    g = torch.Generator().manual_seed(6)
    x = 0.5 + 0.2 * torch.randn(n_records, 32, 12, generator=g)
    y = (torch.rand(n_records, 6, generator=g) < 0.4).float()
    params = {n: p.detach().numpy() for n, p in model.named_parameters()}
    attacker = attacker_model(cfg, params)
    base = {k: v.detach().clone() for k, v in attacker.named_parameters()}
    problem = MatchProblem(attacker, base, tuple(base), {}, tr, bce_loss(6.0), (32, 12), 6, n_records,
                           kernel_names=kernel_param_names(attacker))
    update, _ = unrolled_update(problem, x, y, create_graph=False)
    obs = Observation(scheme="fedavg", round=1, kind="update", threat=THREAT_MODELS[UPDATES], model=cfg,
                      data=DataSpec(32, 100.0, "record", "test"), training=tr, global_params=params,
                      update={n: u.detach().numpy() for n, u in update.items()}, num_examples=n_records, local_steps=3)
    prior_x = 0.5 + 0.2 * torch.randn(8, 32, 12, generator=g)
    return obs, PopulationPrior(prior_x.mean(0).numpy(), prior_x.numpy(), 0.0, 1.0, 100.0, "test")


def test_the_suite_states_the_update_model_and_the_records_it_reconstructs(one_torch_thread):
    obs, prior = _adamw_observation()
    small = Budget(name="small", max_records=2, dlg_iters=2, dlg_inner=3, ig_iters=3, multistep_iters=3,
                   dlg_seconds=None, ig_seconds=None, multistep_seconds=None)
    one_step = attack_inversion(obs, 0, AttackContext(prior, small, 0), "dlg", None)
    assert "reconstructing 2 of 6 records: budget cap max_records" in one_step.note
    assert one_step.settings["update_model"].startswith("one step") and "3 local adamw step(s)" in one_step.note
    assert one_step.x.shape == (2, 32, 12) and one_step.settings["records_behind_update"] == 6
    assert isinstance(one_step.converged, bool) and one_step.iterations > 0 and one_step.stop_reason
    assert {"converged", "iterations", "stop_reason"} <= set(one_step.settings)
    unrolled = small.with_overrides(unroll=True, max_records=None)
    ig = attack_inversion(obs, 0, AttackContext(prior, unrolled, 0), "ig", None)
    assert ig.settings["update_model"].startswith("unrolled") and ig.settings["steps_unrolled"] == 3
    assert ig.x.shape == (6, 32, 12) and "records" not in ig.note  # one dummy per record: no cap to state
    assert attack_inversion(obs, 0, AttackContext(prior, unrolled, 0), "multistep", None).note.startswith("skipped")
    multistep = attack_inversion(obs, 0, AttackContext(prior, small, 0), "multistep", None)
    assert multistep.settings["update_model"].startswith("unrolled")
