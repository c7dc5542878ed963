"""Shadow models for membership inference: the attacker's own re-runs of the client's training.

An offline LiRA attacker (Carlini et al. 2022) needs to know how confident a model trained *without* a
record would be on it. It gets that by training shadow models the way the target was trained -- same
public architecture, same starting weights, same granted recipe (optimiser, learning rate and schedule,
epochs, batch size, pos_weight) -- on public records only, so every challenge record is OUT for every
shadow. Nothing here reads a client's data: the records come from the public population prior.

A `ShadowRecipe` describes how the exposed model came about, as far as the attacker knows it:
R rounds; in each round K clients of n records start from the current global weights, train the
device parts locally, and the server averages the shared parameters. One client after one round is a
per-client update (or an on-device fine-tune, with every name "shared"); K clients after one round a
SecAgg mean; R rounds from the pretrained model a global model. `view` says which model is exposed:
the average ("global") or shadow client 0's own model, shared parts averaged and personal parts its
own ("device"). Shadow training runs in train() mode, so the attacker draws its own dropout masks.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from attacks.observe import LocalTraining
from simulator.core.device import rng_devices
from simulator.core.model import PARTS, ModelConfig, TDSSM
from simulator.core.phases import masked_bce
from simulator.core.s4d import S4DConv

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class ShadowRecipe:
    """How the target model was trained, as the threat model grants it (see the module doc)."""

    training: LocalTraining  # optimiser, lr, schedule, batch size, pos_weight (local_epochs: per round)
    records: int  # per client
    rounds: int = 1
    clients: int = 1  # K per round
    parts: tuple[str, ...] = PARTS  # what trains on the device
    shared: tuple[str, ...] | None = None  # parameter names the server averages (None: all)
    view: str = "global"  # "global": the average; "device": shadow client 0's personal model

    def normalised(self) -> "ShadowRecipe":
        """One simulation serves both views when everything is shared (the device keeps the average)."""
        return replace(self, view="global") if self.shared is None else self

    def steps_per_client(self) -> int:
        return self.rounds * self.training.steps(self.records)

    def steps(self) -> int:
        """Local steps one shadow model costs: every round, every client of the round."""
        return self.steps_per_client() * self.clients

    def to_dict(self) -> dict:
        return {"training": self.training.to_dict(), "records": self.records, "rounds": self.rounds,
                "clients": self.clients, "parts": list(self.parts), "view": self.view,
                "shared": "all" if self.shared is None else f"{len(self.shared)} tensors"}


@dataclass
class ShadowSet:
    """n shadow models of one recipe from one starting model; all of them OUT for every client record."""

    recipe: ShadowRecipe
    params: list[Params]  # each shadow's exposed model (every parameter)
    seconds: float
    pool_size: int  # public records the shadows drew from
    with_replacement: bool  # whether a shadow's records had to be drawn with replacement
    users: int = 0  # targets that share this set (bookkeeping for the notes)
    key: str = field(default="", repr=False)

    def __len__(self) -> int:
        return len(self.params)


def params_digest(params: Params) -> str:
    """A key for a set of weights: targets that start from the same weights can share shadows."""
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(np.ascontiguousarray(params[name]).tobytes())
    return h.hexdigest()[:16]


def shadow_key(start: Params, recipe: ShadowRecipe) -> str:
    return f"{params_digest(start)}:{recipe.normalised()!r}"


# ------------------------------------------------------------------------------------------ local training
def load_model(cfg: ModelConfig, params: Params, seed: int = 0, device: torch.device | None = None) -> TDSSM:
    """The public TDSSM with `params` loaded (names the dict lacks keep the seeded initialisation, drawn on the
    CPU whatever the device), on `device` (default: the CPU)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TDSSM(cfg)
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, arr in params.items():
            if name in own:
                own[name].copy_(torch.as_tensor(np.asarray(arr), dtype=own[name].dtype))
    return model if device is None else model.to(device)


def _optimizer(model: TDSSM, training: LocalTraining) -> torch.optim.Optimizer:
    """The granted optimiser over the trainable parameters: the project's AdamW (S4D kernel parameters in
    their own group at kernel_lr without weight decay) or SGD with momentum and weight decay."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if training.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=training.lr, momentum=training.momentum, weight_decay=training.weight_decay)
    kernel_ids = {id(getattr(m, n)) for m in model.modules() if isinstance(m, S4DConv) for n in S4DConv.KERNEL_PARAMS}
    rest = [p for p in trainable if id(p) not in kernel_ids]
    kernel = [p for p in trainable if id(p) in kernel_ids]
    groups = [{"params": rest, "lr": training.lr, "weight_decay": training.weight_decay}]
    if kernel:
        groups.append({"params": kernel, "lr": training.kernel_lr or training.lr, "weight_decay": 0.0})
    return torch.optim.AdamW(groups)


def local_train(model: TDSSM, x: torch.Tensor, y: torch.Tensor, training: LocalTraining, parts: tuple[str, ...],
                generator: torch.Generator) -> int:
    """One client's local training with the granted recipe (train mode: the attacker's own dropout masks and
    batch order). FedProx's proximal term pulls towards the weights training started from. Returns steps."""
    for name in PARTS:
        for p in model.part(name).parameters():
            p.requires_grad_(name in parts)
    anchor = [p.detach().clone() for p in model.parameters()] if training.prox_mu else None
    opt = _optimizer(model, training)
    n_batches = max(1, math.ceil(len(x) / training.batch_size))
    total = training.local_epochs * n_batches
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total)) if training.schedule == "cosine" else None
    known = torch.ones_like(y, dtype=torch.bool)
    model.train()
    for _ in range(training.local_epochs):
        order = torch.randperm(len(x), generator=generator)
        for b in range(n_batches):
            idx = order[b * training.batch_size : (b + 1) * training.batch_size]
            loss = masked_bce(model(x[idx]), y[idx], known[idx], training.pos_weight)
            if anchor is not None:
                loss = loss + training.prox_mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
    model.eval()
    return total


def _state(model: TDSSM) -> Params:
    return {n: p.detach().cpu().numpy().copy() for n, p in model.named_parameters()}


# ------------------------------------------------------------------------------------------ one shadow
def simulate(cfg: ModelConfig, start: Params, recipe: ShadowRecipe, data: list[tuple[torch.Tensor, torch.Tensor]],
             seed: int, device: torch.device | None = None) -> Params:
    """One shadow: `recipe.rounds` rounds of len(data) clients (one (x, y) each) from `start`; returns the
    exposed model (see ShadowRecipe.view). On a GPU `device` the batch order still comes from a CPU generator;
    the dropout masks come from the GPU's, seeded alike."""
    shared = set(start) if recipe.shared is None else set(recipe.shared)
    personal = [dict(start) for _ in data]  # each client's own weights between rounds
    glob = {n: start[n] for n in shared if n in start}
    gen = torch.Generator().manual_seed(seed)
    on = torch.device("cpu") if device is None else device
    data = [(x.to(on), y.to(on)) for x, y in data]
    with torch.random.fork_rng(devices=rng_devices(on)):
        torch.manual_seed(seed)
        for _ in range(recipe.rounds):
            trained = []
            for k, (x, y) in enumerate(data):
                model = load_model(cfg, {**personal[k], **glob}, device=device)
                local_train(model, x, y, recipe.training, recipe.parts, gen)
                personal[k] = _state(model)
                trained.append(personal[k])
            glob = {n: np.mean([t[n] for t in trained], axis=0).astype(np.float32) for n in glob}
    if recipe.view == "device":
        return {**personal[0], **glob}
    return {**start, **glob}


def shadow_data(pool_x: np.ndarray, pool_y: np.ndarray, recipe: ShadowRecipe, rng: np.random.Generator
                ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], bool]:
    """Each shadow client's public records: disjoint draws from the pool when it is large enough, else
    independent draws (with replacement if a client needs more records than the pool has)."""
    n, k = recipe.records, recipe.clients
    with_replacement = n > len(pool_x)
    if n * k <= len(pool_x):
        pick = rng.choice(len(pool_x), size=n * k, replace=False).reshape(k, n)
    else:
        pick = np.stack([rng.choice(len(pool_x), size=n, replace=with_replacement) for _ in range(k)])
    data = [(torch.as_tensor(pool_x[p], dtype=torch.float32), torch.as_tensor(pool_y[p], dtype=torch.float32)) for p in pick]
    return data, with_replacement


def train_shadows(cfg: ModelConfig, start: Params, recipe: ShadowRecipe, pool_x: np.ndarray, pool_y: np.ndarray,
                  n_shadows: int, seed: int, device: torch.device | None = None) -> ShadowSet:
    """n_shadows shadow models, each on its own random draw of public records, trained on `device`."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    params, replaced = [], False
    for s in range(n_shadows):
        data, wr = shadow_data(pool_x, pool_y, recipe, rng)
        replaced = replaced or wr
        params.append(simulate(cfg, start, recipe, data, seed * 1_000 + s, device))
    return ShadowSet(recipe, params, time.perf_counter() - t0, len(pool_x), replaced, key=shadow_key(start, recipe))


class ShadowBank:
    """Shadow sets keyed by (starting weights, recipe): the clients of one round share theirs."""

    def __init__(self, cfg: ModelConfig, pool_x: np.ndarray, pool_y: np.ndarray, n_shadows: int, seed: int,
                 device: torch.device | None = None):
        self.cfg, self.pool_x, self.pool_y = cfg, pool_x, pool_y
        self.n_shadows, self.seed, self.device = n_shadows, seed, device
        self.sets: dict[str, ShadowSet] = {}

    def get(self, start: Params, recipe: ShadowRecipe) -> ShadowSet:
        recipe = recipe.normalised()
        key = shadow_key(start, recipe)
        if key not in self.sets:  # seeded by what it replays, not by what else was prepared before it
            seed = (self.seed * 7_919 + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)) % (2**31)
            self.sets[key] = train_shadows(self.cfg, start, recipe, self.pool_x, self.pool_y, self.n_shadows, seed,
                                           self.device)
        found = self.sets[key]
        found.users += 1
        return found
