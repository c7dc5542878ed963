"""Gradient inversion: find records whose simulated update matches the observed one.

- DLG (Zhu et al. 2019): L2 distance between simulated and observed update, L-BFGS (strong Wolfe) over the
  dummy records (and, with labels "joint", over dummy label logits).
- Inverting Gradients (Geiping et al. 2020): 1 - cosine similarity, Gaussian initialisation around the
  prior, Adam on the sign of the gradient with steps in units of the prior's standard deviation, step
  decay, several restarts, box constraint, and 1-D priors in place of image total variation (total
  variation along time, the prior's power spectrum, periodicity, limb-lead consistency).
- Multi-step: Inverting Gradients' objective on the update of the client's unrolled local steps
  (`attacks.replay.unrolled_update`) instead of one gradient.

Every run stops on convergence (the best objective improved by less than `tol`, relative, over the last
`window` checks), on its iteration cap or on its time cap, whichever comes first, and says which. Labels
are "known" (given, e.g. read exactly by the label attack for one record, as in iDLG) or "joint"
(optimised as sigmoid(logits)). Every run is seeded; the restart with the lowest matching residual wins
(chosen without ground truth), and that residual is reported.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from attacks.priors import einthoven, periodicity
from attacks.replay import MatchProblem, one_step_update, unrolled_update

# Stop reasons (Reconstruction.stop_reason).
CONVERGED = "converged"
ITERATION_CAP = "iteration cap"
TIME_CAP = "time cap"
NOT_FINITE = "not finite"

# torch's L-BFGS skips curvature pairs with y.s <= 1e-10 and compares losses with absolute tolerances, so
# on a residual of 1e-8 it silently degrades to gradient descent and stalls. DLG therefore divides its
# objective by a reference value and starts a fresh L-BFGS (new reference) whenever the objective has
# fallen by this factor since the last one.
RESCALE_FACTOR = 1e-3


@dataclass(frozen=True)
class InversionConfig:
    method: str = "ig"  # "dlg" (L2, L-BFGS) or "ig" (cosine, signed Adam)
    n_records: int = 1
    iters: int = 200  # iteration cap: Adam steps (ig) or L-BFGS outer steps of up to `inner` iterations (dlg)
    inner: int = 20  # L-BFGS iterations per outer step (one convergence check per outer step)
    restarts: int = 1
    lr: float = 0.1  # ig: Adam step in units of the prior's standard deviation
    tol: float = 1e-3  # converged: the best objective fell by less than tol (relative) over `window` checks
    window: int = 50  # checks: Adam steps (ig) or L-BFGS outer steps (dlg)
    max_seconds: float | None = None  # time cap for all restarts together; None: iteration cap only
    decays: int = 3  # ig: plateaus answered by a step decay (x0.1) before the run counts as converged
    stages_hz: tuple[float, ...] = ()  # ig: coarse to fine, first only the frequencies below each of these
    unroll: bool = False  # replay the client's local steps instead of the one-step (FedSGD) view
    max_unroll_steps: int = 8
    labels: str = "joint"  # "joint" or "known"
    signed: bool = True  # Adam on sign(grad), as Inverting Gradients
    init: str = "prior"  # "prior": restart 0 at the prior mean, the others Gaussian around it; "gaussian": all
    init_scale: float = 1.0  # sd of the Gaussian initialisation, in units of the prior's sd
    basis: str = "fourier"  # optimisation variable: "samples", "fourier" (band-limited) or "whitened" (prior spectrum)
    per_tensor: bool = True  # optimise the mean over observed tensors of each one's relative misfit
    tv_weight: float = 0.0  # ig: 1-D total variation (mean |first difference| / prior sd)
    spectral_weight: float = 0.0  # ig: Gaussian prior with the public records' power spectrum
    period_weight: float = 0.0
    einthoven_weight: float = 0.0
    lags: tuple[int, int] | None = None  # heart-rate lags for the periodicity prior
    value_range: tuple[float, float] | None = None  # box constraint (ig) and the final clamp
    bandlimit_hz: float | None = None  # optimise only frequencies below this (ECG content is band-limited)
    fs: float = 400.0  # sampling rate, for the band limit
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Reconstruction:
    x: np.ndarray  # (n, *input_shape)
    labels: np.ndarray  # (n, classes) 0/1
    residual: float  # of the chosen restart: relative squared L2 (dlg) or 1 - cosine (ig) of the whole update
    restart_residuals: list[float]
    history: list[float] = field(default_factory=list)  # best objective of the chosen restart per check
    steps_unrolled: int = 1
    seconds: float = 0.0
    converged: bool = False  # the chosen restart stopped on the convergence criterion
    iterations: int = 0  # of the chosen restart: Adam steps (ig) or L-BFGS iterations (dlg)
    evaluations: int = 0  # objective evaluations, all restarts
    stop_reason: str = ""  # of the chosen restart
    restart_stops: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ prior and signal
@dataclass
class PriorStats:
    """What the public prior says about one record: its mean, its spread and its spectrum."""

    mean: torch.Tensor  # input_shape
    sd: float  # of a public record around the mean, pooled over samples and leads
    amplitude: torch.Tensor | None  # (L // 2 + 1, leads): rms of a coefficient's real (= imaginary) part


def prior_stats(input_shape: tuple[int, ...], value_range: tuple[float, float] | None, prior_mean: np.ndarray | None,
                prior_samples: np.ndarray | None, dtype: torch.dtype, device: torch.device | None = None) -> PriorStats:
    """The prior's statistics (computed on the CPU, then moved to `device`); without public records: the middle of
    the value range and a quarter of its span."""
    lo, hi = value_range if value_range else (None, None)
    if prior_mean is not None:
        mean = torch.as_tensor(np.asarray(prior_mean), dtype=dtype).reshape(input_shape)
    elif prior_samples is not None:
        mean = torch.as_tensor(np.asarray(prior_samples), dtype=dtype).mean(0)
    else:
        mean = torch.full(input_shape, 0.0 if lo is None else (lo + hi) / 2, dtype=dtype)
    if prior_samples is None or len(prior_samples) < 2:
        sd = 1.0 if lo is None else (hi - lo) / 4
        return PriorStats(mean.to(device), sd, None)
    dev = torch.as_tensor(np.asarray(prior_samples), dtype=dtype) - mean
    sd = float(dev.pow(2).mean().sqrt().clamp_min(1e-12))
    amplitude = None
    if dev.dim() == 3:
        power = torch.fft.rfft(dev, dim=1).abs().pow(2).mean(0) / 2  # E|c|^2 = 2 a^2 for c = a (u + i v)
        amplitude = power.sqrt().clamp_min(1e-6 * float(power.max().sqrt()))
    return PriorStats(mean.to(device), sd, None if amplitude is None else amplitude.to(device))


def band_size(length: int, bandlimit_hz: float | None, fs: float) -> int:
    """rfft coefficients kept below the band limit (all of them without one)."""
    if bandlimit_hz is None:
        return length // 2 + 1
    return max(2, min(length // 2 + 1, int(length * bandlimit_hz / fs) + 1))


class Signal:
    """The optimisation variable z, in units of the prior's standard deviation: x = mean + B z.

    "samples": B = sd (every sample free). "fourier": z are the record's rfft coefficients below the band
    limit, scaled so that z ~ N(0, 1) is white noise at the prior's sd restricted to the band. "whitened":
    the same coefficients scaled by the public records' amplitude per frequency and lead, so z ~ N(0, 1)
    is Gaussian noise with the prior's power spectrum and a unit step moves every frequency by one prior sd.
    The band limit keeps the attack from filling the gradient's weakly determined high frequencies with noise.
    """

    def __init__(self, z0: torch.Tensor, basis: str, stats: PriorStats, keep: int):
        self.basis, self.stats, self.keep = basis, stats, keep
        self.length = stats.mean.shape[0]
        self.scale = self._scale()
        self.var = z0.clone().requires_grad_(True)

    def _scale(self) -> torch.Tensor | float:
        if self.basis == "samples":
            return self.stats.sd
        if self.basis == "whitened" and self.stats.amplitude is not None:
            return self.stats.amplitude[: self.keep]
        return self.stats.sd * math.sqrt(self.length / 2)  # irfft divides by L: white noise at sd

    @staticmethod
    def shape(basis: str, n: int, input_shape: tuple[int, ...], keep: int) -> tuple[int, ...]:
        return (n, *input_shape) if basis == "samples" else (n, keep, *input_shape[1:], 2)

    def x(self) -> torch.Tensor:
        if self.basis == "samples":
            return self.stats.mean + self.scale * self.var
        coef = torch.view_as_complex(self.var) * self.scale
        return self.stats.mean + torch.fft.irfft(coef, n=self.length, dim=1)

    def z_of(self, x: torch.Tensor) -> torch.Tensor:
        """The variable that represents x (its band-limited part)."""
        if self.basis == "samples":
            return (x - self.stats.mean) / self.scale
        coef = torch.fft.rfft(x - self.stats.mean, dim=1)[:, : self.keep] / self.scale
        return torch.view_as_real(coef.contiguous())

    @torch.no_grad()
    def project_(self, lo: float, hi: float) -> None:
        """Onto the box, then back onto the band."""
        self.var.copy_(self.z_of(self.x().clamp(lo, hi)))


def choose_basis(cfg: InversionConfig, input_shape: tuple[int, ...]) -> str:
    """Fourier bases need (time, leads) records; anything else is optimised sample by sample."""
    return cfg.basis if len(input_shape) == 2 else "samples"


def _init(cfg: InversionConfig, shape: tuple[int, ...], restart: int, gen: torch.Generator,
          dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """Gaussian around the prior mean (z = 0), in prior sds; restart 0 at the mean itself with init "prior".
    Drawn from the CPU generator `gen` and then moved, so a restart starts at the same point on every device."""
    if cfg.init == "prior" and restart == 0:
        return torch.zeros(shape, dtype=dtype, device=device)
    return (cfg.init_scale * torch.randn(shape, generator=gen)).to(dtype=dtype, device=device)


# ------------------------------------------------------------------------------------------ objective
def _cos_misfit(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 1.0 - torch.nn.functional.cosine_similarity(s, t, dim=0, eps=1e-30)


def _l2_misfit(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return ((s - t) ** 2).sum() / (t**2).sum().clamp_min(1e-30)


class Objective:
    """The simulated update of dummy records and its misfit to the observed one.

    `loss` is what the optimiser minimises: with per_tensor, the mean over observed tensors of each one's
    relative misfit, so that small tensors that carry the input directly (the encoder's weights) weigh as
    much as large ones; this conditions the problem better and has the same minimum. `residual` is the
    reported, whole-update misfit: relative squared L2 (dlg) or 1 - cosine (ig)."""

    def __init__(self, problem: MatchProblem, method: str, per_tensor: bool, unroll: bool, max_unroll_steps: int):
        self.problem, self.unroll, self.max_unroll_steps = problem, unroll, max_unroll_steps
        self.misfit = _l2_misfit if method == "dlg" else _cos_misfit
        self.per_tensor = per_tensor
        self.names = [n for n in problem.observed if float(problem.target[n].abs().sum()) > 0] or list(problem.observed)
        self.evaluations = 0
        self.steps = 1

    def simulate(self, x: torch.Tensor, y: torch.Tensor, create_graph: bool) -> dict[str, torch.Tensor]:
        self.evaluations += 1
        if self.unroll:
            sim, self.steps = unrolled_update(self.problem, x, y, create_graph=create_graph,
                                              max_steps=self.max_unroll_steps)
            return sim
        return one_step_update(self.problem, x, y, create_graph=create_graph)

    def _target(self, name: str, like: torch.Tensor) -> torch.Tensor:
        return self.problem.target[name].to(like.dtype)

    def loss(self, sim: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.per_tensor:
            return self.residual(sim)
        terms = [self.misfit(sim[n].reshape(-1), self._target(n, sim[n]).reshape(-1)) for n in self.names]
        return torch.stack(terms).mean()

    def residual(self, sim: dict[str, torch.Tensor]) -> torch.Tensor:
        s = torch.cat([sim[n].reshape(-1) for n in self.problem.observed])
        return self.misfit(s, self.problem.target_vector().to(s.dtype))


def match_residual(problem: MatchProblem, x: torch.Tensor, y: torch.Tensor, method: str, unroll: bool,
                   max_unroll_steps: int, create_graph: bool = True) -> tuple[torch.Tensor, int]:
    """(residual, steps unrolled): relative squared L2 for "dlg", 1 - cosine for "ig", of the whole update."""
    obj = Objective(problem, method, False, unroll, max_unroll_steps)
    return obj.residual(obj.simulate(x, y, create_graph)), obj.steps


def _total_variation(x: torch.Tensor, sd: float) -> torch.Tensor:
    """1-D total variation along time, in prior sds (Geiping et al.'s image TV, for a (n, L, leads) record)."""
    return (x[:, 1:] - x[:, :-1]).abs().mean() / sd


def _spectral(x: torch.Tensor, stats: PriorStats, keep: int) -> torch.Tensor:
    """Gaussian negative log-prior (per coefficient) under the public records' power spectrum."""
    coef = torch.fft.rfft(x - stats.mean, dim=1)[:, :keep] / stats.amplitude[:keep]  # type: ignore[index]
    return torch.view_as_real(coef.contiguous()).pow(2).mean() / 2


def _priors(cfg: InversionConfig, x: torch.Tensor, stats: PriorStats, keep: int) -> torch.Tensor:
    total = x.new_zeros(())
    if x.dim() != 3:
        return total
    if cfg.tv_weight:
        total = total + cfg.tv_weight * _total_variation(x, stats.sd)
    if cfg.spectral_weight and stats.amplitude is not None:
        total = total + cfg.spectral_weight * _spectral(x, stats, keep)
    if cfg.period_weight and cfg.lags is not None:
        total = total + cfg.period_weight * periodicity(x, cfg.lags)
    if cfg.einthoven_weight:
        total = total + cfg.einthoven_weight * einthoven(x)
    return total


# ------------------------------------------------------------------------------------------ stopping
class Stopper:
    """Convergence, iteration cap and time cap, whichever comes first.

    `update(value)` records one check (an Adam step or an L-BFGS outer step) and returns a stop reason or "".
    Converged: the best value so far fell by less than tol (relative) over the last `window` checks."""

    def __init__(self, tol: float, window: int, max_checks: int, deadline: float):
        self.tol, self.window, self.max_checks, self.deadline = tol, max(1, window), max(1, max_checks), deadline
        self.best: list[float] = []
        self.anchor = 0  # the window counts checks from here (moved on after a step decay)

    def update(self, value: float) -> str:
        if not math.isfinite(value):
            return NOT_FINITE
        self.best.append(min(value, self.best[-1]) if self.best else value)
        if len(self.best) - self.anchor > self.window:
            old = self.best[-1 - self.window]
            if old - self.best[-1] <= self.tol * old:
                return CONVERGED
        if len(self.best) >= self.max_checks:
            return ITERATION_CAP
        if time.perf_counter() >= self.deadline:
            return TIME_CAP
        return ""

    def restart_window(self) -> None:
        self.anchor = len(self.best)

    def out_of_time(self) -> bool:
        return time.perf_counter() >= self.deadline


class _OutOfTime(Exception):
    """Raised inside an L-BFGS closure when the time cap passes mid-step."""


@dataclass
class _Run:
    stop_reason: str
    iterations: int
    history: list[float]


# ------------------------------------------------------------------------------------------ invert
def invert(problem: MatchProblem, cfg: InversionConfig, known_labels: np.ndarray | None = None,
           prior_mean: np.ndarray | None = None, prior_samples: np.ndarray | None = None) -> Reconstruction:
    """Run `cfg.restarts` seeded reconstructions and keep the one with the lowest matching residual."""
    start = time.perf_counter()
    if cfg.labels == "known" and known_labels is None:
        raise ValueError("labels='known' needs known_labels")
    dtype, device = problem.dtype(), problem.device()
    stats = prior_stats(problem.input_shape, cfg.value_range, prior_mean, prior_samples, dtype, device)
    basis = choose_basis(cfg, problem.input_shape)
    keep = band_size(problem.input_shape[0], cfg.bandlimit_hz, cfg.fs)
    obj = Objective(problem, cfg.method, cfg.per_tensor, cfg.unroll, cfg.max_unroll_steps)
    fixed = None if cfg.labels == "joint" else torch.as_tensor(np.asarray(known_labels), dtype=dtype, device=device)
    best: Reconstruction | None = None
    residuals: list[float] = []
    stops: list[str] = []
    for restart in range(cfg.restarts):
        gen = torch.Generator().manual_seed(cfg.seed * 1009 + restart)
        shape = Signal.shape(basis, cfg.n_records, problem.input_shape, keep)
        sig = Signal(_init(cfg, shape, restart, gen, dtype, device), basis, stats, keep)
        lab = torch.zeros(cfg.n_records, problem.n_classes, dtype=dtype, device=device, requires_grad=True)
        stopper = Stopper(cfg.tol, cfg.window, cfg.iters, _restart_deadline(cfg, start, restart))
        run = (_lbfgs if cfg.method == "dlg" else _adam)(obj, cfg, sig, lab, fixed, stats, stopper)
        with torch.no_grad():
            y = fixed if fixed is not None else torch.sigmoid(lab)
            x = sig.x().detach().clone()
            if cfg.value_range is not None:  # the public value range: DLG has no box while optimising
                x.clamp_(*cfg.value_range)
        res = float(obj.residual(obj.simulate(x, y.detach(), False)).detach())
        res = res if np.isfinite(res) else float("inf")
        residuals.append(res)
        stops.append(run.stop_reason)
        if best is None or res < best.residual:
            labels = (y > 0.5).to(torch.int64).cpu().numpy()
            best = Reconstruction(x.cpu().numpy().copy(), labels, res, [], run.history, obj.steps,
                                  converged=run.stop_reason == CONVERGED, iterations=run.iterations,
                                  stop_reason=run.stop_reason)
    assert best is not None
    best.restart_residuals, best.restart_stops, best.evaluations = residuals, stops, obj.evaluations
    best.seconds = time.perf_counter() - start
    return best


def _restart_deadline(cfg: InversionConfig, start: float, restart: int) -> float:
    """The time left, shared evenly among the restarts still to run."""
    if cfg.max_seconds is None:
        return math.inf
    left = start + cfg.max_seconds - time.perf_counter()
    return time.perf_counter() + max(0.0, left) / (cfg.restarts - restart)


def _labels(lab: torch.Tensor, fixed: torch.Tensor | None) -> torch.Tensor:
    return fixed if fixed is not None else torch.sigmoid(lab)


def _adam(obj: Objective, cfg: InversionConfig, sig: Signal, lab: torch.Tensor, fixed: torch.Tensor | None,
          stats: PriorStats, stop: Stopper) -> _Run:
    """Signed Adam on the cosine objective + priors, steps in prior sds, coarse to fine over `stages_hz`."""
    reason, iterations = "", 0
    for keep in _stage_bands(cfg, sig):
        reason, n = _adam_stage(obj, cfg, sig, lab, fixed, stats, stop, keep)
        iterations += n
        if reason != CONVERGED:
            break
    return _Run(reason, iterations, stop.best)


def _stage_bands(cfg: InversionConfig, sig: Signal) -> list[int]:
    """Coefficients free in each stage: the lower bands first, the whole band last (samples: one stage)."""
    if sig.basis == "samples":
        return [0]
    bands = [band_size(sig.length, hz, cfg.fs) for hz in cfg.stages_hz]
    return sorted({k for k in bands if k < sig.keep}) + [sig.keep]


def _adam_stage(obj: Objective, cfg: InversionConfig, sig: Signal, lab: torch.Tensor, fixed: torch.Tensor | None,
                stats: PriorStats, stop: Stopper, keep: int) -> tuple[str, int]:
    """One stage: only coefficients below `keep` move. A plateau (the convergence criterion) decays the step
    x0.1 up to `decays` times (Geiping et al. decay at fixed fractions of a fixed iteration count; under a
    time cap the plateau is the trigger that adapts), and the next plateau ends the stage.

    Signed steps move every free coordinate by about the step size whatever its gradient, so directions the
    update hardly constrains drift in proportion to the distance travelled: the coarse stages travel most of
    the way in the well-determined low band, and the fine ones only a short distance."""
    lo, hi = cfg.value_range or (-math.inf, math.inf)
    params = [sig.var] + ([lab] if fixed is None else [])
    groups = [{"params": [sig.var], "lr": cfg.lr}] + ([{"params": [lab], "lr": 0.1}] if fixed is None else [])
    opt = torch.optim.Adam(groups)
    mask = None
    if keep not in (0, sig.keep):  # (keep, leads, re/im) broadcast over records
        mask = (torch.arange(sig.keep, device=sig.var.device) < keep).to(sig.var.dtype).reshape(
            -1, *[1] * (sig.var.dim() - 2))
    if mask is not None:  # the higher band waits at the prior mean
        with torch.no_grad():
            sig.var.mul_(mask)
    decays_left = cfg.decays
    stop.restart_window()
    reason, iterations = "", 0
    while not reason:
        opt.zero_grad(set_to_none=True)
        x = sig.x()
        loss = obj.loss(obj.simulate(x, _labels(lab, fixed), True))
        (loss + _priors(cfg, x, stats, sig.keep)).backward()
        if cfg.signed:
            for p in params:
                if p.grad is not None:
                    p.grad.sign_()
        if mask is not None and sig.var.grad is not None:
            sig.var.grad.mul_(mask)
        opt.step()
        iterations += 1
        if math.isfinite(hi - lo):
            sig.project_(lo, hi)
            if mask is not None:  # the box projection must not bring back the higher band
                with torch.no_grad():
                    sig.var.mul_(mask)
        reason = stop.update(float(loss.detach()))
        if reason == CONVERGED and decays_left > 0:
            decays_left -= 1
            for g in opt.param_groups:
                g["lr"] *= 0.1
            stop.restart_window()
            reason = TIME_CAP if stop.out_of_time() else ""
    return reason, iterations


def _lbfgs(obj: Objective, cfg: InversionConfig, sig: Signal, lab: torch.Tensor, fixed: torch.Tensor | None,
           stats: PriorStats, stop: Stopper) -> _Run:
    """L-BFGS (strong Wolfe) on the L2 objective, rescaled and restarted as it falls (RESCALE_FACTOR); ends at
    the best point it evaluated."""
    params = [sig.var] + ([lab] if fixed is None else [])
    best: dict[str, object] = {"value": math.inf, "params": [p.detach().clone() for p in params]}
    ref = [1.0]

    def closure() -> torch.Tensor:
        if stop.out_of_time():
            raise _OutOfTime
        opt.zero_grad(set_to_none=True)
        loss = obj.loss(obj.simulate(sig.x(), _labels(lab, fixed), True))
        value = float(loss.detach())
        if value < best["value"]:  # type: ignore[operator]
            best.update(value=value, params=[p.detach().clone() for p in params])
        scaled = loss / ref[0]
        scaled.backward()
        return scaled

    def fresh() -> torch.optim.LBFGS:
        return torch.optim.LBFGS(params, lr=1.0, max_iter=cfg.inner, history_size=100, line_search_fn="strong_wolfe",
                                 tolerance_grad=1e-30, tolerance_change=1e-30)

    opt, iterations, reason = fresh(), 0, ""
    while not reason:
        before = int(opt.state[params[0]].get("n_iter", 0))
        try:
            opt.step(closure)
        except _OutOfTime:
            reason = TIME_CAP
        iterations += int(opt.state[params[0]].get("n_iter", 0)) - before
        reason = reason or stop.update(float(best["value"]))  # type: ignore[arg-type]
        if not reason and float(best["value"]) < RESCALE_FACTOR * ref[0]:  # type: ignore[arg-type]
            ref[0] = float(best["value"])  # type: ignore[arg-type]
            opt = fresh()
    with torch.no_grad():
        for p, b in zip(params, best["params"]):  # type: ignore[call-overload]
            p.copy_(b)
    return _Run(reason, iterations, stop.best)
