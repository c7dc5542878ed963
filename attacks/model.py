"""The attacker's copy of the public architecture, and the model-agnostic loss it assumes.

Gradient matching differentiates the client's gradient with respect to the dummy input, i.e. it
needs second derivatives. The core's S4D convolution has a hand-written backward whose saved input
spectrum carried no graph, so its double backward dropped a term (the core now recomputes the spectra
under create_graph; both are checked in tests/test_attacks_model.py). The attacker's model therefore swaps in a convolution written with
autograd's own FFT ops -- same parameters, same names, same numbers, twice differentiable.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from simulator.core.model import ModelConfig, TDSSM
from simulator.core.phases import masked_bce
from simulator.core.s4d import S4DConv

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TwiceDifferentiableS4DConv(S4DConv):
    """S4DConv whose causal FFT convolution is plain autograd (slower backward, exact double backward)."""

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # u: (B, H, L)
        L = u.shape[-1]
        K = self.full_kernel(L)
        y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(K, n=2 * L), n=2 * L)
        return y[..., :L]


def attacker_model(cfg: ModelConfig, params: dict[str, np.ndarray] | None = None, seed: int = 0) -> TDSSM:
    """The public TDSSM (eval mode, no dropout: the client's dropout masks are private), with the given
    parameters loaded; parameters not given keep a seeded initialisation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TDSSM(cfg)
    old = model.middle.s4d.conv
    new = TwiceDifferentiableS4DConv.__new__(TwiceDifferentiableS4DConv)
    new.__dict__.update(old.__dict__)  # same Parameter objects, same names
    model.middle.s4d.conv = new
    if params:
        load_params(model, params)
    return model.eval()


def load_params(model: nn.Module, params: dict[str, np.ndarray]) -> None:
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, arr in params.items():
            if name in own:
                own[name].copy_(torch.as_tensor(np.asarray(arr), dtype=own[name].dtype))


def bce_loss(pos_weight: float | None) -> LossFn:
    """The clients' loss (masked_bce with every label known: the attacker cannot see the mask)."""

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return masked_bce(logits, y, torch.ones_like(y, dtype=torch.bool), pos_weight)

    return loss


def kernel_param_names(model: nn.Module) -> set[str]:
    """Names of the S4D kernel parameters (their own optimiser group in the project's AdamW)."""
    out = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, S4DConv):
            out.update(f"{mod_name}.{p}" if mod_name else p for p in S4DConv.KERNEL_PARAMS)
    return out
