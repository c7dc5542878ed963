"""Gradient inversion: find records whose simulated update matches the observed one.

- DLG (Zhu et al. 2019): L2 distance between simulated and observed update, L-BFGS over the dummy
  records (and, with labels "joint", over dummy label logits).
- Inverting Gradients (Geiping et al. 2020): 1 - cosine similarity, Adam on the sign of the gradient,
  step decay, several restarts, box constraint, and 1-D signal priors (smoothness, periodicity,
  limb-lead consistency) instead of image total variation.
- Multi-step: Inverting Gradients' objective on the update of the client's unrolled local steps
  (`attacks.simulate.unrolled_update`) instead of one gradient.

Labels are "known" (given, e.g. read exactly by the label attack for one record, as in iDLG) or
"joint" (optimised as sigmoid(logits)). Every run is seeded; the restart with the lowest matching
residual wins (chosen without ground truth), and that residual is reported.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from attacks.priors import einthoven, periodicity, smoothness
from attacks.simulate import MatchProblem, one_step_update, unrolled_update


@dataclass(frozen=True)
class InversionConfig:
    method: str = "ig"  # "dlg" (L2, L-BFGS) or "ig" (cosine, Adam)
    n_records: int = 1
    iters: int = 200  # Adam steps (ig) or L-BFGS outer steps (dlg)
    inner: int = 20  # L-BFGS max_iter per outer step
    restarts: int = 1
    lr: float = 0.05  # Adam step in units of the value range
    unroll: bool = False  # multi-step: replay the client's local steps
    max_unroll_steps: int = 8
    labels: str = "joint"  # "joint" or "known"
    signed: bool = True  # Adam on sign(grad), as Inverting Gradients
    init: str = "random"  # "random" (uniform in range) or "prior" (population mean + noise) for restart 0
    tv_weight: float = 0.0
    period_weight: float = 0.0
    einthoven_weight: float = 0.0
    lags: tuple[int, int] | None = None  # heart-rate lags for the periodicity prior
    value_range: tuple[float, float] | None = None  # box constraint (ig) and random-init range
    bandlimit_hz: float | None = None  # optimise only frequencies below this (ECG content is band-limited)
    fs: float = 400.0  # sampling rate, for the band limit
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Reconstruction:
    x: np.ndarray  # (n, *input_shape)
    labels: np.ndarray  # (n, classes) 0/1
    residual: float  # of the chosen restart: relative L2 (dlg) or 1 - cosine (ig)
    restart_residuals: list[float]
    history: list[float] = field(default_factory=list)  # residual of the chosen restart over iterations
    steps_unrolled: int = 1
    seconds: float = 0.0


def match_residual(problem: MatchProblem, x: torch.Tensor, y: torch.Tensor, method: str, unroll: bool,
                   max_unroll_steps: int, create_graph: bool = True) -> tuple[torch.Tensor, int]:
    """(residual, steps unrolled): relative squared L2 for "dlg", 1 - cosine for "ig"."""
    if unroll:
        sim, steps = unrolled_update(problem, x, y, create_graph=create_graph, max_steps=max_unroll_steps)
    else:
        sim, steps = one_step_update(problem, x, y, create_graph=create_graph), 1
    s = torch.cat([sim[n].reshape(-1) for n in problem.observed])
    t = problem.target_vector().to(s.dtype)
    if method == "dlg":
        return ((s - t) ** 2).sum() / (t**2).sum().clamp_min(1e-30), steps
    return 1.0 - torch.nn.functional.cosine_similarity(s, t, dim=0, eps=1e-30), steps


def _init(cfg: InversionConfig, problem: MatchProblem, restart: int, prior_mean: np.ndarray | None,
          gen: torch.Generator) -> torch.Tensor:
    shape = (cfg.n_records, *problem.input_shape)
    lo, hi = cfg.value_range or (0.0, 1.0)
    if cfg.init == "prior" and restart == 0 and prior_mean is not None:
        base = torch.as_tensor(prior_mean, dtype=torch.float32).expand(shape)
        return (base + 0.05 * (hi - lo) * torch.randn(shape, generator=gen)).clamp(lo, hi).contiguous()
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


class Signal:
    """The optimisation variable: the samples themselves, or (band-limited) their low Fourier coefficients,
    so that the attack cannot fill the gradient's null space with high-frequency noise."""

    def __init__(self, x0: torch.Tensor, cfg: InversionConfig):
        self.length = x0.shape[1]
        self.keep = None
        if cfg.bandlimit_hz is not None and x0.dim() == 3:
            self.keep = max(2, min(self.length // 2 + 1, int(self.length * cfg.bandlimit_hz / cfg.fs) + 1))
            self.var = torch.view_as_real(torch.fft.rfft(x0, dim=1)[:, : self.keep].contiguous()).clone().requires_grad_(True)
        else:
            self.var = x0.clone().requires_grad_(True)

    def x(self) -> torch.Tensor:
        if self.keep is None:
            return self.var
        return torch.fft.irfft(torch.view_as_complex(self.var), n=self.length, dim=1)

    @torch.no_grad()
    def clamp_(self, lo: float, hi: float) -> None:
        if self.keep is None:
            self.var.clamp_(lo, hi)
        else:  # project on the box, then back on the band
            self.var.copy_(torch.view_as_real(torch.fft.rfft(self.x().clamp(lo, hi), dim=1)[:, : self.keep]))


def _priors(cfg: InversionConfig, x: torch.Tensor) -> torch.Tensor:
    total = x.new_zeros(())
    if cfg.tv_weight:
        total = total + cfg.tv_weight * smoothness(x)
    if cfg.period_weight and cfg.lags is not None:
        total = total + cfg.period_weight * periodicity(x, cfg.lags)
    if cfg.einthoven_weight:
        total = total + cfg.einthoven_weight * einthoven(x)
    return total


def invert(problem: MatchProblem, cfg: InversionConfig, known_labels: np.ndarray | None = None,
           prior_mean: np.ndarray | None = None) -> Reconstruction:
    """Run `cfg.restarts` seeded reconstructions and keep the one with the lowest matching residual."""
    start = time.perf_counter()
    if cfg.labels == "known" and known_labels is None:
        raise ValueError("labels='known' needs known_labels")
    best: Reconstruction | None = None
    residuals: list[float] = []
    for restart in range(cfg.restarts):
        gen = torch.Generator().manual_seed(cfg.seed * 1009 + restart)
        dtype = problem.dtype()
        sig = Signal(_init(cfg, problem, restart, prior_mean, gen).to(dtype), cfg)
        lab = torch.zeros(cfg.n_records, problem.n_classes, dtype=dtype, requires_grad=True)
        fixed = None if cfg.labels == "joint" else torch.as_tensor(np.asarray(known_labels), dtype=dtype)
        run = _lbfgs if cfg.method == "dlg" else _adam
        history, steps = run(problem, cfg, sig, lab, fixed)
        with torch.no_grad():
            y = fixed if fixed is not None else torch.sigmoid(lab)
            x = sig.x().detach().clone()
            if cfg.value_range is not None:  # the public value range: DLG has no box while optimising
                x.clamp_(*cfg.value_range)
        final, _ = match_residual(problem, x.detach(), y.detach(), cfg.method, cfg.unroll, cfg.max_unroll_steps,
                                  create_graph=False)
        res = float(final.detach())
        res = res if np.isfinite(res) else float("inf")
        residuals.append(res)
        if best is None or res < best.residual:
            labels = (y > 0.5).to(torch.int64).numpy()
            best = Reconstruction(x.detach().numpy().copy(), labels, res, [], history, steps)
    assert best is not None
    best.restart_residuals = residuals
    best.seconds = time.perf_counter() - start
    return best


def _adam(problem: MatchProblem, cfg: InversionConfig, sig: Signal, lab: torch.Tensor,
          fixed: torch.Tensor | None) -> tuple[list[float], int]:
    lo, hi = cfg.value_range or (-np.inf, np.inf)
    span = (hi - lo) if np.isfinite(hi - lo) else 1.0
    if sig.keep is not None:  # coefficient steps that move each sample by about lr * span (irfft divides by L)
        span = span * sig.length / (2.0 * np.sqrt(sig.keep))
    params = [sig.var] + ([lab] if fixed is None else [])
    opt = torch.optim.Adam([{"params": [sig.var], "lr": cfg.lr * span}] + ([{"params": [lab], "lr": 0.1}] if fixed is None else []))
    milestones = [int(cfg.iters * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    history: list[float] = []
    steps = 1
    for _ in range(cfg.iters):
        opt.zero_grad(set_to_none=True)
        y = fixed if fixed is not None else torch.sigmoid(lab)
        x = sig.x()
        res, steps = match_residual(problem, x, y, "ig", cfg.unroll, cfg.max_unroll_steps)
        (res + _priors(cfg, x)).backward()
        if cfg.signed:
            for p in params:
                if p.grad is not None:
                    p.grad.sign_()
        opt.step()
        sched.step()
        if np.isfinite(hi - lo):
            sig.clamp_(lo, hi)
        history.append(float(res.detach()))
    return history, steps


def _lbfgs(problem: MatchProblem, cfg: InversionConfig, sig: Signal, lab: torch.Tensor,
           fixed: torch.Tensor | None) -> tuple[list[float], int]:
    params = [sig.var] + ([lab] if fixed is None else [])
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=cfg.inner, history_size=50, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14)
    history: list[float] = []
    steps = [1]

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        y = fixed if fixed is not None else torch.sigmoid(lab)
        x = sig.x()
        res, steps[0] = match_residual(problem, x, y, "dlg", cfg.unroll, cfg.max_unroll_steps)
        total = res + _priors(cfg, x)
        total.backward()
        return total

    for _ in range(cfg.iters):
        loss = opt.step(closure)
        value = float(loss.detach()) if loss is not None else float("nan")
        history.append(value)
        if not np.isfinite(value):
            break
    return history, steps[0]
