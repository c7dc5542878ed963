"""What one training step of a phase costs on the device: trainable parameters, FLOPs and memory.

FLOPs are counted on the real step (forward + backward of the actual autograd graph, so a frozen part
that gradients must still pass through is counted, and weight gradients of frozen parts are not), one
fixed way: 2*m*n*k per matmul or 1x1 convolution, 2.5*n*log2(n) per real FFT of length n, elementwise
work not counted. Memory is counted too: parameters, gradients and AdamW state of the trainable
parameters, plus every tensor autograd saves for the backward pass (deduplicated by storage).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from simulator.core.model import TDSSM
from simulator.core.phases import Phase, masked_bce, set_trainable

aten = torch.ops.aten


def _real_fft_flops(n: int, transforms: int) -> int:
    return int(round(2.5 * n * math.log2(n) * transforms)) if n > 1 else 0


def _r2c(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    n = math.prod(x_shape[d] for d in dim)
    return _real_fft_flops(n, math.prod(x_shape) // n)


def _c2r(x_shape, dim, normalization, last_dim_size, *args, out_shape=None, **kwargs) -> int:
    n = math.prod(out_shape[d] for d in dim)
    return _real_fft_flops(n, math.prod(out_shape) // n)


def _c2c(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    n = math.prod(x_shape[d] for d in dim)
    return 2 * _real_fft_flops(n, math.prod(x_shape) // n)  # a complex FFT ~ two real ones


FFT_FORMULAS = {aten._fft_r2c: _r2c, aten._fft_c2r: _c2r, aten._fft_c2c: _c2c}


@dataclass(frozen=True)
class PhaseCost:
    phase: str
    trainable_params: int
    forward_flops: int
    step_flops: int  # forward + backward as executed
    param_bytes: int
    grad_and_optimizer_bytes: int
    activation_bytes: int

    @property
    def memory_bytes(self) -> int:
        return self.param_bytes + self.grad_and_optimizer_bytes + self.activation_bytes

    def to_dict(self) -> dict:
        return asdict(self) | {"memory_bytes": self.memory_bytes}


def count_flops(fn) -> int:
    with FlopCounterMode(display=False, custom_mapping=FFT_FORMULAS) as counter:
        fn()
    return int(counter.get_total_flops())


def phase_cost(model: TDSSM, phase: Phase, length: int, batch_size: int | None = None) -> PhaseCost:
    """Cost of one training step of `phase` at `batch_size` (default: the phase's) and `length` samples.
    Runs one forward/backward on zeros; the model's weights, modes and requires_grad flags are restored."""
    batch = batch_size or phase.batch_size
    saved_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    trainable = set_trainable(model, phase.parts)
    dev = next(model.parameters()).device  # counted where the model is (a GPU model too)
    x = torch.zeros(batch, length, model.cfg.n_leads, device=dev)
    y = torch.zeros(batch, model.cfg.n_classes, device=dev)
    known = torch.ones_like(y, dtype=torch.bool)
    model.train()
    try:
        with torch.no_grad():
            forward = count_flops(lambda: model(x))
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor):
            if not isinstance(t, torch.nn.Parameter) and t.untyped_storage().nbytes():
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        def step():
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = masked_bce(model(x), y, known, phase.pos_weight)
            torch.autograd.grad(loss, trainable)

        step_flops = count_flops(step)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved_flags[n])
        model.train(was_training)
    n_trainable = sum(p.numel() for p in trainable)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters()) + sum(b.numel() * b.element_size() for b in model.buffers())
    return PhaseCost(
        phase=phase.name,
        trainable_params=n_trainable,
        forward_flops=forward,
        step_flops=step_flops,
        param_bytes=param_bytes,
        grad_and_optimizer_bytes=3 * sum(p.numel() * p.element_size() for p in trainable),  # grad + AdamW m and v
        activation_bytes=sum(storages.values()),
    )
