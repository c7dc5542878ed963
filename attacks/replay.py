"""The attacker's differentiable replay of a client's local training (named replay, not simulate: it has nothing to do
with `mupriv simulate`).

Given dummy records (x, y), `simulate_update` returns the update the client would have sent from the
round's global parameters, as a function of (x, y) that autograd can differentiate. Two views:

- one-step (the FedSGD view used by DLG and Inverting Gradients): all local training is one gradient
  step on all records at the summed learning rate, Δ = -Σ_t lr_t (∇L + wd·p). Exact for one SGD step.
- unrolled (the multi-step attack, and DLG / Inverting Gradients at budgets with `unroll`): the client's S
  local steps replayed with the granted optimiser (SGD with optional momentum, or AdamW with the project's
  cosine schedule and kernel-lr group), the dummies dealt into the client's batches in a fixed order (the
  real order is private). With one dummy per record behind the update the batches have the client's own
  sizes; with fewer dummies each batch gets the dummies covering the same share of the epoch.

For a SecAgg sum of K clients the dummies are split into K groups, each group's local training is
simulated from the same global parameters and the K updates are averaged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from attacks.model import LossFn
from attacks.observe import LocalTraining


@dataclass
class MatchProblem:
    """What gradient matching needs: the model, where local training started, what was observed."""

    model: nn.Module  # the public architecture (eval mode)
    base: dict[str, torch.Tensor]  # every parameter at the start of local training
    observed: tuple[str, ...]  # names of the parameters whose update was observed
    target: dict[str, torch.Tensor]  # the observed update (mean over clients for an aggregate)
    training: LocalTraining
    loss_fn: LossFn
    input_shape: tuple[int, ...]  # one record, e.g. (length, leads)
    n_classes: int
    n_examples: int  # records behind the update (all clients together for an aggregate)
    n_clients: int = 1
    local_steps: int | None = None  # as the client reported (else derived from epochs and batch size)
    kernel_names: set[str] = field(default_factory=set)  # parameters trained at kernel_lr

    def per_client_examples(self) -> int:
        return max(1, self.n_examples // max(1, self.n_clients))

    def steps(self) -> int:
        """Local steps of one client: as reported, else from its epochs, records and batch size."""
        return int(self.local_steps) if self.local_steps else self.training.steps(self.per_client_examples())

    def dtype(self) -> torch.dtype:
        return next(iter(self.base.values())).dtype

    def device(self) -> torch.device:
        return next(iter(self.base.values())).device

    def to(self, dtype: torch.dtype | None = None, device: torch.device | None = None) -> "MatchProblem":
        """The same problem computed in another precision (float64: matching to residuals below float32's eps)
        and/or on another device (a GPU); on the CPU in the same precision nothing is copied."""
        self.model = self.model.to(device=device, dtype=dtype)
        self.base = {n: p.to(device=device, dtype=dtype) for n, p in self.base.items()}
        self.target = {n: t.to(device=device, dtype=dtype) for n, t in self.target.items()}
        return self

    def target_vector(self) -> torch.Tensor:
        return torch.cat([self.target[n].reshape(-1) for n in self.observed])


def lr_at(training: LocalTraining, lr: float, t: int, total: int) -> float:
    """The learning rate of step t (0-based) under the granted schedule (torch's CosineAnnealingLR, eta_min 0)."""
    if training.schedule == "cosine" and total > 1:
        return lr * (1.0 + math.cos(math.pi * t / total)) / 2.0
    return lr


def _lr_for(problem: MatchProblem, name: str) -> float:
    tr = problem.training
    return tr.kernel_lr if (tr.kernel_lr is not None and name in problem.kernel_names) else tr.lr


def _wd_for(problem: MatchProblem, name: str) -> float:
    # The project's AdamW puts the S4D kernel parameters in a group without weight decay.
    return 0.0 if name in problem.kernel_names and problem.training.optimizer == "adamw" else problem.training.weight_decay


def _groups(n: int, k: int) -> list[torch.Tensor]:
    k = max(1, min(k, n))
    return [idx for idx in torch.arange(n).tensor_split(k) if len(idx)]


def _grad(problem: MatchProblem, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
          create_graph: bool) -> dict[str, torch.Tensor]:
    loss = problem.loss_fn(functional_call(problem.model, params, (x,)), y)
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(params[n])) for n, g in zip(names, grads)}


def _leaf_params(problem: MatchProblem) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().requires_grad_(True) for n, p in problem.base.items()}


def one_step_update(problem: MatchProblem, x: torch.Tensor, y: torch.Tensor, create_graph: bool = True) -> dict[str, torch.Tensor]:
    """Δ = -Σ_t lr_t (∇L(x, y) + wd·p) for the observed parameters (mean over client groups)."""
    steps = problem.steps()
    out = {n: torch.zeros_like(problem.base[n]) for n in problem.observed}
    groups = _groups(x.shape[0], problem.n_clients)
    for idx in groups:
        params = _leaf_params(problem)
        g = _grad(problem, params, x[idx], y[idx], create_graph)
        for n in problem.observed:
            lr_sum = sum(lr_at(problem.training, _lr_for(problem, n), t, steps) for t in range(steps))
            out[n] = out[n] - lr_sum * (g[n] + _wd_for(problem, n) * problem.base[n]) / len(groups)
    return out


def _batches(n: int, n_examples: int, batch_size: int) -> list[torch.Tensor]:
    """The client's batches of one epoch, mapped onto n dummies: batch k of the epoch gets the dummies
    covering the same records of the epoch (at least one). With one dummy per record (n == n_examples)
    these are the client's own batch sizes, a short last batch included."""
    n_examples = max(1, n_examples)
    nb = max(1, math.ceil(n_examples / batch_size))
    out = []
    for k in range(nb):
        lo = (k * batch_size * n) // n_examples
        hi = (min(n_examples, (k + 1) * batch_size) * n) // n_examples
        out.append(torch.arange(lo, max(hi, lo + 1)) % n)
    return out


def unrolled_update(problem: MatchProblem, x: torch.Tensor, y: torch.Tensor, create_graph: bool = True,
                    max_steps: int | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """Replay the client's local steps with the granted optimiser; returns (Δ for the observed parameters,
    steps unrolled). With max_steps < the client's steps, only the first max_steps steps are replayed and
    the remaining learning rate is folded into the last one (SGD) or dropped (AdamW)."""
    tr = problem.training
    total = problem.steps()
    run = total if max_steps is None else max(1, min(total, max_steps))
    groups = _groups(x.shape[0], problem.n_clients)
    out = {n: torch.zeros_like(problem.base[n]) for n in problem.observed}
    for idx in groups:
        xg, yg = x[idx], y[idx]
        batches = _batches(len(idx), problem.per_client_examples(), tr.batch_size)
        params = _leaf_params(problem)
        state: dict[str, dict[str, torch.Tensor]] = {n: {} for n in params}
        for t in range(run):
            b = batches[t % len(batches)]
            g = _grad(problem, params, xg[b], yg[b], create_graph)
            new = {}
            for n, p in params.items():
                lr = lr_at(tr, _lr_for(problem, n), t, total)
                if t == run - 1 and run < total and tr.optimizer == "sgd":
                    lr = sum(lr_at(tr, _lr_for(problem, n), s, total) for s in range(t, total))
                gn = g[n]
                if tr.prox_mu:
                    gn = gn + tr.prox_mu * (p - problem.base[n])
                new[n] = _step(tr, p, gn, state[n], lr, _wd_for(problem, n), t + 1)
            params = new
        for n in problem.observed:
            out[n] = out[n] + (params[n] - problem.base[n]) / len(groups)
    return out, run


def _step(tr: LocalTraining, p: torch.Tensor, g: torch.Tensor, st: dict[str, torch.Tensor], lr: float, wd: float,
          t: int) -> torch.Tensor:
    """One optimiser step written out (torch's SGD / AdamW update rules), differentiable in g."""
    if tr.optimizer == "sgd":
        if wd:
            g = g + wd * p
        if tr.momentum:
            buf = g if "buf" not in st else tr.momentum * st["buf"] + g
            st["buf"] = buf
            g = buf
        return p - lr * g
    b1, b2, eps = 0.9, 0.999, 1e-8
    p = p * (1.0 - lr * wd)
    m = (1 - b1) * g if "m" not in st else b1 * st["m"] + (1 - b1) * g
    v = (1 - b2) * g * g if "v" not in st else b2 * st["v"] + (1 - b2) * g * g
    st["m"], st["v"] = m, v
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    # +1e-30 inside the root: masked weights have g == 0 exactly, where sqrt's derivative is infinite.
    return p - lr * m_hat / (torch.sqrt(v_hat + 1e-30) + eps)
