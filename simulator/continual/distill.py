"""Dataset distillation by distribution matching (Zhao and Bilen, 2023), for ECG records.

The device condenses what it has (the memory kept so far plus the stage's new records) into `size` synthetic
records. They start as a class-balanced random selection of real records (memory.select_random, so the budget
and the group of each synthetic record are those of the `random` method) and are then optimised so that, per
group, their mean embedding equals the mean embedding of the group's real records, under an encoder drawn afresh
at random every iteration from the model family (a TDSSM with the device model's shape: its pooled encoder + S4D
features, or the pooled encoder output alone). No network is trained; matching under many random encoders
matches the distributions in the directions the model family can see. An optional frequency term matches the
mean magnitude spectrum per group and lead (|rfft| with norm="forward"), as CondTSC does for time series.

A real multi-label record counts towards the mean of each of its groups. A synthetic record carries the soft mean
of its group's real label vectors (over the records where each class is known): a record standing for "the AF
records" keeps their co-occurring classes at the rate they occur, rather than claiming pure AF.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from simulator.continual.memory import GROUPS, Memory, select_random
from simulator.core.cost import count_flops
from simulator.core.model import ModelConfig, TDSSM
from simulator.core.tensors import ECGTensors

REAL_BATCH = 64  # real records per group and iteration (all of them when a group has fewer)
EVAL_ENCODERS = 4  # fixed random encoders the objective is reported on, before and after (never trained on)


class DistillSettings(Protocol):
    """What distillation reads from its settings: `mupriv continual`'s ContinualConfig has these fields, and so do
    the `distill-share` scheme's parameters (baselines.distill_share). A protocol rather than ContinualConfig itself,
    so that this module imports no config: a scheme may use it without a circle through simulator.config, which
    looks the schemes up."""

    distill_iterations: int
    distill_lr: float
    distill_embed: str
    distill_freq_weight: float


@dataclass(frozen=True)
class DistillResult:
    memory: Memory
    objective_before: float  # the matching loss on EVAL_ENCODERS fixed random encoders, at the initial selection
    objective_after: float  # the same after distillation
    flops: int  # the device's work: one iteration's forward + backward, counted, times the iterations
    iterations: int


def random_embedder(model_cfg: ModelConfig, seed: int, embed: str):
    """A function x (B, L, leads) -> (B, d) of a TDSSM initialised at random from `seed`, in eval mode, frozen."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = TDSSM(model_cfg).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    if embed == "encoder":
        return lambda x: net.encoder(x).mean(dim=1)
    return net.features


def _spectrum(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.rfft(x, dim=1, norm="forward").abs()


def matching_loss(embed, syn_x: torch.Tensor, syn_group: torch.Tensor, real_x: torch.Tensor, real_member: torch.Tensor,
                  freq_weight: float) -> torch.Tensor:
    """Sum over the groups that have synthetic records of ||mean embed(real) - mean embed(synthetic)||^2 (+ the
    frequency term). `syn_group` (S,) is each synthetic record's group; `real_member` (R, groups) bool."""
    with torch.no_grad():
        e_real = embed(real_x)
        f_real = _spectrum(real_x) if freq_weight else None
    e_syn = embed(syn_x)
    f_syn = _spectrum(syn_x) if freq_weight else None
    loss = syn_x.new_zeros(())
    for g in torch.unique(syn_group).tolist():
        rows, srows = real_member[:, g], syn_group == g
        if not rows.any():
            continue
        loss = loss + ((e_real[rows].mean(0) - e_syn[srows].mean(0)) ** 2).sum()
        if freq_weight:
            loss = loss + freq_weight * ((f_real[rows].mean(0) - f_syn[srows].mean(0)) ** 2).sum()
    return loss


def objective(model_cfg: ModelConfig, c: DistillSettings, syn_x: torch.Tensor, syn_group: torch.Tensor,
              real: Memory, seed: int) -> float:
    """The matching loss averaged over EVAL_ENCODERS fixed random encoders and every real record (no sampling):
    the number distillation should lower, measured on encoders it never drew."""
    with torch.no_grad():
        total = sum(float(matching_loss(random_embedder(model_cfg, _eval_seed(seed, k), c.distill_embed), syn_x, syn_group,
                                        real.data.x, real.groups, c.distill_freq_weight)) for k in range(EVAL_ENCODERS))
    return total / EVAL_ENCODERS


def _eval_seed(seed: int, k: int) -> int:
    return int(np.random.SeedSequence([int(seed), 0xE7A1, k]).generate_state(1)[0])


def _iter_seed(seed: int, t: int) -> int:
    return int(np.random.SeedSequence([int(seed), 0xD157, t]).generate_state(1)[0])


def soft_labels(candidates: Memory, group_of: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per synthetic record: the mean label vector of its group's candidates over the entries where a class is
    known, and known = the class is known for at least one of them."""
    ys, ks = [], []
    for g in group_of:
        rows = candidates.groups[:, g]
        y, k = candidates.data.y[rows], candidates.data.known[rows].float()
        n = k.sum(0)
        ys.append(torch.where(n > 0, (y * k).sum(0) / n.clamp_min(1), torch.zeros_like(n)))
        ks.append(n > 0)
    return torch.stack(ys), torch.stack(ks)


def distill(candidates: Memory, size: int, model_cfg: ModelConfig, c: DistillSettings, stage: int, seed: int) -> DistillResult:
    """Condense `candidates` into exactly min(size, len(candidates)) synthetic records (see the module docstring)."""
    rng = np.random.default_rng([int(seed), 0xD15, stage])
    init, group_of = select_random(candidates, size, rng)
    syn_group = torch.as_tensor(group_of, dtype=torch.long)
    y, known = soft_labels(candidates, group_of)
    syn_x = init.data.x.clone().requires_grad_(True)
    before = objective(model_cfg, c, syn_x.detach(), syn_group, candidates, seed)
    opt = torch.optim.Adam([syn_x], lr=c.distill_lr)
    gen = torch.Generator().manual_seed(int(seed) * 7919 + stage)
    flops = 0
    for t in range(c.distill_iterations):
        real = _real_batch(candidates, syn_group, gen)
        embed = random_embedder(model_cfg, _iter_seed(seed * 1000 + stage, t), c.distill_embed)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            matching_loss(embed, syn_x, syn_group, candidates.data.x[real], candidates.groups[real],
                          c.distill_freq_weight).backward()

        if t == 0:
            flops = count_flops(step) * c.distill_iterations
        else:
            step()
        opt.step()
    out = syn_x.detach()
    after = objective(model_cfg, c, out, syn_group, candidates, seed)
    groups = torch.nn.functional.one_hot(syn_group, len(GROUPS)).bool()
    memory = Memory(ECGTensors(out, y, known), groups, torch.full((len(out),), stage, dtype=torch.long), synthetic=True)
    return DistillResult(memory, before, after, flops, c.distill_iterations)


def _real_batch(candidates: Memory, syn_group: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rows of up to REAL_BATCH real records per group that has synthetic records (their union)."""
    take = torch.zeros(len(candidates), dtype=torch.bool)
    for g in torch.unique(syn_group).tolist():
        rows = torch.nonzero(candidates.groups[:, g]).flatten()
        if len(rows) > REAL_BATCH:
            rows = rows[torch.randperm(len(rows), generator=gen)[:REAL_BATCH]]
        take[rows] = True
    return torch.nonzero(take).flatten()
