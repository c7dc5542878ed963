"""Many clients' local training as one computation: C copies of TDSSM with parameters stacked on a client axis.

The devices of a round train the same architecture on data of the same shape, so their steps can run as one
batched computation: every parameter becomes a (C, ...) tensor, every op works on (C, B, ...) activations,
and the loss is the sum of the clients' own losses, so each client's gradient is exactly its own. What stays
per client is everything that makes the result that client's: its parameters, its AdamW state (AdamW is
elementwise, so one optimiser over stacked tensors keeps C independent states), its data order (a randperm
from its seed) and its dropout stream (its own generator, seeded as `train_phase` seeds the global one, drawn
in the forward's order). The result equals `train_phase` run client by client, to float tolerance (the
batched matmuls sum in another order); tests/test_batched_clients.py checks it.

The forward below restates TDSSM's (`simulator.core.model`, `.s4d`, `.ncp`) for stacked parameters;
`stacked_forward` is checked against `TDSSM.forward` client by client, so the two cannot drift apart silently.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from simulator.core.device import model_device
from simulator.core.jobs import JobOutcome, TrainingJob
from simulator.core.model import TDSSM
from simulator.core.phases import EpochLog, PhaseResult, ProximalTerm, set_trainable
from simulator.core.s4d import S4DConv, causal_fft_conv, s4d_kernel
from simulator.errors import MuprivError

Params = dict[str, torch.Tensor]
KERNEL = tuple(f"middle.s4d.conv.{n}" for n in S4DConv.KERNEL_PARAMS)  # their own AdamW group, as make_optimizer


def stack_key(job: TrainingJob) -> tuple[tuple | None, str]:
    """(key, reason): jobs with equal keys can train together; key None means this job trains alone, for `reason`."""
    if job.phase.self_distill:
        return None, "self-distillation's look-ahead teacher is not batched"
    if job.penalty is not None and not _is_proximal(job):
        return None, "its loss penalty is not a ProximalTerm over the whole model"
    mu = job.penalty.mu if job.penalty is not None else None
    return (job.phase, len(job.data), tuple(job.data.x.shape[1:]), job.model.cfg, mu is not None), ""


def _is_proximal(job: TrainingJob) -> bool:
    p = job.penalty
    return isinstance(p, ProximalTerm) and [id(t) for t in p.params] == [id(t) for t in job.model.parameters()]


# ---------------------------------------------------------------------------------------------- forward
def stack_parameters(models: Sequence[TDSSM], trainable: set[str]) -> Params:
    """name -> (C, ...) copy of every model's parameter; the `trainable` names require grad (leaves)."""
    named = [dict(m.named_parameters()) for m in models]
    return {name: torch.stack([n[name].detach() for n in named]).requires_grad_(name in trainable)
            for name in named[0]}


def unstack_into(models: Sequence[TDSSM], params: Params) -> None:
    """Copy client c's slice of every stacked parameter back into models[c]."""
    with torch.no_grad():
        for c, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(params[name][c])


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-client nn.Linear: x (C, ..., in), weight (C, out, in), bias (C, out) -> (C, ..., out)."""
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    y = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return y.reshape(*x.shape[:-1], weight.shape[1])


def _dropout(x: torch.Tensor, p: float, gens: Sequence[torch.Generator] | None, shape: Sequence[int]) -> torch.Tensor:
    """ChannelDropout per client: client c's mask of `shape` from gens[c], scaled as ChannelDropout scales it."""
    if gens is None or p == 0.0:
        return x
    # drawn on the CPU from each client's own stream whatever the device, then moved: the masks are small
    keep = torch.stack([torch.empty(shape, dtype=x.dtype).bernoulli_(1.0 - p, generator=g) for g in gens])
    return x * keep.div_(1.0 - p).to(x.device)


def stacked_forward(params: Params, model: TDSSM, x: torch.Tensor,
                    gens: Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """(C, B, L, leads) -> (C, B, classes) logits, client c through params[...][c]. `model` gives the shape and
    the NCP wiring masks (fixed by the architecture, the same for every client). With `gens` the forward is in
    training mode (dropout drawn from gens[c]); without, in eval mode."""
    C, B, L, _ = x.shape
    cfg = model.cfg
    H, p = cfg.d_model, cfg.dropout
    h = _linear(x, params["encoder.weight"], params["encoder.bias"])  # (C, B, L, H)

    # Middle: S4D conv (kernel per client, D folded into tap 0), GELU, dropout, 1x1 conv + GLU, dropout, residual, norm.
    conv = "middle.s4d.conv."
    flat = lambda name: params[conv + name].flatten(0, 1)  # noqa: E731 - (C, H, ...) -> (C*H, ...)
    K = s4d_kernel(flat("log_dt"), flat("log_A_real"), flat("A_imag"), flat("C"), L).reshape(C, H, L)
    K = torch.cat([K[..., :1] + params[conv + "D"][..., None], K[..., 1:]], dim=-1)
    y = causal_fft_conv(h.transpose(2, 3), K.unsqueeze(1))  # (C, B, H, L)
    y = _dropout(F.gelu(y), p, gens, (B, H, 1))
    y = _linear(y.transpose(2, 3), params["middle.s4d.output_linear.weight"], params["middle.s4d.output_linear.bias"])
    z = _dropout(F.glu(y, dim=-1), p, gens, (B, 1, H))
    v = F.layer_norm(h + z, (H,), eps=model.middle.norm.eps)
    h = v * params["middle.norm.weight"][:, None, None, :] + params["middle.norm.bias"][:, None, None, :]

    # Decoder: one CfC step per layer from a zero state, masked candidate maps.
    out = h.mean(dim=2)  # (C, B, H)
    for i, layer in enumerate(model.decoder.layers):
        name = f"decoder.layers.{i}."
        z = torch.cat([out, out.new_zeros(C, B, layer.hidden)], dim=-1)
        ff_w = params[name + "ff.weight"] * layer.ff.tile(layer.mask)
        f1, f2 = torch.tanh(_linear(z, ff_w, params[name + "ff.bias"])).chunk(2, dim=-1)
        t_a, t_b = _linear(z, params[name + "time.weight"], params[name + "time.bias"]).chunk(2, dim=-1)
        gate = torch.sigmoid(t_a * 1.0 + t_b)
        out = f1 * (1.0 - gate) + gate * f2
    return out


def stacked_masked_bce(logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor,
                       pos_weight: float | None) -> torch.Tensor:
    """`phases.masked_bce` per client: (C, B, K) in, (C,) losses out."""
    pw = None if pos_weight is None else torch.full((logits.shape[-1],), float(pos_weight), dtype=logits.dtype,
                                                    device=logits.device)
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="none")
    known = known.to(logits.dtype)
    return (loss * known).sum(dim=(1, 2)) / known.sum(dim=(1, 2)).clamp_min(1.0)


# ---------------------------------------------------------------------------------------------- training
def _optimizer(params: Params, trainable: list[str], phase) -> torch.optim.AdamW:  # noqa: ANN001 - Phase
    rest = [params[n] for n in trainable if n not in KERNEL]
    kernel = [params[n] for n in trainable if n in KERNEL]
    groups = [{"params": rest, "lr": phase.lr, "weight_decay": phase.weight_decay}]
    if kernel:
        groups.append({"params": kernel, "lr": phase.kernel_lr, "weight_decay": 0.0})
    return torch.optim.AdamW(groups)


def _proximal(params: Params, jobs: Sequence[TrainingJob]) -> Callable[[], torch.Tensor] | None:
    """Each client's FedProx term as a function of the stacked parameters, (C,): (mu_c / 2) * ||w_c - anchor_c||^2."""
    if jobs[0].penalty is None:
        return None
    names = [n for n, _ in jobs[0].model.named_parameters()]
    mu = torch.tensor([job.penalty.mu for job in jobs], device=params[names[0]].device)  # type: ignore[union-attr]
    anchors = {n: torch.stack([job.penalty.anchor[i] for job in jobs]) for i, n in enumerate(names)}  # type: ignore[union-attr]
    return lambda: 0.5 * mu * sum(((params[n] - anchors[n]) ** 2).flatten(1).sum(dim=1) for n in names)


def train_stacked(jobs: Sequence[TrainingJob]) -> list[JobOutcome | MuprivError]:
    """Train jobs that share a `stack_key` as one computation; each gets its result, or the MuprivError
    `train_phase` would have raised for it (unusable data, divergence), without stopping the others."""
    bad = {i: err for i, job in enumerate(jobs) if (err := _data_error(job)) is not None}
    if bad:  # a client whose data train_phase would refuse fails alone, with train_phase's error
        good = [i for i in range(len(jobs)) if i not in bad]
        trained = dict(zip(good, train_stacked([jobs[i] for i in good]) if good else []))
        return [bad[i] if i in bad else trained[i] for i in range(len(jobs))]
    start = time.perf_counter()
    phase, models = jobs[0].phase, [job.model for job in jobs]
    results = [PhaseResult(phase, best_epoch=phase.epochs) for _ in jobs]
    trainable_ids = {id(p) for p in set_trainable(models[0], phase.parts)}
    for model in models[1:]:
        set_trainable(model, phase.parts)
    trainable = [n for n, p in models[0].named_parameters() if id(p) in trainable_ids]
    if phase.epochs == 0:
        return _finish(models, jobs, results, [None] * len(jobs), start)

    params = stack_parameters(models, set(trainable))
    dev = model_device(models[0])
    opt = _optimizer(params, trainable, phase)
    n, bs, C = len(jobs[0].data), phase.batch_size, len(jobs)
    n_batches = math.ceil(n / bs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, phase.epochs * n_batches))
    proximal = _proximal(params, jobs)
    dropout_gens = [torch.Generator().manual_seed(job.seed) for job in jobs]
    order_gens = [torch.Generator().manual_seed(job.seed) for job in jobs]
    errors: list[MuprivError | None] = [None] * C
    for epoch in range(1, phase.epochs + 1):
        orders = [torch.randperm(n, generator=g) for g in order_gens]
        totals, count = torch.zeros(C, dtype=torch.float64), 0
        for b in range(n_batches):
            idx = [o[b * bs:(b + 1) * bs] for o in orders]
            x = torch.stack([job.data.x[i] for job, i in zip(jobs, idx)]).to(dev)  # records stay on the CPU
            y = torch.stack([job.data.y[i] for job, i in zip(jobs, idx)]).to(dev)
            known = torch.stack([job.data.known[i] for job, i in zip(jobs, idx)]).to(dev)
            losses = stacked_masked_bce(stacked_forward(params, models[0], x, dropout_gens), y, known, phase.pos_weight)
            if proximal is not None:
                losses = losses + proximal()
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            sched.step()
            batch = losses.detach().double().cpu()
            for c in torch.nonzero(~torch.isfinite(batch)).flatten().tolist():
                errors[c] = errors[c] or _diverged(phase, epoch, float(batch[c]))
            totals += batch * len(idx[0])
            count += len(idx[0])
        for c, job in enumerate(jobs):
            results[c].steps += n_batches
            log = EpochLog(phase.name, epoch, float(totals[c]) / count)
            results[c].history.append(log)
        if any(job.on_epoch for job in jobs):
            unstack_into(models, params)
            for c, job in enumerate(jobs):
                if job.on_epoch and errors[c] is None:
                    job.on_epoch(results[c].history[-1])
    unstack_into(models, params)
    return _finish(models, jobs, results, errors, start)


def _data_error(job: TrainingJob) -> MuprivError | None:
    try:
        job.data.check_for_model(job.model.cfg.n_leads, None, job.model.cfg.n_classes,
                                 name=f"phase {job.phase.name!r} training data")
    except MuprivError as err:
        return err
    return None


def _diverged(phase, epoch: int, loss: float) -> MuprivError:  # noqa: ANN001 - Phase
    """The error `train_phase` raises for a non-finite training loss, word for word."""
    return MuprivError(f"phase {phase.name!r} diverged in epoch {epoch} (training loss {loss}): "
                       f"lower its learning rate (train.lr when pretraining, finetune.lr on a device)")


def _finish(models: Sequence[nn.Module], jobs: Sequence[TrainingJob], results: list[PhaseResult],
            errors: list[MuprivError | None], start: float) -> list[JobOutcome | MuprivError]:
    for model in models:
        model.eval()
    share = (time.perf_counter() - start) / len(jobs)
    return [err if err is not None else JobOutcome(res, share) for res, err in zip(results, errors)]
