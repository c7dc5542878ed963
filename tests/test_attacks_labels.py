"""Label leakage: the sign rule reads every diagnosis of a batch-1 update exactly."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from attacks.labels import (calibrate_counts, estimate_labels, gradient_like, labels_from_bias_gradient,
                            motor_bias_name, motor_chain_factors)
from attacks.observe import LocalTraining
from simulator.core.model import ModelConfig, TDSSM
from simulator.core.phases import Phase, masked_bce, train_phase
from simulator.core.tensors import ECGTensors

LABEL_SETS = [np.array(v) for v in ([0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 1, 0],
                                    [0, 0, 1, 1, 0, 1], [1, 0, 1, 0, 1, 0])]


def _model(seed: int, dropout: float = 0.0) -> TDSSM:
    torch.manual_seed(seed)
    model = TDSSM(ModelConfig(d_model=16, dropout=dropout))
    with torch.no_grad():  # a "trained" model: biases away from their zero init
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def test_sign_rule_on_the_exact_gradient(one_torch_thread):
    for seed, y in itertools.product(range(4), LABEL_SETS):
        model = _model(seed).eval()
        x = torch.rand(1, 64, 12, generator=torch.Generator().manual_seed(seed))
        yt = torch.as_tensor(y[None], dtype=torch.float32)
        loss = masked_bce(model(x), yt, torch.ones_like(yt, dtype=torch.bool), 6.0)
        bias = dict(model.named_parameters())[motor_bias_name()]
        (g,) = torch.autograd.grad(loss, [bias])
        assert np.array_equal(labels_from_bias_gradient(g.numpy(), 6), y), (seed, y)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_sign_rule_on_weight_deltas_of_several_local_steps(one_torch_thread, optimizer):
    """The client trains for several steps (AdamW: the project's train_phase with cosine schedule, dropout on);
    the server reads the labels from the difference of the weights only."""
    hits = 0
    cases = list(itertools.product(range(3), LABEL_SETS))
    for seed, y in cases:
        model = _model(seed, dropout=0.1)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        x = torch.rand(1, 64, 12, generator=torch.Generator().manual_seed(100 + seed))
        data = ECGTensors.from_arrays(x.numpy(), y[None].astype(np.float32))
        if optimizer == "adamw":
            steps = train_phase(model, Phase("device", ("encoder", "middle", "decoder"), 3, data="personal"), data, None,
                                seed=seed).steps
            tr = LocalTraining(optimizer="adamw", lr=3e-3, weight_decay=0.01, local_epochs=3, batch_size=32)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            model.train()
            for _ in range(3):
                opt.zero_grad()
                masked_bce(model(x), data.y, data.known, 6.0).backward()
                opt.step()
            steps = 3
            tr = LocalTraining(optimizer="sgd", lr=0.05, weight_decay=0.0, local_epochs=3, batch_size=32, schedule="constant")
        name = motor_bias_name()
        delta = dict(model.named_parameters())[name].detach().numpy() - before[name].numpy()
        g = gradient_like(delta, before[name].numpy(), tr, steps)
        est = estimate_labels(g, 6, 1, None)
        assert est.record_labels is not None
        hits += int(np.array_equal(est.record_labels[0], y))
    assert hits == len(cases)


def test_chain_factors_match_autograd(one_torch_thread):
    model = _model(1).eval()
    x = torch.rand(3, 32, 12, generator=torch.Generator().manual_seed(0))
    z, a = motor_chain_factors(model, x)
    assert torch.allclose(z, model(x), atol=1e-6)
    bias = dict(model.named_parameters())[motor_bias_name()]
    for i in range(3):
        for j in range(6):
            (g,) = torch.autograd.grad(model(x[i : i + 1])[0, j], [bias])
            assert g[j] > 0 and g[6 + j] > 0  # the positive chain factor the rule relies on
            assert torch.allclose(g[j] + g[6 + j], a[i, j], atol=1e-6)


def test_batch_counts_with_sgd_and_a_calibration(one_torch_thread):
    """For an SGD batch the calibrated counts are close: the mean absolute count error stays below one record."""
    torch.manual_seed(3)
    model = TDSSM(ModelConfig(d_model=16, dropout=0.0)).eval()
    gen = torch.Generator().manual_seed(5)
    errors = []
    for trial in range(4):
        x = 0.5 + 0.2 * torch.randn(8, 64, 12, generator=gen)
        y = (torch.rand(8, 6, generator=gen) < 0.3).float()
        loss = masked_bce(model(x), y, torch.ones_like(y, dtype=torch.bool), 6.0)
        (g,) = torch.autograd.grad(loss, [dict(model.named_parameters())[motor_bias_name()]])
        public = 0.5 + 0.2 * torch.randn(64, 64, 12, generator=gen)
        est = estimate_labels(g.numpy(), 6, 8, calibrate_counts(model, public, 6.0))
        errors.append(np.abs(est.counts - y.sum(0).numpy()).mean())
    assert np.mean(errors) < 1.0, errors
