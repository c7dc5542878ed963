"""The attacker's model and its simulation of local training are faithful to the client's."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

from attacks.model import attacker_model, bce_loss, kernel_param_names
from attacks.observe import LocalTraining
from attacks.replay import MatchProblem, one_step_update, unrolled_update
from simulator.core.model import ModelConfig, TDSSM
from simulator.core.phases import Phase, masked_bce, train_phase
from simulator.core.tensors import ECGTensors

CFG = ModelConfig(d_model=8, d_state=4, dropout=0.0)


def _pair(seed: int = 0) -> tuple[TDSSM, TDSSM]:
    torch.manual_seed(seed)
    core = TDSSM(CFG).eval()
    mine = attacker_model(CFG, {n: p.detach().numpy() for n, p in core.named_parameters()})
    return core, mine


def test_same_parameters_and_outputs(one_torch_thread):
    core, mine = _pair()
    assert [n for n, _ in core.named_parameters()] == [n for n, _ in mine.named_parameters()]
    x = torch.rand(2, 16, 12)
    assert torch.allclose(core(x), mine(x), atol=1e-6)


def test_double_backward_is_exact(one_torch_thread):
    """d(gradient)/d(input) -- what gradient matching follows -- against finite differences, in float64."""
    _, mine = _pair()
    mine = mine.double()
    params = {n: p.detach() for n, p in mine.named_parameters()}

    def flat_grad(x: torch.Tensor) -> torch.Tensor:
        p = {n: v.clone().requires_grad_(True) for n, v in params.items()}
        out = functional_call(mine, p, (x,)).sum()
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(out, list(p.values()), create_graph=True)])

    x = torch.rand(1, 12, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(flat_grad, (x,))


def test_core_convolution_has_an_exact_second_derivative(one_torch_thread):
    """The core's fast FFT backward is twice differentiable: d(gradient)/d(input) against finite differences."""
    torch.manual_seed(0)
    core = TDSSM(CFG).eval().double()
    params = {n: p.detach() for n, p in core.named_parameters()}

    def flat_grad(x: torch.Tensor) -> torch.Tensor:
        p = {n: v.clone().requires_grad_(True) for n, v in params.items()}
        out = functional_call(core, p, (x,)).sum()
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(out, list(p.values()), create_graph=True)])

    x = torch.rand(1, 12, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(flat_grad, (x,))


def _problem(model: TDSSM, training: LocalTraining, n: int) -> MatchProblem:
    base = {k: v.detach().clone() for k, v in model.named_parameters()}
    return MatchProblem(model, base, tuple(base), {}, training, bce_loss(training.pos_weight), (32, 12), 6, n,
                        kernel_names=kernel_param_names(model))


def _data(n: int, seed: int = 1) -> ECGTensors:
    g = torch.Generator().manual_seed(seed)
    return ECGTensors(torch.rand(n, 32, 12, generator=g), (torch.rand(n, 6, generator=g) < 0.4).float(),
                      torch.ones(n, 6, dtype=torch.bool))


def test_unrolled_adamw_equals_the_projects_train_phase(one_torch_thread):
    """One batch per epoch (so the private batch order does not matter), 3 epochs of AdamW with the kernel
    group and the cosine schedule: the attacker's replay gives the client's update."""
    core, mine = _pair(2)
    data = _data(4)
    start = {n: p.detach().clone() for n, p in core.named_parameters()}
    train_phase(core, Phase("device", ("encoder", "middle", "decoder"), 3, data="personal", batch_size=8), data, None, seed=0)
    truth = {n: p.detach() - start[n] for n, p in core.named_parameters()}
    tr = LocalTraining(optimizer="adamw", lr=3e-3, kernel_lr=1e-3, weight_decay=0.01, local_epochs=3, batch_size=8)
    sim, steps = unrolled_update(_problem(mine, tr, 4), data.x, data.y, create_graph=False)
    assert steps == 3
    for n in truth:
        assert torch.allclose(sim[n], truth[n], atol=2e-6, rtol=1e-3), n


@pytest.mark.parametrize("batch_size", [2, 4])
def test_sgd_replay_and_one_step_view(one_torch_thread, batch_size):
    core, mine = _pair(3)
    data = _data(4, seed=2)
    start = {n: p.detach().clone() for n, p in core.named_parameters()}
    opt = torch.optim.SGD(core.parameters(), lr=0.1)
    for i in range(0, 4, batch_size):
        opt.zero_grad()
        masked_bce(core(data.x[i : i + batch_size]), data.y[i : i + batch_size], data.known[i : i + batch_size], 6.0).backward()
        opt.step()
    truth = {n: p.detach() - start[n] for n, p in core.named_parameters()}
    tr = LocalTraining(optimizer="sgd", lr=0.1, weight_decay=0.0, local_epochs=1, batch_size=batch_size, schedule="constant")
    problem = _problem(mine, tr, 4)
    sim, _ = unrolled_update(problem, data.x, data.y, create_graph=False)
    for n in truth:
        assert torch.allclose(sim[n], truth[n], atol=1e-6, rtol=1e-4), n
    one = one_step_update(problem, data.x, data.y, create_graph=False)
    vec = lambda d: torch.cat([d[n].reshape(-1) for n in truth])  # noqa: E731
    cos = torch.nn.functional.cosine_similarity(vec(one), vec(truth), dim=0)
    if batch_size == 4:
        assert cos > 1 - 1e-5  # one full-batch SGD step is exactly the one-step view
    else:
        assert 0.9 < cos < 1 - 1e-6  # two small steps are only approximately one big step
    assert np.isfinite(cos.item())
