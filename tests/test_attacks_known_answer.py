"""Known answer: the project's DLG and Inverting Gradients against plain reference implementations written
here from the papers (Zhu et al. 2019; Geiping et al. 2020), on the same gradient.

The problem: a TDSSM (d_model 16), one synthetic 12-lead ECG from the project's generator at 100 Hz (256
samples, min-max scaled), one SGD step (batch 1), so the one-step view is exact. The references share
nothing with attacks/*: they differentiate the core model's own loss with autograd. The project's attacks
run as the suite runs them (`attack_inversion` at the `standard` budget, labels from the sign rule).
Scores are the per-lead Pearson r, mean over leads (attacks.metrics)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pytest
import torch

from attacks.budget import get_budget
from attacks.metrics import pearson_per_lead
from attacks.observe import DataSpec, LocalTraining, Observation
from attacks.priors import PopulationPrior, population_prior
from attacks.suite import AttackContext, AttackResult, attack_inversion, attack_labels
from attacks.threat import THREAT_MODELS, UPDATES
from simulator.core.model import ModelConfig, TDSSM
from simulator.core.phases import masked_bce

FS, LENGTH, LEADS = 100.0, 256, 12
LR = 0.05
SGD1 = LocalTraining(optimizer="sgd", lr=LR, weight_decay=0.0, local_epochs=1, batch_size=1, schedule="constant")
MARGIN = 0.05  # the project may trail a reference by this much in r


# ------------------------------------------------------------------------------------------ the problem
def ecg_record(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One synthetic ECG, preprocessed like tests/attack_fixtures.client_data but at 100 Hz."""
    from simulator.data.preprocess import PreprocessConfig, preprocess_records
    from simulator.data.synthetic import synthesize

    recs = preprocess_records(synthesize(1, seed=seed, n_patients=1), PreprocessConfig(fs=FS, length=LENGTH))
    x = torch.as_tensor(recs.signals[:, :, :LEADS], dtype=torch.float32)
    return x, torch.as_tensor(np.asarray(recs.labels) > 0, dtype=torch.float32)


def client_model(seed: int, d_model: int) -> TDSSM:
    torch.manual_seed(seed)
    return TDSSM(ModelConfig(d_model=d_model, dropout=0.0)).eval()


def true_gradient(model: TDSSM, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """What the client computes (float32, the core model): the gradient of its loss."""
    loss = masked_bce(model(x), y, torch.ones_like(y, dtype=torch.bool), 6.0)
    return [g.detach() for g in torch.autograd.grad(loss, list(model.parameters()))]


def observation(model: TDSSM, grads: list[torch.Tensor]) -> Observation:
    """The server's view of that client: the weights it sent and the update that came back."""
    names = [n for n, _ in model.named_parameters()]
    return Observation(scheme="fedavg", round=1, kind="update", threat=THREAT_MODELS[UPDATES], model=model.cfg,
                       data=DataSpec(LENGTH, FS, "record", "test"), training=SGD1,
                       global_params={n: p.detach().numpy().copy() for n, p in model.named_parameters()},
                       update={n: (-LR * g).numpy() for n, g in zip(names, grads)}, num_examples=1, local_steps=1,
                       clients=("c0",))


def score(rec: np.ndarray, x: torch.Tensor) -> float:
    return float(np.nanmean(pearson_per_lead(np.asarray(rec)[0], x[0].numpy())))


# ------------------------------------------------------------------------------------------ references
def _gradient_of(model: TDSSM, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y, pos_weight=torch.full_like(y[0], 6.0))
    return list(torch.autograd.grad(loss, list(model.parameters()), create_graph=True))


def reference_dlg(model: TDSSM, target: list[torch.Tensor], y: torch.Tensor, mean: torch.Tensor, sd: float,
                  steps: int = 50, seed: int = 0) -> torch.Tensor:
    """Zhu et al.: dummy data from noise (here Gaussian around the public mean, at the data's scale), the
    labels known (iDLG), L-BFGS on the summed squared distance of every gradient tensor."""
    gen = torch.Generator().manual_seed(seed)
    x = (mean + sd * torch.randn(mean.shape, generator=gen, dtype=mean.dtype)).requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=20, history_size=100, line_search_fn="strong_wolfe",
                            tolerance_grad=0.0, tolerance_change=0.0)  # the defaults are absolute: they stop at once

    def closure() -> torch.Tensor:
        opt.zero_grad()
        dist = sum(((g - t) ** 2).sum() for g, t in zip(_gradient_of(model, x, y), target))
        dist.backward()
        return dist

    for _ in range(steps):
        opt.step(closure)
    return x.detach().clamp(0.0, 1.0)


def reference_ig(model: TDSSM, target: list[torch.Tensor], y: torch.Tensor, mean: torch.Tensor, sd: float,
                 steps: int = 1000, restarts: int = 2, tv: float = 1e-2, seed: int = 0) -> torch.Tensor:
    """Geiping et al.: Gaussian initialisation, Adam (step 0.1 in units of the data's sd) on the sign of the
    gradient of 1 - cosine similarity + total variation, step decay x0.1 at 3/8, 5/8 and 7/8 of the steps,
    a box constraint, restarts: the lowest final loss wins."""
    flat_target = torch.cat([t.reshape(-1) for t in target])

    def cosine_loss(x: torch.Tensor) -> torch.Tensor:
        g = torch.cat([gi.reshape(-1) for gi in _gradient_of(model, x, y)])
        return 1.0 - torch.nn.functional.cosine_similarity(g, flat_target, dim=0)

    best, best_loss = mean, float("inf")
    for restart in range(restarts):
        gen = torch.Generator().manual_seed(seed * 100 + restart)
        x = (mean + sd * torch.randn(mean.shape, generator=gen, dtype=mean.dtype)).clamp(0, 1).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=0.1 * sd)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(steps * f) for f in (3 / 8, 5 / 8, 7 / 8)], 0.1)
        for _ in range(steps):
            opt.zero_grad()
            (cosine_loss(x) + tv * (x[:, 1:] - x[:, :-1]).abs().mean()).backward()
            x.grad.sign_()
            opt.step()
            sched.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
        final = float(cosine_loss(x).detach())
        if final < best_loss:
            best, best_loss = x.detach().clone(), final
    return best


# ------------------------------------------------------------------------------------------ the comparison
D_MODEL, MODEL_SEED, RECORD_SEED = 16, 4, 14


@dataclass
class Case:
    model: TDSSM
    x: torch.Tensor
    y: torch.Tensor
    grads: list[torch.Tensor]
    obs: Observation
    prior: PopulationPrior


@pytest.fixture(scope="module")
def case() -> Iterator[Case]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model = client_model(MODEL_SEED, D_MODEL)
    x, y = ecg_record(RECORD_SEED)
    grads = true_gradient(model, x, y)
    prior = population_prior(None, DataSpec(LENGTH, FS, "record", "test"), LEADS, get_budget("standard").prior_samples)
    yield Case(model, x, y, grads, observation(model, grads), prior)
    torch.set_num_threads(before)


def project_attack(case: Case, method: str) -> AttackResult:
    """The suite's attack at the standard budget, time caps lifted (they make a result depend on the machine's
    speed); the iteration caps and the convergence criterion stay."""
    budget = get_budget("standard").with_overrides(dlg_seconds=None, ig_seconds=None)
    ctx = AttackContext(case.prior, budget, seed=0)
    labels = attack_labels(case.obs, 0, ctx)
    assert labels.labels is not None and np.array_equal(labels.labels, case.y.numpy().astype(int))
    return attack_inversion(case.obs, 0, ctx, method, labels)


def reference_inputs(case: Case) -> dict:
    """float64 copies for the references: the model, the true gradient, the labels, the public mean and sd."""
    model = client_model(MODEL_SEED, D_MODEL).double()
    mean = torch.as_tensor(case.prior.mean, dtype=torch.float64)[None]
    sd = float(np.sqrt(((case.prior.samples - case.prior.mean) ** 2).mean()))
    return {"model": model, "target": [g.double() for g in case.grads], "y": case.y.double(), "mean": mean, "sd": sd}


@pytest.mark.slow
def test_dlg_reaches_a_plain_dlg(case):
    res = project_attack(case, "dlg")
    r = score(res.x, case.x)
    r_ref = score(reference_dlg(**reference_inputs(case)).numpy(), case.x)
    detail = (f"project r {r:.3f} (residual {res.residual:.1e}, {res.iterations} iterations, {res.stop_reason}), "
              f"reference r {r_ref:.3f}")
    assert res.converged, detail
    assert r >= 0.6 and r >= r_ref - MARGIN, detail


@pytest.mark.slow
def test_inverting_gradients_reaches_a_plain_inverting_gradients(case):
    res = project_attack(case, "ig")
    r = score(res.x, case.x)
    r_ref = score(reference_ig(**reference_inputs(case)).numpy(), case.x)
    detail = (f"project r {r:.3f} (residual {res.residual:.1e}, {res.iterations} iterations, {res.stop_reason}), "
              f"reference r {r_ref:.3f}")
    assert res.converged, detail
    assert r >= 0.4 and r >= r_ref - MARGIN, detail


def test_the_references_invert_a_small_fully_connected_model(one_torch_thread):
    """The references themselves work where inversion is known to be easy (one record, a small FC model)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 2, 32), torch.nn.Sigmoid(), torch.nn.Linear(32, 6))
    model = model.double().eval()
    t = torch.linspace(0, 1, 48, dtype=torch.float64)
    x = torch.stack([0.5 + 0.3 * torch.sin(2 * np.pi * 3 * t), 0.5 + 0.2 * torch.cos(2 * np.pi * 5 * t)], 1)[None]
    y = torch.tensor([[1.0, 0, 0, 1, 0, 0]], dtype=torch.float64)
    target = [g.detach() for g in _gradient_of(model, x, y)]
    mean, sd = torch.full_like(x, 0.5), 0.25
    dlg = reference_dlg(model, target, y, mean, sd, steps=20)
    ig = reference_ig(model, target, y, mean, sd, steps=300, tv=0.0)
    for rec in (dlg, ig):
        assert np.nanmean(pearson_per_lead(rec[0].numpy(), x[0].numpy())) > 0.99
