"""Per-sample gradients for DP-SGD: Opacus grad samplers for the two layers Opacus does not know.

Import this module before wrapping a TDSSM with Opacus (`GradSampleModule(model, batch_first=True,
loss_reduction="mean")` in the default `hooks` mode). nn.Linear and nn.LayerNorm use Opacus' own samplers.
"""
from __future__ import annotations

import torch
from opacus.grad_sample import register_grad_sampler

from simulator.core.ncp import MaskedLinear
from simulator.core.s4d import S4DConv, s4d_kernel


@register_grad_sampler(MaskedLinear)
def _masked_linear_grad_sample(layer: MaskedLinear, activations: list[torch.Tensor], backprops: torch.Tensor) -> dict:
    mask, x = activations[0], activations[1].to(backprops.dtype)
    out = {}
    if layer.weight.requires_grad:
        out[layer.weight] = torch.einsum("n...i,n...j->nij", backprops, x) * layer.tile(mask).to(backprops.dtype)
    if layer.bias.requires_grad:
        out[layer.bias] = torch.einsum("n...k->nk", backprops)
    return out


@register_grad_sampler(S4DConv)
def _s4d_grad_sample(layer: S4DConv, activations: list[torch.Tensor], backprops: torch.Tensor) -> dict:
    """y_b = K * u_b with K's tap 0 holding D. The gradient of sample b w.r.t. the full kernel is the
    correlation of its output gradient with its input; the SSM parameters' per-sample gradients are that
    pulled back through the (cheap) kernel function, batched over samples."""
    u = activations[0].to(backprops.dtype)
    L = u.shape[-1]
    dK = torch.fft.irfft(torch.fft.rfft(backprops, n=2 * L) * torch.fft.rfft(u, n=2 * L).conj(), n=2 * L)[..., :L]  # (B, H, L)
    out = {}
    if layer.D.requires_grad:
        out[layer.D] = dK[:, :, 0]
    params = [getattr(layer, n) for n in ("log_dt", "log_A_real", "A_imag", "C")]
    wanted = [p for p in params if p.requires_grad]
    if wanted:
        with torch.enable_grad():
            K = s4d_kernel(*params, L)
            grads = torch.autograd.grad(K, wanted, grad_outputs=dK, is_grads_batched=True)
        out.update(zip(wanted, grads))
    return out
