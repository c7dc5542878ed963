"""DLG and Inverting Gradients where inversion is known to work (a small fully connected model, one
record), the same code on TDSSM, and the analytic recovery of the decoder's input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attacks.analytic import rank_one_input, recover_pooled_features
from attacks.inversion import InversionConfig, invert
from attacks.metrics import pearson_per_lead
from attacks.model import attacker_model, bce_loss, kernel_param_names
from attacks.observe import LocalTraining
from attacks.simulate import MatchProblem, one_step_update
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
