"""DP auditing: an empirical lower bound on epsilon from one DP-SGD run (Steinke, Nasr & Jagielski 2023).

dp-fedavg's devices report the RDP accountant's epsilon; nothing else checks that the Opacus mechanism
delivers it. The one-run audit does: m canaries are each included in training with probability 1/2
(the inclusion bits S are the auditor's secret), the run happens once, the auditor scores every
canary, guesses "in" for the k+ highest scores and "out" for the k- lowest, and abstains on the rest.
If the run is (eps, delta)-DP, the number W of correct guesses among r = k+ + k- obeys their main
theorem: for every v,

    P[W >= v] <= f(v) + 2 m delta max_{i = 1..m} (f(v - i) - f(v)) / i,   f(v) = P[Binomial(r, e^eps/(1+e^eps)) >= v].

Observing v correct guesses rejects every eps whose right-hand side is <= beta; the largest rejected
eps is the lower bound, valid with confidence 1 - beta. The delta term is kept (not dropped).

The auditor here is the experimenter, who controls training; it is not the curious server. It drives
the project's own DP-SGD (`baselines.dp_local.dp_train_on_device`: Opacus' GradSampleModule and
DPOptimizer, the device's Poisson sampling and seeded noise) through its `grad_hook`, one device's whole
dp-fedavg run (rounds x local epochs x steps), so a bug in that mechanism shows in the bound.

Canaries:
- `gradient` (white-box, "Dirac" canaries): canary i is a per-sample gradient of norm C (the clipping
  norm) along one trainable coordinate of its own, appended to DP-SGD's per-sample gradients before
  clipping and noise whenever its own Poisson draw (rate q, like a record's) selects it. Two scores
  from the same run: `noisy-gradients` (the clipped, noised gradient of every step, read through
  Opacus' step hook: the white-box observation; scored by the likelihood ratio of "present with
  probability q in each step" against "never present") and `final-update` (what the server sees: each
  round's weight change, weight decay removed, divided by the learning rate; AdamW's per-coordinate
  normalisation sits between the gradients and this score).
- `input` (black-box): public ECGs with every label flipped, added to the device's records; scored by
  the drop of their loss from the start model to the model the server sees at the end.

The device's noise generator is seeded from (run seed, partition, round) (`baselines.dp_local`). The
audit treats that noise as secret and never replays it; an auditor (or server) that knows the seed can
regenerate and subtract it, which voids the guarantee (see docs/attacks.md, *DP audit*).

Choosing k+ and k-: a fixed grid (`guess_settings`, chosen before any data), each setting tested at
beta / (number of settings) (Bonferroni), the largest bound reported. The union bound keeps the
reported maximum valid at 1 - beta overall.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from flwr.app import Context, RecordDict
from scipy import stats

from baselines import setup as device_setup
from baselines.dp_local import dp_history, dp_train_on_device, epsilon_of, steps_per_epoch
from baselines.setup import SchemeSetup
from simulator.core.model import PARTS, ModelConfig, TDSSM
from simulator.core.phases import predict
from simulator.core.tensors import ECGTensors, save_npz
from simulator.errors import MuprivError

if TYPE_CHECKING:
    from opacus.optimizers import DPOptimizer

BETA = 0.05  # 1 - confidence of every reported bound
GUESS_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)  # k / m; one-sided (k- = 0) for all, two-sided up to 0.2
DEFAULT_GRADIENT_CANARIES = 5000  # quickstart: 7-31 s on one thread (docs/attacks.md); more barely raise the bound
DEFAULT_INPUT_CANARIES = 100
ROW_COLUMNS = ["scheme", "client", "round", "attack", "threat_model", "metric", "value", "settings", "note"]
CANARY_TYPES = ("gradient", "input")


# ------------------------------------------------------------------------------------------ the bound
def p_value(eps: float, m: int, r: int, v: int, delta: float) -> float:
    """The theorem's bound on P[W >= v] for an (eps, delta)-DP run with m canaries and r guesses.

    For i > v, f(v - i) = 1, so (f(v - i) - f(v)) / i is largest at i = v and the max runs over 1..v;
    f(v - i) - f(v) = P[v - i <= W <= v - 1] is a running sum of the binomial pmf below v."""
    if v <= 0:
        return 1.0
    p = 1.0 / (1.0 + math.exp(-eps))
    tail = float(stats.binom.sf(v - 1, r, p))
    below = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, p))  # i = 1..v: P[v - i <= W <= v - 1]
    slack = float(np.max(below / np.arange(1, v + 1)))
    return min(1.0, tail + 2.0 * m * delta * slack)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, beta: float = BETA) -> float:
    """The largest eps the observation (v correct of r guesses, m canaries) rejects at level beta; 0 if none.

    p_value is nondecreasing in eps when 2 m delta <= 1 (it is then a maximum over i of
    (1 - c_i) f(v) + c_i P[W >= v - i] with c_i = 2 m delta / i <= 1, both increasing in eps), so the
    rejected set is an interval [0, eps*] and bisection finds eps* (from below: the result is rejected)."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")
    if 2 * m * delta > 1:
        raise ValueError(f"2 m delta = {2 * m * delta:.3g} > 1: the delta term swamps the bound; use at most "
                         f"{int(1 / (2 * delta))} canaries at delta = {delta}")
    if p_value(0.0, m, r, v, delta) > beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(hi, m, r, v, delta) <= beta:
        lo, hi = hi, 2 * hi
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if p_value(mid, m, r, v, delta) <= beta else (lo, mid)
    return lo


def guess_settings(m: int) -> list[tuple[int, int]]:
    """(k+, k-) pairs tried, fixed before any data: one-sided for every fraction, two-sided up to 0.2."""
    out: list[tuple[int, int]] = []
    for f in GUESS_FRACTIONS:
        k = max(1, int(f * m))
        out.append((k, 0))
        if 2 * k <= m and f <= 0.2:
            out.append((k, k))
    return sorted(set(out))


def count_correct(scores: np.ndarray, included: np.ndarray, k_plus: int, k_minus: int) -> int:
    """Correct guesses: "in" for the k+ highest scores, "out" for the k- lowest (ties: index order)."""
    order = np.argsort(np.asarray(scores, np.float64), kind="stable")
    top, bottom = order[len(order) - k_plus:] if k_plus else order[:0], order[:k_minus]
    return int(included[top].sum() + (~included[bottom]).sum())


@dataclass(frozen=True)
class Guesses:
    epsilon: float
    k_plus: int
    k_minus: int
    correct: int
    settings_tried: int


def best_guesses(scores: np.ndarray, included: np.ndarray, delta: float, beta: float = BETA) -> Guesses:
    """Every setting of `guess_settings` at beta / #settings (Bonferroni); the one with the largest bound
    (when none bounds eps above 0, the most accurate one, for the record)."""
    included = np.asarray(included, bool)
    m = len(included)
    settings = guess_settings(m)
    tried = []
    for k_plus, k_minus in settings:
        v = count_correct(scores, included, k_plus, k_minus)
        tried.append(Guesses(epsilon_lower_bound(m, k_plus + k_minus, v, delta, beta / len(settings)), k_plus, k_minus, v,
                             len(settings)))
    return max(tried, key=lambda g: (g.epsilon, g.correct / (g.k_plus + g.k_minus)))  # no bound: the most accurate


# ------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class DPSGDConfig:
    """One device's dp-fedavg (mode "dp-sgd") run: the DP parameters and the on-device hyperparameters."""

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    batch_size: int
    rounds: int
    local_epochs: int
    lr: float = 3e-3
    kernel_lr: float = 1e-3
    weight_decay: float = 0.01
    pos_weight: float = 6.0
    parts: tuple[str, ...] = PARTS

    @classmethod
    def from_setup(cls, setup: SchemeSetup) -> "DPSGDConfig":
        """From the dp-fedavg cell's setup (after its preflight, so a target_epsilon is already a noise multiplier)."""
        p, ft = setup.params, setup.finetune
        if p.get("mode", "dp-sgd") != "dp-sgd":
            raise MuprivError(f"the audit needs dp-fedavg mode 'dp-sgd', got {p.get('mode')!r}")
        keys = ("lr", "kernel_lr", "weight_decay", "pos_weight")
        return cls(noise_multiplier=float(p["noise_multiplier"]), max_grad_norm=float(p["max_grad_norm"]),
                   delta=float(p["delta"]), batch_size=int(ft["batch_size"]), rounds=int(p["rounds"]),
                   local_epochs=int(p["local_epochs"]), **{k: float(ft[k]) for k in keys if k in ft})


@dataclass(frozen=True)
class AuditResult:
    canaries: str  # "gradient" | "input"
    observation: str  # "noisy-gradients" | "final-update" | "final-model-loss"
    epsilon_lower_bound: float
    accountant_epsilon: float  # the RDP accountant's epsilon for this very run (what the device would report)
    m: int
    guesses: int  # r = k+ + k-
    correct: int
    k_plus: int
    k_minus: int
    settings_tried: int
    confidence: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    seconds: float  # the whole audit (training included), shared by the results of one run
    ideal_lower_bound: float | None = None  # the same audit on the ideal Gaussian mechanism (noisy-gradients only)
    note: str = ""


def audit_rows(result: AuditResult, scheme: str = "dp-fedavg", client: str = "") -> list[dict[str, Any]]:
    """The long attacks.csv form: one row per metric (round is empty: the audit covers the whole run)."""
    settings = json.dumps({k: v for k, v in dataclasses.asdict(result).items()
                           if k not in {"epsilon_lower_bound", "accountant_epsilon", "correct", "guesses", "m", "note",
                                        "seconds", "ideal_lower_bound"}},
                          sort_keys=True)
    base = {"scheme": scheme, "client": client, "round": None, "attack": f"dp-audit-{result.canaries}",
            "threat_model": f"auditor-{result.observation}", "settings": settings, "note": result.note}
    metrics = {"eps_lower_bound": result.epsilon_lower_bound, "eps_accountant": result.accountant_epsilon,
               "audit_correct": result.correct, "audit_guesses": result.guesses, "canaries": result.m,
               "seconds": result.seconds}
    if result.ideal_lower_bound is not None:
        metrics["eps_lower_bound_ideal"] = result.ideal_lower_bound
    return [{**base, "metric": k, "value": float(v)} for k, v in metrics.items()]


# ------------------------------------------------------------------------------------------ the run
@dataclass
class DeviceRun:
    """What one audited device run leaves: per round, the trainable coordinates before and after, and the
    steps; the accountant's epsilon over the whole run; and the sample rate used."""

    starts: list[torch.Tensor]
    ends: list[torch.Tensor]
    steps: list[int]
    epsilon: float
    sample_rate: float


def trainable_names(model: TDSSM, parts: Sequence[str]) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.split(".", 1)[0] in parts]


def flat_values(model: TDSSM, names: Sequence[str]) -> torch.Tensor:
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach().reshape(-1) for n in names]).clone()


def audit_setup(model_config: ModelConfig, cfg: DPSGDConfig, seed: int, batch_size: int) -> SchemeSetup:
    """A one-device setup for `dp_train_on_device`: the device's seed (hence its noise) derives from `seed`."""
    finetune = {"lr": cfg.lr, "kernel_lr": cfg.kernel_lr, "weight_decay": cfg.weight_decay,
                "batch_size": int(batch_size), "pos_weight": cfg.pos_weight}
    return SchemeSetup(scheme="dp-fedavg", model=model_config.to_dict(), finetune=finetune, params={}, seed=seed,
                       pretrained_path="", probe_dir="", num_clients=1)


def run_device(model: TDSSM, data: ECGTensors, cfg: DPSGDConfig, seed: int, batch_size: int,
               grad_hook: Callable[[DPOptimizer], None] | None = None) -> DeviceRun:
    """One device's dp-fedavg run as a one-client federation: `rounds` calls of the project's DP-SGD, each
    round starting where the last ended (the aggregate of one client is its own model), one accountant."""
    names = trainable_names(model, cfg.parts)
    with tempfile.TemporaryDirectory(prefix="mupriv-audit-") as tmp:
        path = str(Path(tmp) / "device.npz")
        save_npz(data, Path(path))
        context = Context(run_id=0, node_id=0, node_config={"partition-id": 0, "data-path": path},
                          state=RecordDict(), run_config={})
        setup = audit_setup(model.cfg, cfg, seed, batch_size)
        run = DeviceRun([], [], [], 0.0, min(1.0, batch_size / len(data)))
        try:
            for rnd in range(1, cfg.rounds + 1):
                run.starts.append(flat_values(model, names))
                result = dp_train_on_device(setup, context, model, cfg.parts, cfg.local_epochs, rnd, cfg.noise_multiplier,
                                            cfg.max_grad_norm, cfg.delta, grad_hook=grad_hook)
                run.ends.append(flat_values(model, names))
                run.steps.append(result.steps)
        finally:  # the device cache is keyed by path; a later temporary directory may reuse this one's name
            device_setup._DATA_CACHE.pop(path, None)  # pylint: disable=protected-access
    run.epsilon = epsilon_of(dp_history(context), cfg.delta) if cfg.noise_multiplier > 0 else math.inf
    return run


def fresh_model(model_config: ModelConfig, state: dict[str, torch.Tensor]) -> TDSSM:
    model = TDSSM(model_config)
    model.load_state_dict(state)
    return model


# ------------------------------------------------------------------------------------ gradient canaries
class GradientCanaries:
    """The `grad_hook`: Dirac canaries of norm C appended to the per-sample gradients, each drawn at rate q
    in every step (only if included), and the clipped, noised gradient read back at their coordinates."""

    def __init__(self, names: Sequence[str], sizes: Sequence[int], m: int, q: float, rng: np.random.Generator):
        self.names = list(names)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.coords = np.sort(rng.choice(int(offsets[-1]), size=m, replace=False))
        self.param = np.searchsorted(offsets, self.coords, side="right") - 1  # index into names
        self.local = self.coords - offsets[self.param]
        self.included = rng.random(m) < 0.5  # the auditor's secret S
        self.q, self.rng = q, rng
        self.observed: list[np.ndarray] = []  # per step: canary-aligned noised gradient sum, in units of C
        self.lr = np.zeros(m)
        self.decay = np.zeros(m)  # lr * weight decay
        self.sigma = math.nan
        self._index = {n: i for i, n in enumerate(self.names)}
        self._name_of: dict[int, str] = {}
        self._observer = self.observe

    def bind(self, model: TDSSM) -> None:
        """Know the model's parameters by identity: the optimiser holds them, not their names."""
        self._name_of = {id(p): n for n, p in model.named_parameters()}

    def mine(self, p: torch.Tensor) -> np.ndarray:
        """Which canaries live in parameter p."""
        return self.param == self._index[self._name_of[id(p)]]

    def __call__(self, opt: DPOptimizer) -> None:
        rows = np.nonzero(self.included & (self.rng.random(len(self.included)) < self.q))[0]  # present this step
        for p in opt.params:
            grad_sample = p.grad_sample if isinstance(p.grad_sample, torch.Tensor) else torch.cat(p.grad_sample)
            extra = torch.zeros((len(rows), p.numel()), dtype=grad_sample.dtype)
            here = self.mine(p)[rows]
            extra[torch.as_tensor(np.nonzero(here)[0]), torch.as_tensor(self.local[rows[here]])] = float(opt.max_grad_norm)
            p.grad_sample = torch.cat([grad_sample, extra.view(len(rows), *p.shape)])
        for group in opt.original_optimizer.param_groups:
            for p in group["params"]:
                self.lr[self.mine(p)] = group["lr"]
                self.decay[self.mine(p)] = group["lr"] * group["weight_decay"]
        if opt.step_hook is not self._observer:
            opt.attach_step_hook(self._observer)

    def observe(self, opt: DPOptimizer) -> None:
        """Opacus' step hook: p.grad = (sum of clipped per-sample gradients + noise) / expected batch size."""
        scale = float(opt.expected_batch_size) if opt.loss_reduction == "mean" else 1.0
        self.sigma = float(opt.noise_multiplier)
        values = np.zeros(len(self.coords))
        for p in opt.params:
            mine = self.mine(p)
            values[mine] = p.grad.detach().reshape(-1)[torch.as_tensor(self.local[mine])].double().numpy()
        self.observed.append(values * scale / float(opt.max_grad_norm))

    def step_scores(self) -> np.ndarray:
        """Log-likelihood ratio of "present w.p. q in each step" vs "absent" for x_t ~ N(present, sigma^2);
        with no noise at all, the plain sum (the ratio degenerates)."""
        return presence_llr(np.stack(self.observed, axis=1), self.q, self.sigma)

    def update_scores(self, run: DeviceRun) -> np.ndarray:
        """What the server sees: per round, -(end - start (1 - lr wd)^steps) / lr at each canary coordinate."""
        total = np.zeros(len(self.coords))
        for start, end, steps in zip(run.starts, run.ends, run.steps):
            s, e = start.double().numpy()[self.coords], end.double().numpy()[self.coords]
            total += -(e - s * (1.0 - self.decay) ** steps) / self.lr
        return total


def presence_llr(x: np.ndarray, q: float, sigma: float) -> np.ndarray:
    """Per row of x (canaries x steps): log prod_t [(1 - q) + q exp((2 x_t - 1) / (2 sigma^2))], the
    Neyman-Pearson score of "in (present in each step w.p. q)" against "out"; the row sum when sigma = 0."""
    if not sigma > 0:
        return x.sum(axis=1)
    q = min(q, 1.0 - 1e-12)
    return np.logaddexp(math.log1p(-q), math.log(q) + (2 * x - 1) / (2 * sigma ** 2)).sum(axis=1)


def ideal_gradient_bound(m: int, q: float, steps: int, noise_multiplier: float, delta: float, seed: int = 0,
                         draws: int = 5) -> float:
    """The same audit (scores, guesses, bound) on the ideal mechanism: canary i's step-t coordinate is
    present + noise_multiplier * N(0, 1), nothing else. The median over `draws` runs: a reference that
    separates the one-run method's own looseness from the implementation's."""
    rng = np.random.default_rng([seed, 0x1DEA1])
    out = []
    for _ in range(draws):
        included = rng.random(m) < 0.5
        x = (included[:, None] & (rng.random((m, steps)) < q)) + noise_multiplier * rng.standard_normal((m, steps))
        out.append(best_guesses(presence_llr(x, q, noise_multiplier), included, delta).epsilon)
    return float(np.median(out))


def audit_gradient_canaries(model_config: ModelConfig, pretrained_state: dict[str, torch.Tensor], train_data: ECGTensors,
                            cfg: DPSGDConfig, m: int = DEFAULT_GRADIENT_CANARIES, seed: int = 0,
                            beta: float = BETA) -> list[AuditResult]:
    """White-box audit of the mechanism: two results from one run (noisy-gradients, final-update)."""
    start = time.perf_counter()
    model = fresh_model(model_config, pretrained_state)
    names = trainable_names(model, cfg.parts)
    params = dict(model.named_parameters())
    sizes = [params[n].numel() for n in names]
    note = ""
    if m > sum(sizes):
        note = f"m capped at the {sum(sizes)} trainable coordinates (asked {m})"
        m = sum(sizes)
    q = min(1.0, cfg.batch_size / len(train_data))
    canaries = GradientCanaries(names, sizes, m, q, np.random.default_rng([seed, 0xCA4A]))
    canaries.bind(model)
    run = run_device(model, train_data, cfg, seed, cfg.batch_size, grad_hook=canaries)
    steps = int(sum(run.steps))
    guesses = {"noisy-gradients": best_guesses(canaries.step_scores(), canaries.included, cfg.delta, beta),
               "final-update": best_guesses(canaries.update_scores(run), canaries.included, cfg.delta, beta)}
    ideal = ideal_gradient_bound(m, q, steps, cfg.noise_multiplier, cfg.delta, seed)
    seconds = time.perf_counter() - start
    return [AuditResult("gradient", observation, g.epsilon, run.epsilon, m, g.k_plus + g.k_minus, g.correct, g.k_plus,
                        g.k_minus, g.settings_tried, 1 - beta, cfg.delta, cfg.noise_multiplier, run.sample_rate, steps,
                        seconds, ideal if observation == "noisy-gradients" else None, note)
            for observation, g in guesses.items()]


# --------------------------------------------------------------------------------------- input canaries
def flipped_canaries(public_records: ECGTensors, m: int, rng: np.random.Generator) -> ECGTensors:
    """m distinct public records with every label flipped (all known): records the model would not learn
    from the population, so their loss moves only if the device trained on them."""
    pick = np.sort(rng.choice(len(public_records), size=m, replace=False))
    base = public_records.subset(pick)
    return ECGTensors(base.x.clone(), 1.0 - base.y, torch.ones_like(base.known))


def per_record_loss(model: TDSSM, data: ECGTensors, pos_weight: float) -> np.ndarray:
    logits = predict(model, data)
    pw = torch.full((logits.shape[1],), float(pos_weight))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, data.y, pos_weight=pw, reduction="none")
    return ((loss * data.known).sum(1) / data.known.sum(1).clamp_min(1)).double().numpy()


def concat(a: ECGTensors, b: ECGTensors) -> ECGTensors:
    return ECGTensors(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), torch.cat([a.known, b.known]))


def audit_input_canaries(model_config: ModelConfig, pretrained_state: dict[str, torch.Tensor], train_data: ECGTensors,
                         public_records: ECGTensors, cfg: DPSGDConfig, m: int = DEFAULT_INPUT_CANARIES, seed: int = 0,
                         beta: float = BETA) -> list[AuditResult]:
    """Black-box audit: flipped-label public records join the device's records; score = loss drop.

    The device then holds n' = n + (included) records. The batch size becomes ceil(n' / steps per epoch)
    so that the steps per epoch, hence the run's step count, stay the configured ones and the sample rate
    stays close to batch / n; the accountant epsilon reported is this run's own."""
    start = time.perf_counter()
    note = ""
    if m > len(public_records):
        note = f"m capped at the {len(public_records)} public records (asked {m})"
        m = len(public_records)
    rng = np.random.default_rng([seed, 0x1A9D7])
    canaries = flipped_canaries(public_records, m, rng)
    included = rng.random(m) < 0.5
    data = concat(train_data, canaries.subset(np.nonzero(included)[0]))
    batch = math.ceil(len(data) / steps_per_epoch(len(train_data), cfg.batch_size))
    model = fresh_model(model_config, pretrained_state)
    before = per_record_loss(model, canaries, cfg.pos_weight)
    run = run_device(model, data, cfg, seed, batch)
    scores = before - per_record_loss(model, canaries, cfg.pos_weight)
    g = best_guesses(scores, included, cfg.delta, beta)
    return [AuditResult("input", "final-model-loss", g.epsilon, run.epsilon, m, g.k_plus + g.k_minus, g.correct, g.k_plus,
                        g.k_minus, g.settings_tried, 1 - beta, cfg.delta, cfg.noise_multiplier, run.sample_rate,
                        int(sum(run.steps)), time.perf_counter() - start, None, note)]


def audit_dp_sgd(model_config: ModelConfig, pretrained_state: dict[str, torch.Tensor], train_data: ECGTensors,
                 public_records: ECGTensors | None, cfg: DPSGDConfig, canaries: str = "gradient", m: int | None = None,
                 seed: int = 0, beta: float = BETA) -> list[AuditResult]:
    """Audit one device's DP-SGD run with `gradient` (white-box; two observations) or `input` canaries."""
    if canaries not in CANARY_TYPES:
        raise MuprivError(f"canaries {canaries!r} unknown; choose from {list(CANARY_TYPES)}")
    if canaries == "gradient":
        return audit_gradient_canaries(model_config, pretrained_state, train_data, cfg,
                                       DEFAULT_GRADIENT_CANARIES if m is None else m, seed, beta)
    if public_records is None:
        raise MuprivError("input canaries need public records (e.g. the server's source records)")
    return audit_input_canaries(model_config, pretrained_state, train_data, public_records, cfg,
                                DEFAULT_INPUT_CANARIES if m is None else m, seed, beta)
