"""Opacus (hooks mode) per-sample gradients for the whole TDSSM, checked against a one-at-a-time loop."""
import warnings

import pytest
import torch

import simulator.core.private  # noqa: F401  (registers the grad samplers)
from opacus import GradSampleModule
from simulator.core.model import ModelConfig, TDSSM
from simulator.core.phases import masked_bce, set_trainable


@pytest.mark.parametrize("parts", [("encoder", "middle", "decoder"), ("encoder", "decoder"), ("middle",), ("decoder",)])
def test_per_sample_gradients_match_a_loop(parts):
    torch.manual_seed(0)
    model = TDSSM(ModelConfig(d_model=16, dropout=0.0))
    x, y = torch.randn(5, 64, 12), (torch.rand(5, 6) > 0.5).float()
    known = torch.ones(5, 6, dtype=torch.bool)
    trainable = set_trainable(model, parts)
    expected = [torch.autograd.grad(masked_bce(model(x[i:i + 1]), y[i:i + 1], known[i:i + 1], 6.0), trainable) for i in range(5)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")  # strict: refuses unsupported layers
    masked_bce(gsm(x), y, known, 6.0).backward()
    for p, *per_sample in zip(trainable, *expected):
        torch.testing.assert_close(p.grad_sample, torch.stack(per_sample), rtol=1e-4, atol=1e-7)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert all(getattr(p, "grad_sample", None) is None for p in frozen)
    gsm._close()
