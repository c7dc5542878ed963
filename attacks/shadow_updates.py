"""Shadow updates: what pseudo-clients holding public records would have sent in a round.

A curious server knows the round's global parameters and how the clients train (the granted
`LocalTraining`), so it can play client itself: draw K pseudo-clients from the public prior, each with
the observed number of records and its own class mix, run the granted local training from the round's
global parameters, and keep each update next to that pseudo-client's true class presence and counts.
`attacks.attribute` trains its classifier on them. Nothing here reads a client's data; the shadow set
depends only on the observation's public parts, the prior and a seed, so one set (cached by the digest
of all of them) serves every client of a round.

Class mix. The prior's records are grouped by their label vector ("combos"). Each pseudo-client draws
weights over the combos from a Dirichlet centred on the prior's combo frequencies, with a total
concentration drawn log-uniformly from MIX_CONCENTRATION x (number of combos): some pseudo-clients look
like the population, others hold a few diagnoses only, so presence and counts both vary. Records are
drawn with replacement (the public pool is small).

Devices (`DeviceSpread`). The public records come from the server's device; a patient's wearable sees the
same heart through its own electrode placement. Each pseudo-client therefore wears one of a few assumed
devices: the heart vector is recovered from the 12 leads through the public dipole lead matrix, rotated
(SD placement_deg per body axis), projected back, and each lead gets a contact gain (log-normal SD
contact_gain_sd); variant 0 is the public device itself. Without this, a shadow classifier trained on
the server's device mis-reads the shifted patients of the quickstart (docs/attacks.md).

Simulators (`mode`):
- "linear" (default): every pool record's gradient at the round's global parameters is computed once
  (vmap over records; for decoder parameters alone only the small decoder is differentiated, on pooled
  features computed once); each pseudo-client's local steps are then replayed with the granted optimiser
  (AdamW written out as torch's, with bias correction, decoupled weight decay, the S4D kernel group and
  the schedule; SGD with momentum; FedProx's proximal term), every step fed the mean gradient of its
  batch's records at the global parameters. Exact for the first step; later steps ignore that the
  parameters moved. Cost: one pass over the pool, then elementwise work for all K at once.
- "exact": every step of every pseudo-client is computed at its current parameters (K x steps
  forward/backward passes; it equals the project's train_phase, and checks "linear").
Both run the public model in eval mode (the client's dropout masks are private), with a fresh random
batch order per epoch (the real order is private too).

DP (obs.dp). mode "dp-sgd" (Opacus on the device) is reproduced in shape: Poisson batches at rate
batch / records, each record's gradient clipped to max_grad_norm (flat norm over every trained
parameter, so the pool's full per-record gradients are needed), Gaussian noise of std
noise_multiplier x max_grad_norm added to the sum, divided by the expected batch size, then the optimiser
step. mode "client-level": each update is clipped to max_grad_norm (flat norm over the observed
parameters), as Flower's fixedclipping_mod does; the server adds its noise after the ledger saw the
update, so the shadow updates get none.

Aggregates (obs.kind "aggregate", K clients). A pool of single pseudo-clients with records / K records
each is simulated once; each shadow aggregate is the mean update of K distinct pool members (union of
presence, sum of counts). The pool is split into training and held-out members first, so held-out
aggregates share no member with the ones the classifier is fitted on.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from attacks.model import attacker_model, bce_loss, kernel_param_names
from attacks.observe import LocalTraining, Observation
from attacks.priors import PopulationPrior
from attacks.replay import lr_at

SHADOW_CLIENTS = 256  # shadow observations per round (aggregates: also the size of the single-client pool)
MIX_CONCENTRATION = (0.05, 20.0)  # per-combo Dirichlet concentration range (log-uniform) of a pseudo-client's mix
HELD_OUT = 0.25  # share of the shadow set held out to choose the classifier's regularisation
SHADOW_SEED = 0x5AD0  # the shadow set's own seed stream, mixed with the caller's seed
GRAD_CHUNK = 16  # records per vmap call when computing per-record gradients
MODES = ("linear", "exact")


@dataclass(frozen=True)
class DeviceSpread:
    """How differently the clients' devices may see the same heart, as the attacker assumes it: each
    pseudo-client wears one of `variants` devices, variant 0 the public records' own, the others with the
    lead frame rotated (normal angles, SD placement_deg, about each body axis) and a contact gain per lead
    (log-normal SD contact_gain_sd). variants 0 or 1: the public records as they are."""

    variants: int = 8
    placement_deg: float = 30.0
    contact_gain_sd: float = 0.4

    def to_dict(self) -> dict[str, Any]:
        return {"variants": self.variants, "placement_deg": self.placement_deg, "contact_gain_sd": self.contact_gain_sd}


NO_SPREAD = DeviceSpread(variants=1)
DEVICE_SPREAD = DeviceSpread()
_CACHE_SIZE = 8  # a round needs two entries (pool gradients, shadow set) per feature set
_ADAM = (0.9, 0.999, 1e-8)  # torch's AdamW defaults, as the project's optimiser uses them


@dataclass
class PseudoClients:
    """K pseudo-clients: which public records each holds, and what that makes its truth."""

    records: np.ndarray  # (K, n) indices into the pool (device variant v of record r: v x records + r)
    presence: np.ndarray  # (K, classes) 0/1
    counts: np.ndarray  # (K, classes) records with each diagnosis


@dataclass
class ShadowSet:
    """Simulated observations of one round, with their truth, for the attribute classifier."""

    updates: dict[str, np.ndarray]  # parameter name -> (S, *shape) float32
    presence: np.ndarray  # (S, classes) 0/1
    counts: np.ndarray  # (S, classes)
    n_examples: int  # records behind one shadow observation (an aggregate: all its clients together)
    held_out: np.ndarray  # (S,) bool: not for fitting, only for choosing and reporting
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    memo: dict[Any, Any] = field(default_factory=dict, repr=False)  # what callers derive from it (a fitted classifier)


@dataclass
class _Layout:
    """Where each parameter lives in a flat (…, P) vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]

    @classmethod
    def of(cls, params: dict[str, torch.Tensor], names: list[str]) -> "_Layout":
        shapes = tuple(tuple(params[n].shape) for n in names)
        sizes = [math.prod(s) for s in shapes]
        return cls(tuple(names), shapes, tuple(int(o) for o in np.cumsum([0, *sizes])))

    @property
    def size(self) -> int:
        return self.offsets[-1]

    def flat(self, tensors: dict[str, torch.Tensor], lead: int = 0) -> torch.Tensor:
        """(…, P): the named tensors flattened after their first `lead` dimensions and concatenated."""
        return torch.cat([tensors[n].reshape(*tensors[n].shape[:lead], -1) for n in self.names], dim=-1)

    def unflat(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inverse of `flat` for the trailing dimension."""
        lead = vec.shape[:-1]
        spans = zip(self.names, self.shapes, self.offsets, self.offsets[1:])
        return {n: vec[..., a:b].reshape(*lead, *s) for n, s, a, b in spans}

    def columns(self, names: list[str]) -> torch.Tensor:
        return torch.cat([torch.arange(self.offsets[i], self.offsets[i + 1])
                          for i, n in enumerate(self.names) if n in names])


# ------------------------------------------------------------------------------------------ digests and cache
_cache: "OrderedDict[str, Any]" = OrderedDict()


def clear_cache() -> None:
    _cache.clear()


def _remember(key: str, make: Callable[[], Any]) -> tuple[Any, bool]:
    """(value, was cached): a small LRU of shadow sets and per-record gradients."""
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key], True
    value = make()
    _cache[key] = value
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return value, False


def digest(*parts: Any) -> str:
    """sha256 over arrays (bytes, shape, dtype), dicts of arrays (sorted by key) and reprs of anything else."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, dict):
            for k in sorted(x):
                h.update(str(k).encode())
                feed(x[k])
        elif isinstance(x, (np.ndarray, torch.Tensor)):
            a = np.ascontiguousarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(a.tobytes())
        else:
            h.update(repr(x).encode())

    for p in parts:
        feed(p)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ pseudo-clients
def draw_pseudo_clients(labels: np.ndarray, n: int, k: int, rng: np.random.Generator,
                        concentration: tuple[float, float] | None = None, variants: int = 1) -> PseudoClients:
    """K pseudo-clients of n public records each, every one with its own class mix (see the module doc) and,
    with `variants` > 1, its own device: its records index block v of a pool of `variants` copies of the
    public records."""
    y = (np.asarray(labels) > 0).astype(np.int64)
    combos, inverse, freq = np.unique(y, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    base = freq / freq.sum()
    lo, hi = np.log(concentration or MIX_CONCENTRATION)
    records = np.empty((k, n), dtype=np.int64)
    for i in range(k):
        alpha = np.exp(rng.uniform(lo, hi)) * len(combos) * base
        w = rng.dirichlet(np.maximum(alpha, 1e-3))
        w = base if not np.all(np.isfinite(w)) or w.sum() <= 0 else w / w.sum()
        p = w[inverse] / freq[inverse]
        records[i] = rng.choice(len(y), size=n, replace=True, p=p / p.sum())
    counts = y[records].sum(axis=1)
    if variants > 1:
        records += len(y) * rng.integers(0, variants, size=(k, 1))
    return PseudoClients(records, (counts > 0).astype(np.int64), counts.astype(np.float64))


# ------------------------------------------------------------------------------------------ devices
def rotation(deg_xyz: np.ndarray) -> np.ndarray:
    """(n, 3) angles in degrees about x, y, z -> (n, 3, 3) rotations Rz @ Ry @ Rx."""
    a = np.radians(np.asarray(deg_xyz, np.float64))
    c, s = np.cos(a), np.sin(a)
    out = []
    for (cx, cy, cz), (sx, sy, sz) in zip(c, s):
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        out.append(rz @ ry @ rx)
    return np.stack(out) if out else np.zeros((0, 3, 3))


def device_maps(spread: DeviceSpread, rng: np.random.Generator) -> np.ndarray:
    """(variants, 12, 12) lead maps x -> x @ M. The heart vector is recovered from the 12 leads through the
    public dipole lead matrix (least squares), rotated and projected again; what the dipole does not explain
    (noise, non-dipolar content) is kept. Every lead is then scaled by its contact gain. Variant 0: identity."""
    from simulator.data.synthetic import lead_matrix  # the public generator's dipole-to-lead projection

    L = lead_matrix()  # (3, 12)
    P = np.linalg.pinv(L)  # (12, 3): x @ P = the least-squares dipole
    v = max(1, spread.variants)
    angles = rng.normal(0.0, spread.placement_deg, (v, 3))
    gains = np.exp(rng.normal(0.0, spread.contact_gain_sd, (v, L.shape[1])))
    angles[0], gains[0] = 0.0, 1.0
    R = rotation(angles)
    return np.stack([(P @ (R[i] @ L) + (np.eye(L.shape[1]) - P @ L)) * gains[i][None, :] for i in range(v)])


def rescale(x: np.ndarray, scale: str) -> np.ndarray:
    """The run's per-record scaling again after a lead map (min-max per record or per lead; "none": mV)."""
    if scale not in ("record", "lead"):
        return x
    axes = (1, 2) if scale == "record" else (1,)
    lo, hi = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
    return (x - lo) / np.where(hi - lo > 0, hi - lo, 1.0)


def device_pool(samples: np.ndarray, scale: str, spread: DeviceSpread, rng: np.random.Generator) -> np.ndarray:
    """(variants x records, length, leads): every public record as every assumed device would record it
    (the public records alone when there is no spread or they are not 12 standard leads)."""
    if spread.variants <= 1 or samples.shape[2] != 12:
        return samples
    maps = device_maps(spread, rng).astype(np.float32)
    return np.concatenate([rescale(samples @ m, scale).astype(np.float32) for m in maps])


# ------------------------------------------------------------------------------------------ gradients
def per_record_gradients(model: torch.nn.Module, params: dict[str, torch.Tensor], layout: _Layout, x: torch.Tensor,
                         y: torch.Tensor, pos_weight: float | None) -> torch.Tensor:
    """(records, P): each record's gradient of the client's loss (BCE with pos_weight, every label known)
    at `params`; the loss of a batch is the mean of these over its records."""
    loss_fn = bce_loss(pos_weight)

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, p, (xi[None],)), yi[None])

    per = vmap(grad(loss), in_dims=(None, 0, 0))
    out = [layout.flat(per(params, x[a : a + GRAD_CHUNK], y[a : a + GRAD_CHUNK]), lead=1)
           for a in range(0, x.shape[0], GRAD_CHUNK)]
    return torch.cat(out) if out else x.new_zeros((0, layout.size))


def head_record_gradients(model: torch.nn.Module, params: dict[str, torch.Tensor], layout: _Layout, x: torch.Tensor,
                          y: torch.Tensor, pos_weight: float | None) -> torch.Tensor:
    """(records, P) per-record gradients of decoder parameters only (layout names all "decoder.*"): the pooled
    features are computed once without a graph, so only the tiny decoder is differentiated. Equal to the
    matching columns of `per_record_gradients` at a fraction of the cost."""
    with torch.no_grad():
        h = torch.cat([model.features(x[a : a + GRAD_CHUNK]) for a in range(0, x.shape[0], GRAD_CHUNK)])
    head = {n[len("decoder."):]: params[n] for n in layout.names}
    loss_fn = bce_loss(pos_weight)

    def loss(p: dict[str, torch.Tensor], hi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model.decoder, p, (hi[None],)), yi[None])

    g = vmap(grad(loss), in_dims=(None, 0, 0))(head, h, y)
    return torch.cat([g[n[len("decoder."):]].reshape(h.shape[0], -1) for n in layout.names], dim=1)


def clip_rows(g: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Each row scaled to L2 norm at most max_norm (Opacus' flat per-sample clipping)."""
    norms = g.norm(dim=-1, keepdim=True)
    return g * (max_norm / (norms + 1e-6)).clamp(max=1.0)


# ------------------------------------------------------------------------------------------ local training
@dataclass
class _Plan:
    """Everything a replay needs besides the gradients."""

    training: LocalTraining
    steps: int
    n: int  # records per pseudo-client
    lr: torch.Tensor  # (P,) base learning rate per column
    wd: torch.Tensor  # (P,) weight decay per column
    base: torch.Tensor  # (P,) the round's global parameters
    dp_sgd: tuple[float, float] | None  # (noise multiplier, max_grad_norm) for DP-SGD, else None


def _batches(rng: np.random.Generator, k: int, plan: _Plan) -> list[np.ndarray]:
    """Per step, a (K, n) 0/1 matrix of which of each pseudo-client's records are in its batch:
    a fresh permutation per epoch (plain training) or a Poisson sample (DP-SGD)."""
    b = plan.training.batch_size
    nb = max(1, math.ceil(plan.n / b))
    out, order = [], None
    for t in range(plan.steps):
        sel = np.zeros((k, plan.n), dtype=np.float32)
        if plan.dp_sgd is not None:
            sel[:] = rng.random((k, plan.n)) < min(1.0, b / plan.n)
        else:
            if t % nb == 0:
                order = np.argsort(rng.random((k, plan.n)), axis=1)
            cols = order[:, (t % nb) * b : (t % nb + 1) * b]  # type: ignore[index]
            np.put_along_axis(sel, cols, 1.0, axis=1)
        out.append(sel)
    return out


def _denominator(sel: np.ndarray, plan: _Plan) -> np.ndarray:
    """(K, 1): what a batch's gradient sum is divided by: its size, or DP-SGD's expected batch size."""
    if plan.dp_sgd is not None:
        expected = max(1, int(round(min(1.0, plan.training.batch_size / plan.n) * plan.n)))
        return np.full((sel.shape[0], 1), float(expected), dtype=np.float32)
    return np.maximum(sel.sum(1, keepdims=True), 1.0)


GradientOracle = Callable[[torch.Tensor, np.ndarray], torch.Tensor]  # (params (K, P), weights (K, n)) -> (K, P)


def replay(plan: _Plan, k: int, oracle: GradientOracle, rng: np.random.Generator, noise: torch.Generator) -> torch.Tensor:
    """The K pseudo-clients' local training, vectorised over K: (K, P) updates (parameters after minus before)."""
    tr = plan.training
    p = plan.base.expand(k, -1).clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    b1, b2, eps = _ADAM
    for t, sel in enumerate(_batches(rng, k, plan)):
        g = oracle(p, sel / _denominator(sel, plan))
        if plan.dp_sgd is not None:
            sigma, clip = plan.dp_sgd
            g = g + torch.randn(p.shape, generator=noise) * (sigma * clip) / torch.as_tensor(_denominator(sel, plan))
        if tr.prox_mu:
            g = g + tr.prox_mu * (p - plan.base)
        lr = plan.lr * (lr_at(tr, 1.0, t, plan.steps))
        if tr.optimizer == "sgd":
            g = g + plan.wd * p
            m = g if t == 0 or not tr.momentum else tr.momentum * m + g
            p = p - lr * m
            continue
        p = p * (1.0 - lr * plan.wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** (t + 1))) / ((v / (1 - b2 ** (t + 1))).sqrt() + eps)
    return p - plan.base


def linear_oracle(grads: torch.Tensor, records: np.ndarray) -> GradientOracle:
    """Batch gradients from per-record gradients at the global parameters: weights (K, n) over each
    pseudo-client's records -> (K, P)."""
    pool = grads.shape[0]

    def oracle(_params: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
        W = np.zeros((records.shape[0], pool), dtype=np.float32)
        np.add.at(W, (np.repeat(np.arange(records.shape[0]), records.shape[1]), records.reshape(-1)), weights.reshape(-1))
        return torch.as_tensor(W) @ grads

    return oracle


def exact_oracle(model: torch.nn.Module, layout: _Layout, x: torch.Tensor, y: torch.Tensor, records: np.ndarray,
                 pos_weight: float | None, clip: float | None) -> GradientOracle:
    """Batch gradients at each pseudo-client's current parameters (one vmap over its batch per step)."""

    def oracle(params: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
        out = torch.zeros_like(params)
        for i in range(params.shape[0]):
            pick = np.flatnonzero(weights[i])
            if len(pick) == 0:
                continue
            rec = torch.as_tensor(records[i, pick])
            g = per_record_gradients(model, layout.unflat(params[i]), layout, x[rec], y[rec], pos_weight)
            if clip is not None:
                g = clip_rows(g, clip)
            out[i] = torch.as_tensor(weights[i, pick]) @ g
        return out

    return oracle


# ------------------------------------------------------------------------------------------ the shadow set
def local_steps(obs: Observation, n_per_client: int) -> int:
    """A client's local steps: as it reported (per-client updates), else from epochs, records and batch size."""
    if obs.kind != "aggregate" and obs.local_steps:
        return int(obs.local_steps)
    return obs.training.steps(n_per_client)


def records_per_client(obs: Observation) -> int:
    """Records behind one client's update: num-examples (split over an aggregate's clients), else the most a
    client can hold for its reported steps, else one batch."""
    k = max(1, obs.num_clients)
    if obs.num_examples:
        return max(1, int(round(obs.num_examples / k)))
    if obs.local_steps and obs.kind != "aggregate":
        return max(1, obs.training.batch_size * max(1, obs.local_steps // max(1, obs.training.local_epochs)))
    return obs.training.batch_size


def dp_mechanism(obs: Observation) -> tuple[str, float, float] | None:
    """(mode, noise multiplier, max_grad_norm) of the DP the observation went through, or None."""
    dp = obs.dp or {}
    if not dp or dp.get("max_grad_norm") is None:
        return None
    return str(dp.get("mode") or "dp-sgd"), float(dp.get("noise_multiplier") or 0.0), float(dp["max_grad_norm"])


def _column_rates(layout: _Layout, training: LocalTraining, kernel: set[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(lr, weight decay) per column: the S4D kernel parameters in their own group (kernel_lr; no decay under AdamW)."""
    lr, wd = [], []
    for n, a, b in zip(layout.names, layout.offsets, layout.offsets[1:]):
        in_kernel = n in kernel
        lr.append(torch.full((b - a,), training.kernel_lr if in_kernel and training.kernel_lr is not None else training.lr))
        wd.append(torch.full((b - a,), 0.0 if in_kernel and training.optimizer == "adamw" else training.weight_decay))
    return torch.cat(lr), torch.cat(wd)


@dataclass
class Pool:
    """The public records pseudo-clients draw from (every assumed device variant of them) and their labels."""

    x: np.ndarray  # (records, length, leads) float32
    y: np.ndarray  # (records, classes) 0/1

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.as_tensor(self.x), torch.as_tensor(self.y, dtype=torch.float32)


def public_pool(prior: PopulationPrior, scale: str, spread: DeviceSpread, seed: int = 0) -> Pool:
    """The prior's labelled records under `spread`'s device variants (seeded: the same maps every call)."""
    if prior.labels is None:
        raise ValueError("the public prior has no labels: shadow clients need labelled public records")
    rng = np.random.default_rng([SHADOW_SEED, int(seed), 1])
    x = device_pool(np.asarray(prior.samples, np.float32), scale, spread, rng)
    reps = x.shape[0] // len(prior.samples)
    return Pool(x, np.tile((np.asarray(prior.labels) > 0).astype(np.int64), (reps, 1)))


def _pool_gradients(obs: Observation, pool: Pool, model: torch.nn.Module, params: dict[str, torch.Tensor],
                    layout: _Layout) -> tuple[torch.Tensor, bool]:
    """Per-record gradients of the whole pool at the round's parameters, for the layout's parameters
    (cached: one per round). Decoder-only layouts take the cheap path."""
    key = "grads:" + digest(repr(obs.model), params, layout.names, pool.x, pool.y, obs.training.pos_weight)
    x, y = pool.tensors()
    head_only = all(n.startswith("decoder.") for n in layout.names)
    fn = head_record_gradients if head_only else per_record_gradients
    return _remember(key, lambda: fn(model, params, layout, x, y, obs.training.pos_weight))


def _clip_observed(delta: torch.Tensor, layout: _Layout, observed: list[str], max_norm: float) -> torch.Tensor:
    """Client-level DP: each update scaled so that its observed part has L2 norm at most max_norm."""
    norms = delta[:, layout.columns(observed)].norm(dim=1, keepdim=True)
    return delta * (max_norm / (norms + 1e-12)).clamp(max=1.0)


def pseudo_client_updates(obs: Observation, pool: Pool, clients: PseudoClients, keep: list[str],
                          mode: str = "linear", rng: np.random.Generator | None = None,
                          noise: torch.Generator | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The updates of `keep` that `clients` (records indexing the pool) send after the local training `obs`
    grants, from the round's global parameters; and what was simulated."""
    rng = rng if rng is not None else np.random.default_rng(SHADOW_SEED)
    noise = noise if noise is not None else torch.Generator().manual_seed(SHADOW_SEED)
    k, n = clients.records.shape
    model = attacker_model(obs.model, obs.base_params())
    params = {name: p.detach() for name, p in model.named_parameters()}
    full = _Layout.of(params, list(params))
    dp = dp_mechanism(obs)
    cached = False
    if mode == "linear":
        # Columns the replay needs: the kept parameters; all observed ones when client-level clipping takes
        # their norm; every parameter when DP-SGD clips each record's whole gradient.
        need = keep if dp is None else list(obs.update) if dp[0] == "client-level" else list(full.names)
        layout = _Layout.of(params, [name for name in full.names if name in need or name in keep])
        grads, cached = _pool_gradients(obs, pool, model, params, layout)
        if dp is not None and dp[0] == "dp-sgd":
            grads = clip_rows(grads, dp[2])
        oracle = linear_oracle(grads, clients.records)
    else:
        layout = full
        x, y = pool.tensors()
        clip = dp[2] if dp is not None and dp[0] == "dp-sgd" else None
        oracle = exact_oracle(model, full, x, y, clients.records, obs.training.pos_weight, clip)
    lr, wd = _column_rates(layout, obs.training, kernel_param_names(model))
    plan = _Plan(obs.training, local_steps(obs, n), n, lr, wd, layout.flat(params),
                 (dp[1], dp[2]) if dp is not None and dp[0] == "dp-sgd" else None)
    with torch.no_grad():
        delta = replay(plan, k, oracle, rng, noise)
    if dp is not None and dp[0] == "client-level":
        delta = _clip_observed(delta, layout, list(obs.update), dp[2])
    updates = {name: t.numpy().astype(np.float32) for name, t in layout.unflat(delta).items() if name in keep}
    info = {"steps": plan.steps, "records_per_client": n, "pool_gradients_cached": cached,
            "dp": None if dp is None else {"mode": dp[0], "noise_multiplier": dp[1], "max_grad_norm": dp[2]}}
    return updates, info


def held_out_rows(k: int, rng: np.random.Generator) -> np.ndarray:
    """(k,) bool: a random HELD_OUT share of the rows (at least one on each side when k >= 2)."""
    held = np.zeros(k, dtype=bool)
    held[rng.permutation(k)[: min(max(1, round(HELD_OUT * k)), max(k - 1, 0))]] = True
    return held


def _aggregate(updates: dict[str, np.ndarray], clients: PseudoClients, size: int, held_out_members: np.ndarray, s: int,
               rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """S shadow aggregates, each the mean of `size` distinct pool members drawn from one side of the pool's
    split: (updates, presence, counts, held_out)."""
    sides = [np.flatnonzero(~held_out_members), np.flatnonzero(held_out_members)]
    held = held_out_rows(s, rng)
    members = np.empty((s, size), dtype=np.int64)
    for i in range(s):
        side = sides[int(held[i])]
        members[i] = rng.choice(side, size=size, replace=len(side) < size)
    out = {name: u[members].mean(axis=1).astype(np.float32) for name, u in updates.items()}
    counts = clients.counts[members].sum(axis=1)
    return out, (counts > 0).astype(np.int64), counts, held


def shadow_updates(obs: Observation, prior: PopulationPrior, k: int = SHADOW_CLIENTS, *, names: list[str] | None = None,
                   mode: str = "linear", spread: DeviceSpread = DEVICE_SPREAD, seed: int = 0) -> ShadowSet:
    """K shadow observations shaped like `obs` (per-client or SecAgg aggregate, DP as in obs.dp), their updates
    of `names` (default: every observed parameter) and their truth. Cached by the digest of everything it reads."""
    if mode not in MODES:
        raise ValueError(f"shadow mode {mode!r}: use one of {MODES}")
    keep = sorted(n for n in (names if names is not None else obs.update) if n in obs.update)
    size = max(1, obs.num_clients) if obs.kind == "aggregate" else 1
    n = records_per_client(obs)
    key = "shadow:" + digest(repr(obs.model), repr(obs.data), obs.base_params(), obs.training.to_dict(), obs.dp,
                             sorted(obs.update), keep, prior.samples, prior.labels, k, size, n, mode, spread, seed,
                             MIX_CONCENTRATION, HELD_OUT, obs.local_steps if size == 1 else None)

    def make() -> ShadowSet:
        start = time.perf_counter()
        rng = np.random.default_rng([SHADOW_SEED, int(seed)])
        noise = torch.Generator().manual_seed(int(rng.integers(2**62)))
        pool = public_pool(prior, obs.data.scale, spread, seed)
        variants = len(pool.x) // len(prior.samples)
        clients = draw_pseudo_clients(np.asarray(prior.labels), n, k, rng, variants=variants)
        updates, info = pseudo_client_updates(obs, pool, clients, keep, mode, rng, noise)
        held_members = held_out_rows(k, rng)
        if size == 1:
            presence, counts, held = clients.presence, clients.counts, held_members
        else:
            updates, presence, counts, held = _aggregate(updates, clients, size, held_members, k, rng)
        settings = {"shadow_clients": k, "mode": mode, "clients_per_observation": size, "pool": int(len(prior.samples)),
                    "device_spread": spread.to_dict() if variants > 1 else None, "prior": prior.source,
                    "mix_concentration": list(MIX_CONCENTRATION), "held_out": HELD_OUT, "seed": seed, **info}
        return ShadowSet(updates, presence, counts, n * size, held, settings, time.perf_counter() - start)

    shadow, cached = _remember(key, make)
    shadow.settings["cached"] = cached
    return shadow
