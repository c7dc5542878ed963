"""Training plans: a plan is a list of phases, each naming the model parts that train.

Full training trains every part; µ-Training only the middle (optionally with future-guided
self-distillation); µ-Fine-Tuning only the encoder and decoder. Frozen parameters are left out of the
optimiser entirely, so they stay bitwise unchanged.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from simulator.core.device import model_device, seeded
from simulator.core.metrics import ClassificationMetrics, UndefinedMetricWarning, compute_metrics
from simulator.core.model import PARTS, TDSSM
from simulator.core.s4d import S4DConv
from simulator.core.tensors import ECGTensors
from simulator.errors import MuprivError

POSITIONS = ("start", "end", "both")


@dataclass(frozen=True)
class Phase:
    """One stage of a plan. `data` names the dataset the plan runner feeds it ("source" on the server,
    "personal" on a device); `self_distill` applies to phases that train only the middle."""

    name: str
    parts: tuple[str, ...]
    epochs: int
    data: str = "source"
    lr: float = 3e-3
    kernel_lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 32
    pos_weight: float = 6.0
    self_distill: bool = False
    alpha: float = 0.8

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise MuprivError(f"phase {self.name!r}: parts {list(self.parts)} invalid; choose from {list(PARTS)}")
        if self.epochs < 0 or self.batch_size < 1:
            raise MuprivError(f"phase {self.name!r}: epochs must be >= 0 and batch_size >= 1")
        if self.self_distill and set(self.parts) != {"middle"}:
            raise MuprivError(f"phase {self.name!r}: self-distillation trains the middle only; set parts = ['middle']")
        if not 0.0 <= self.alpha <= 1.0:
            raise MuprivError(f"phase {self.name!r}: alpha must be in [0, 1], got {self.alpha}")

    def to_dict(self) -> dict:
        return asdict(self)


def full_training(epochs: int, **kw) -> Phase:
    return Phase("full", PARTS, epochs, **kw)


def mu_training(epochs: int, self_distill: bool = True, **kw) -> Phase:
    return Phase("mu-train", ("middle",), epochs, self_distill=self_distill, **kw)


def mu_finetuning(epochs: int, data: str = "personal", **kw) -> Phase:
    return Phase("mu-ft", ("encoder", "decoder"), epochs, data=data, **kw)


def pretraining_plan(full_epochs: int, mu_epochs: int, position: str = "end", self_distill: bool = True, **kw) -> list[Phase]:
    """Full training with µ-Training placed at the start, the end, or split over both ends."""
    if position not in POSITIONS:
        raise MuprivError(f"µ-Training position {position!r} unknown; choose from {list(POSITIONS)}")
    mu = lambda n: mu_training(n, self_distill=self_distill, **kw)  # noqa: E731
    full = full_training(full_epochs, **kw)
    if position == "start":
        return [mu(mu_epochs), full]
    if position == "end":
        return [full, mu(mu_epochs)]
    first = mu_epochs // 2
    return [mu(first), full, mu(mu_epochs - first)]


# ---------------------------------------------------------------------------------------------- training


@dataclass
class EpochLog:
    phase: str
    epoch: int
    loss: float
    val_macro_auroc: float | None = None
    val_macro_f1: float | None = None


@dataclass
class PhaseResult:
    phase: Phase
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int | None = None  # 1-based; 0 = no epoch beat the starting model; None when the phase ran no epochs
    best_val_macro_auroc: float | None = None
    start_val_macro_auroc: float | None = None  # the model the phase started from, on the same validation records
    steps: int = 0


def set_trainable(model: TDSSM, parts: Sequence[str]) -> list[nn.Parameter]:
    """requires_grad on exactly the named parts; returns the trainable parameters. Masks are buffers and never train."""
    for name in PARTS:
        for p in model.part(name).parameters():
            p.requires_grad_(name in parts)
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(model: TDSSM, phase: Phase) -> torch.optim.AdamW:
    """AdamW over the trainable parameters only; the S4D kernel parameters get their own group (lr 1e-3, wd 0)."""
    kernel_ids = {id(getattr(m, n)) for m in model.modules() if isinstance(m, S4DConv) for n in S4DConv.KERNEL_PARAMS}
    trainable = [p for p in model.parameters() if p.requires_grad]
    kernel = [p for p in trainable if id(p) in kernel_ids]
    rest = [p for p in trainable if id(p) not in kernel_ids]
    groups = [{"params": rest, "lr": phase.lr, "weight_decay": phase.weight_decay}]
    if kernel:
        groups.append({"params": kernel, "lr": phase.kernel_lr, "weight_decay": 0.0})
    return torch.optim.AdamW(groups)


def masked_bce(logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor, pos_weight: float | None) -> torch.Tensor:
    """BCE-with-logits averaged over the known (record, class) entries only."""
    pw = None if pos_weight is None else torch.full((logits.shape[1],), float(pos_weight), dtype=logits.dtype, device=logits.device)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="none")
    known = known.to(logits.dtype)
    return (loss * known).sum() / known.sum().clamp_min(1.0)


@torch.no_grad()
def predict(model: nn.Module, data: ECGTensors, batch_size: int = 64) -> torch.Tensor:
    """Logits for every record (on the CPU, wherever the model is), always in eval() mode; the model's previous
    mode is restored."""
    was_training = model.training
    model.eval()
    dev = model_device(model)  # records stay on the CPU; each batch visits the model's device
    try:
        return torch.cat([model(data.x[i : i + batch_size].to(dev)) for i in range(0, len(data), batch_size)]).cpu()
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, data: ECGTensors, batch_size: int = 64, quiet: bool = True) -> ClassificationMetrics:
    logits = predict(model, data, batch_size)
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore", UndefinedMetricWarning)
        return compute_metrics(logits, data.y, data.known, logits=True)


class _LookAhead:
    """Future-guided self-distillation's teacher: the encoder + decoder one optimiser step ahead.

    Per batch: snapshot encoder + decoder, take one step on them, predict soft labels with that
    "future" model, restore the snapshot bitwise. Its AdamW state persists over the phase, so the
    look-ahead follows the trajectory the encoder + decoder would take if they kept training."""

    def __init__(self, model: TDSSM, phase: Phase):
        self.model = model
        self.phase = phase
        self.params = [p for name in ("encoder", "decoder") for p in model.part(name).parameters()]
        self.opt = torch.optim.AdamW(self.params, lr=phase.lr, weight_decay=phase.weight_decay)

    def soft_labels(self, x: torch.Tensor, y: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        snapshot = [p.detach().clone() for p in self.params]
        for p in self.params:
            p.requires_grad_(True)
        try:
            loss = masked_bce(self.model(x), y, known, self.phase.pos_weight)
            grads = torch.autograd.grad(loss, self.params)
            for p, g in zip(self.params, grads):
                p.grad = g
            self.opt.step()
            self.model.eval()
            with torch.no_grad():
                soft = torch.sigmoid(self.model(x))
        finally:
            self.model.train()
            with torch.no_grad():
                for p, s in zip(self.params, snapshot):
                    p.copy_(s)
                    p.grad = None
                    p.requires_grad_(False)
        return soft


class ProximalTerm:
    """FedProx's (mu / 2) * ||w - w_anchor||^2 over `params`, anchored at their values when it is made.

    A penalty for `train_phase`; a class rather than a closure so that a batched trainer
    (`simulator.core.stacked`) can see mu and the anchor and compute the term for many clients at once."""

    def __init__(self, mu: float, params: Sequence[nn.Parameter]):
        self.mu = float(mu)
        self.params = list(params)
        self.anchor = [p.detach().clone() for p in self.params]

    def __call__(self) -> torch.Tensor:
        return 0.5 * self.mu * sum(((p - a) ** 2).sum() for p, a in zip(self.params, self.anchor))


def train_phase(
    model: TDSSM,
    phase: Phase,
    train: ECGTensors,
    val: ECGTensors | None = None,
    seed: int = 0,
    on_epoch: Callable[[EpochLog], None] | None = None,
    on_batch: Callable[[int, int, float], None] | None = None,
    penalty: Callable[[], torch.Tensor] | None = None,
) -> PhaseResult:
    """Train the parts `phase` names. With `val`, the epoch with the best validation macro-AUROC is kept
    (ties: the earlier epoch), and the model the phase started from competes as epoch 0: a phase that makes
    the model worse on validation (µ-Training after a good full training can) leaves it as it came, with
    best_epoch 0. Without `val`, the last epoch is kept. The model is left in eval() mode.
    `penalty()` is added to every batch's loss (e.g. FedProx's proximal term)."""
    train.check_for_model(model.cfg.n_leads, None, model.cfg.n_classes, name=f"phase {phase.name!r} training data")
    if val is not None:
        val.check_for_model(model.cfg.n_leads, None, model.cfg.n_classes, name=f"phase {phase.name!r} validation data")
    result = PhaseResult(phase)
    trainable = set_trainable(model, phase.parts)
    if phase.epochs == 0:
        model.eval()
        return result
    opt = make_optimizer(model, phase)
    n_batches = math.ceil(len(train) / phase.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, phase.epochs * n_batches))
    lookahead = _LookAhead(model, phase) if phase.self_distill else None
    best_state, best_score = None, -math.inf
    if val is not None:
        start = result.start_val_macro_auroc = evaluate(model, val).macro_auroc
        if not math.isnan(start):
            best_score, best_state, result.best_epoch = start, _trainable_state(trainable), 0

    # A private RNG stream per phase: same seed, same numbers, and the caller's RNG is left alone. The record
    # order comes from a CPU generator on every device; dropout's from the model's device (simulator.core.device).
    dev = model_device(model)
    with seeded(seed, dev):
        order_rng = torch.Generator().manual_seed(seed)
        for epoch in range(1, phase.epochs + 1):
            model.train()
            order = torch.randperm(len(train), generator=order_rng)
            total, count = 0.0, 0
            for b in range(n_batches):
                idx = order[b * phase.batch_size : (b + 1) * phase.batch_size]
                x, y, known = train.x[idx].to(dev), train.y[idx].to(dev), train.known[idx].to(dev)
                soft = lookahead.soft_labels(x, y, known) if lookahead else None
                logits = model(x)
                loss = masked_bce(logits, y, known, phase.pos_weight)
                if soft is not None:
                    loss = (1 - phase.alpha) * loss + phase.alpha * masked_bce(logits, soft, known, None)
                if penalty is not None:
                    loss = loss + penalty()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                result.steps += 1
                batch_loss = float(loss.detach())
                if not math.isfinite(batch_loss):  # every later number would be NaN: stop with the fix instead
                    raise MuprivError(f"phase {phase.name!r} diverged in epoch {epoch} (training loss {batch_loss}): "
                                      f"lower its learning rate (train.lr when pretraining, finetune.lr on a device)")
                total += batch_loss * len(idx)
                count += len(idx)
                if on_batch:
                    on_batch(epoch, b + 1, float(loss))
            log = EpochLog(phase.name, epoch, total / count)
            if val is not None:
                m = evaluate(model, val)
                log.val_macro_auroc, log.val_macro_f1 = m.macro_auroc, m.macro_f1
                score = -math.inf if math.isnan(m.macro_auroc) else m.macro_auroc
                if score > best_score or best_state is None:
                    best_score, best_state, result.best_epoch = score, _trainable_state(trainable), epoch
            result.history.append(log)
            if on_epoch:
                on_epoch(log)
    if best_state is not None:
        _restore_trainable(trainable, best_state)
        result.best_val_macro_auroc = None if best_score == -math.inf else best_score
    else:
        result.best_epoch = phase.epochs
    model.eval()
    return result


def train_plan(
    model: TDSSM,
    plan: Sequence[Phase],
    datasets: dict[str, ECGTensors],
    val: dict[str, ECGTensors] | None = None,
    seed: int = 0,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> list[PhaseResult]:
    """Run the phases in order; phase i feeds on datasets[phase.data] and validates on val[phase.data]."""
    results = []
    for i, phase in enumerate(plan):
        if phase.data not in datasets:
            raise MuprivError(f"phase {phase.name!r} wants dataset {phase.data!r}; available: {sorted(datasets)}")
        v = (val or {}).get(phase.data)
        results.append(train_phase(model, phase, datasets[phase.data], v, seed=seed * 1000 + i, on_epoch=on_epoch))
    return results


def _trainable_state(trainable: list[nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainable]


def _restore_trainable(trainable: list[nn.Parameter], state: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, s in zip(trainable, state):
            p.copy_(s)
