"""More DP noise, a larger SecAgg K and larger batches each lower the leakage scores (over a few seeds).

Cheap attacks keep this fast: the label sign rule, the analytic recovery of the pooled features, and
Inverting Gradients on a small fully connected model. The attacks run through the same Observation ->
attack -> Scorer path as a real run."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from attacks.budget import Budget
from attacks.inversion import InversionConfig, invert
from attacks.metrics import match_records, pearson_per_lead
from attacks.model import bce_loss
from attacks.observe import DataSpec, LocalTraining, Observation
from attacks.priors import PopulationPrior
from attacks.score import Scorer, Truth
from attacks.replay import MatchProblem, one_step_update
from attacks.suite import AttackContext, attack_features, attack_labels
from attacks.threat import THREAT_MODELS, UPDATES
from simulator.core.model import ModelConfig, TDSSM
from simulator.core.phases import masked_bce

CFG = ModelConfig(d_model=16, dropout=0.0)
LENGTH = 64
LR = 0.1
SGD = LocalTraining(optimizer="sgd", lr=LR, weight_decay=0.0, local_epochs=1, batch_size=10**6, schedule="constant")
SEEDS = (0, 1, 2)


def _records(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, LENGTH)[None, :, None]
    freq = 2 + 6 * torch.rand(n, 1, 12, generator=g)
    x = 0.5 + 0.3 * torch.sin(2 * np.pi * freq * t + 6 * torch.rand(n, 1, 12, generator=g))
    y = (torch.rand(n, 6, generator=g) < 0.35).float()
    return x, y


def _model(seed: int) -> TDSSM:
    torch.manual_seed(seed)
    return TDSSM(CFG).eval()


def _gradient(model: TDSSM, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    params = dict(model.named_parameters())
    loss = masked_bce(model(x), y, torch.ones_like(y, dtype=torch.bool), 6.0)
    return {n: g.numpy().astype(np.float64) for n, g in zip(params, torch.autograd.grad(loss, list(params.values())))}


def _prior(seed: int) -> PopulationPrior:
    x, _ = _records(32, 10_000 + seed)
    return PopulationPrior(x.mean(0).numpy(), x.numpy(), 0.0, 1.0, 400.0, "test")


def _score(model: TDSSM, update: dict[str, np.ndarray], n_examples: int, k: int, x_all: torch.Tensor, y_all: torch.Tensor,
           owners: list[str], attacked: tuple[str, ...], seed: int) -> dict[str, float]:
    obs = Observation(scheme="test", round=1, kind="update" if k == 1 else "aggregate", threat=THREAT_MODELS[UPDATES],
                      model=CFG, data=DataSpec(LENGTH, 400.0, "record", "test"), training=SGD,
                      global_params={n: p.detach().numpy() for n, p in model.named_parameters()},
                      update={n: u.astype(np.float32) for n, u in update.items()}, num_examples=n_examples,
                      local_steps=1, num_clients=k, clients=attacked)
    ctx = AttackContext(_prior(seed), Budget(), seed)
    truth = Truth(x_all.numpy(), y_all.numpy(), np.array(owners, dtype=object), ())
    scorer = Scorer([obs], truth, ctx.prior)
    out = scorer.score(attack_features(obs, 0, ctx), obs)
    out.update(scorer.score(attack_labels(obs, 0, ctx), obs))
    return out


def _monotone(values: list[float], tol: float = 0.02) -> bool:
    return all(b <= a + tol for a, b in zip(values, values[1:]))


def test_more_dp_noise_leaks_less(one_torch_thread):
    sigmas = (0.0, 0.3, 3.0, 30.0)
    feats = {s: [] for s in sigmas}
    labels = {s: [] for s in sigmas}
    for seed in SEEDS:
        model = _model(seed)
        x, y = _records(1, seed)
        grad = _gradient(model, x, y)
        flat = np.concatenate([g.ravel() for g in grad.values()])
        clip = 0.5 * np.linalg.norm(flat)  # clipping as DP-SGD does, then Gaussian noise of std sigma * clip
        scale = min(1.0, clip / np.linalg.norm(flat))
        rng = np.random.default_rng(seed)
        noise = {n: rng.standard_normal(g.shape) for n, g in grad.items()}
        for s in sigmas:
            update = {n: -LR * (g * scale + s * clip * noise[n] / np.sqrt(flat.size)) for n, g in grad.items()}
            sc = _score(model, update, 1, 1, x, y, ["c0"], ("c0",), seed)
            feats[s].append(sc["feat_ccos_best"])
            labels[s].append(sc["label_exact"])
    f = [float(np.mean(feats[s])) for s in sigmas]
    lab = [float(np.mean(labels[s])) for s in sigmas]
    assert f[0] > 0.999 and lab[0] == 1.0  # no noise: clipping alone keeps the exact leaks
    assert _monotone(f) and f[-1] < f[0] - 0.3, f
    assert _monotone(lab, tol=0.0) and lab[-1] < 1.0, lab


def test_larger_secagg_k_leaks_less(one_torch_thread):
    ks = (1, 4, 16)
    scores = {k: [] for k in ks}
    for seed in SEEDS:
        model = _model(seed)
        x, y = _records(16, 100 + seed)
        grads = [_gradient(model, x[i : i + 1], y[i : i + 1]) for i in range(16)]
        owners = [f"c{i}" for i in range(16)]
        for k in ks:
            update = {n: -LR * np.mean([g[n] for g in grads[:k]], axis=0) for n in grads[0]}  # the sum / K
            sc = _score(model, update, k, k, x, y, owners, tuple(owners[:k]), seed)
            scores[k].append(sc["feat_ccos_best"])
    s = [float(np.mean(scores[k])) for k in ks]
    assert s[0] > 0.999 and _monotone(s) and s[-1] < s[0] - 0.2, s


def test_larger_batches_leak_less(one_torch_thread):
    batches = (1, 4, 16)
    scores = {b: [] for b in batches}
    for seed in SEEDS:
        model = _model(seed)
        x, y = _records(16, 200 + seed)
        for b in batches:
            update = {n: -LR * g for n, g in _gradient(model, x[:b], y[:b]).items()}
            sc = _score(model, update, b, 1, x[:b], y[:b], ["c0"] * b, ("c0",), seed)
            scores[b].append(sc["feat_ccos_best"])
    s = [float(np.mean(scores[b])) for b in batches]
    assert s[0] > 0.999 and _monotone(s) and s[-1] < s[0] - 0.1, s


def test_larger_batches_lower_inverting_gradients_r(one_torch_thread):
    """The waveform view on a model where one record inverts exactly: once the batch holds more unknowns than
    the first layer's gradient has equations (16 x 64 > 8 x 64), IG's matched r drops."""
    L, leads = 32, 2
    rs = {1: [], 16: []}
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(L * leads, 8), nn.Sigmoid(), nn.Linear(8, 6)).eval()
        g = torch.Generator().manual_seed(seed)
        t = torch.linspace(0, 1, L)[None, :, None]
        x = 0.5 + 0.3 * torch.sin(2 * np.pi * (1 + 4 * torch.rand(16, 1, leads, generator=g)) * t + 3 * torch.rand(16, 1, leads, generator=g))
        y = (torch.rand(16, 6, generator=g) < 0.4).float()
        for b in rs:
            base = {n: p.detach().clone() for n, p in model.named_parameters()}
            problem = MatchProblem(model, base, tuple(base), {}, SGD, bce_loss(6.0), (L, leads), 6, b)
            problem.target = {k: v.detach() for k, v in one_step_update(problem, x[:b], y[:b], create_graph=False).items()}
            rec = invert(problem, InversionConfig(method="ig", n_records=b, iters=150, labels="known", value_range=(0.0, 1.0),
                                                  seed=seed), known_labels=y[:b].numpy())
            rows, cols, _ = match_records(rec.x, x[:b].numpy())
            rs[b].append(np.mean([np.nanmean(pearson_per_lead(rec.x[i], x[j].numpy())) for i, j in zip(rows, cols)]))
    assert np.mean(rs[1]) > 0.99 and np.mean(rs[1]) > np.mean(rs[16]) + 0.05, rs
