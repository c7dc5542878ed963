"""Membership inference on every model a scheme exposes.

The game: a challenger hands the attacker candidate records of a patient; the attacker scores how likely
each was in the target model's training data. Members of a client's model are the client's training
records (RUN_DIR/truth/<client>.npz), non-members the same patient's evaluation-only records
(RUN_DIR/truth/heldout/<client>.npz); for a model trained on several clients, the unions.

Two stages, kept apart in the API:
  attack  `prepare_membership(run_dir, info, observations, prior, seed)` -> [MembershipTarget]: what each
          threat exposes (from the ledger, scheme.json and, under `device-lost`, RUN_DIR/models/) plus the
          attacker's preparation (shadow models on public records). Reads nothing under truth/ except the
          server's own source data, through the prior.
  score   `score_membership(targets, run_dir)` -> (rows, units): plays the challenger. It alone reads the
          clients' records, hands them *without* their membership to the prepared scorer
          (`MembershipScorer.scores`), and only then compares the scores with the truth.

Exposed models (kind) and threat models:
  client-update  a client's model after local training, global + update (`curious-server[-dp]`)
  aggregate      the mean model of a SecAgg round's K clients (`curious-server-secagg`)
  global         the global model a federated server broadcasts in a round (`global-model`)
  final-global   the last global model, broadcast after the last round (`global-model`)
  device-lost    a device's final personal model, RUN_DIR/models/<client>.pt (`device-lost`), every scheme
  distilled-set  the distilled records a client uploaded (`distilled-custodian`, distill-share): no model at all

Methods (per-record scores; higher = more likely a member):
  mi-loss        -BCE of the target (the project's loss, granted pos_weight): Yeom et al. 2018
  mi-calibrated  BCE under the starting model - BCE under the target: the drop training caused
  mi-lira        offline LiRA (Carlini et al. 2022): the record's confidence phi = logit of the likelihood
                 of its labels (or minus its loss: `lira_confidence`), standardised by a Gaussian fitted to
                 phi under shadow models that all left the record OUT (one-sided: members sit above them)
  mi-nn          (distilled-set only) the record's similarity to its nearest distilled record (mean over leads of
                 the per-lead Pearson r, attacks.metrics): distillation starts from real records, so a member
                 may survive in the set it was condensed into (Carlini et al. 2022, "No free lunch")
"""
from __future__ import annotations

import functools
import json
import math
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from attacks.metrics import auc, similarity_matrix, tpr_at_fpr
from attacks.observe import LocalTraining, Observation, RunInfo, resolve_param_arrays
from attacks.priors import PopulationPrior
from attacks.shadow_models import Params, ShadowBank, ShadowRecipe, ShadowSet, load_model, params_digest
from attacks.threat import DEVICE_LOST, GLOBAL_MODEL
from simulator import layout
from simulator.core.metrics import json_safe
from simulator.core.model import PARTS, ModelConfig
from simulator.core.tensors import load_npz
from simulator.ledger import DOWN, WireLedger

METHODS = ("mi-loss", "mi-calibrated", "mi-lira")
SET_METHODS = ("mi-nn",)  # against a distilled set: no model to query
DISTILLED_SET = "distilled-set"
KINDS = ("client-update", "aggregate", "global", "final-global", "device-lost", DISTILLED_SET)
CHANCE = {"mi_auc": 0.5, "mi_tpr_at_1fpr": 0.01, "mi_tpr_at_10fpr": 0.1}
COLUMNS = ["scheme", "client", "round", "attack", "threat_model", "metric", "value", "settings", "note"]
UNIT_COLUMNS = ["scheme", "client", "round", "attack", "unit", "label", "value", "kind", "threat_model"]
DEFAULT_SHADOWS = 4  # small: the quickstart stays fast; LiRA's Gaussian uses one pooled variance below
PER_RECORD_VARIANCE_MIN = 16  # shadows needed before each record gets its own variance (Carlini et al.)
DEFAULT_MAX_TARGETS = 4  # client updates / aggregates that get LiRA (smallest batches first)
MI_PRIOR_SAMPLES = 256  # public records worth giving the shadows (population_prior's n_samples)
LIRA_CONFIDENCES = ("label-logit", "neg-loss")


# ------------------------------------------------------------------------------------------ targets
@dataclass
class MembershipTarget:
    """One exposed model, and everything the attacker prepared to score candidates against it."""

    scheme: str
    kind: str  # one of KINDS
    threat_model: str
    round: int | None
    clients: tuple[str, ...]  # whose records are members (scoring only)
    model: ModelConfig
    pos_weight: float | None
    params: Params = field(repr=False)  # the exposed model
    reference: Params = field(repr=False)  # the model its training started from
    recipe: ShadowRecipe | None = None
    shadows: ShadowSet | None = field(default=None, repr=False)
    lira_note: str = ""  # why LiRA did not run, when it did not
    note: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    records: np.ndarray | None = field(default=None, repr=False)  # distilled-set: the uploaded records (n, L, leads)

    @property
    def methods(self) -> tuple[str, ...]:
        return SET_METHODS if self.kind == DISTILLED_SET else METHODS

    @property
    def key(self) -> str:
        return f"{self.scheme}/{self.kind}/r{self.round}/{'+'.join(self.clients)}"


@dataclass
class Download:
    """One broadcast: the parameters a (round, message type) sent down, to whom, and its config. `order` is its
    first ledger position (SecAgg+ sends the final model in the last training round, as an "evaluate")."""

    round: int
    message_type: str
    order: int
    params: Params
    partitions: list[int]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> bool:
        return self.message_type == "train"

    def local_epochs(self) -> int | None:
        v = self.config.get("local-epochs")
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None


def round_downloads(ledger: WireLedger, cfg: ModelConfig) -> list[Download]:
    """The parameters broadcast per (round, message type), in ledger order."""
    found: dict[tuple[int, str], Download] = {}
    for i, e in enumerate(ledger.entries):
        if e.is_error or e.direction != DOWN or e.round is None:
            continue
        arrays = resolve_param_arrays(e.payload, cfg)
        if not arrays:
            continue
        kind = e.message_type.split(".")[0]
        d = found.setdefault((int(e.round), kind), Download(int(e.round), kind, i, {}, []))
        d.params.update(arrays)
        for rec in e.records.values():
            if rec.get("__kind__") == "config":
                d.config.update({k: v for k, v in rec.items() if k != "__kind__"})
        if e.partition_id is not None and e.partition_id not in d.partitions:
            d.partitions.append(int(e.partition_id))
    return sorted(found.values(), key=lambda d: d.order)


def starting_model(downloads: list[Download], cfg: ModelConfig, seed: int) -> tuple[Params, str]:
    """The pretrained model: the first download (the full model in round 0 or 1); names it lacks come from
    later downloads, then from a seeded initialisation."""
    init = {n: p.detach().numpy().copy() for n, p in load_model(cfg, {}, seed).named_parameters()}
    params: Params = {}
    for d in reversed(downloads):  # the earliest download wins
        params.update(d.params)
    missing = [n for n in init if n not in params]
    how = f"first download (round {downloads[0].round}, {downloads[0].message_type})" if downloads else \
        "seeded initialisation (no download)"
    if missing:
        how += f"; {len(missing)} tensors never sent: seeded initialisation"
    return {**init, **params}, how


def _typical_records(observations: list[Observation]) -> int | None:
    """Median records behind one client's update, as clients reported them (num-examples)."""
    counts = [o.num_examples // max(1, o.num_clients) for o in observations
              if o.kind in ("update", "aggregate") and o.num_examples]
    # uploaded records (central's real ones, distill-share's distilled ones): the server trained on all of them
    raw = [len(o.raw["x"]) for o in observations if o.kind in ("raw", "distilled") and "x" in o.raw]
    if raw:
        return int(sum(raw))
    return int(statistics.median(counts)) if counts else None


@functools.lru_cache(maxsize=8)
def _param_names(cfg: ModelConfig) -> frozenset[str]:
    return frozenset(n for n, _ in load_model(cfg, {}).named_parameters())


def _shared(names: Iterable[str], cfg: ModelConfig) -> tuple[str, ...] | None:
    """The names the server averages; None when that is every parameter."""
    names = tuple(sorted(names))
    return None if set(names) >= _param_names(cfg) else names


def _device_parts(info: RunInfo) -> tuple[str, ...]:
    parts = tuple(p for p in (info.record.device_parts or PARTS) if p in PARTS)
    return parts or PARTS


def _changed_parts(final: Params, start: Params) -> tuple[str, ...]:
    """Model parts whose weights moved: exact from the artefact (mu-ft leaves the middle bitwise frozen)."""
    moved = {n.split(".", 1)[0] for n, a in final.items() if n in start and not np.array_equal(a, start[n])}
    return tuple(p for p in PARTS if p in moved)


@dataclass
class _Plan:
    """What prepare_membership knows about the run before building targets."""

    run_dir: Path
    info: RunInfo
    observations: list[Observation]
    downloads: list[Download]
    pretrained: Params
    pretrained_how: str
    records: int  # per client, best guess
    records_how: str

    def training_of(self, rnd: int | None) -> LocalTraining:
        """The recipe of a round as the server sent it (its config wins over scheme.json)."""
        for o in self.observations:
            if o.round == rnd and o.kind in ("update", "aggregate"):
                return o.training
        return next((o.training for o in self.observations if o.kind in ("update", "aggregate")), self.info.training)

    def train_rounds(self) -> list[Download]:
        return [d for d in self.downloads if d.train]

    def clients_per_round(self) -> int:
        train = self.train_rounds()
        return max(1, int(statistics.median(len(d.partitions) for d in train))) if train else 1

    def client_of(self, pid: int) -> str:
        return self.info.partition_to_client.get(pid, f"partition-{pid}")

    def federated(self) -> bool:
        return any(o.kind in ("update", "aggregate") for o in self.observations)


def _plan(run_dir: Path, info: RunInfo, observations: list[Observation], seed: int, device_records: int | None) -> _Plan:
    ledger = WireLedger.load(Path(run_dir) / layout.LEDGER_DIR)  # the server's own record of what it sent
    downloads = round_downloads(ledger, info.model)
    pretrained, how = starting_model(downloads, info.model, seed)
    typical = _typical_records(observations)
    if device_records is not None:
        records, records_how = int(device_records), "given (device_records)"
    elif typical is not None:
        records, records_how = typical, "median num-examples the clients reported"
    else:
        records, records_how = 2 * info.training.batch_size, "assumed: 2 x batch size (nothing on the wire says)"
    return _Plan(Path(run_dir), info, observations, downloads, pretrained, how, records, records_how)


def observation_targets(plan: _Plan) -> list[MembershipTarget]:
    """client-update and aggregate targets: what the curious server holds after each client's (or each
    SecAgg round's) local training, and the round's global model it started from."""
    out = []
    parts = _device_parts(plan.info)
    for o in plan.observations:
        if o.kind not in ("update", "aggregate") or not o.update:
            continue
        start = o.base_params()
        exposed = {**start, **{n: (np.asarray(start[n]) + np.asarray(u)).astype(np.float32) for n, u in o.update.items()}}
        k = max(1, o.num_clients)
        records = o.num_examples // k if o.num_examples else plan.records
        recipe = ShadowRecipe(o.training, max(1, records), 1, k, parts, _shared(o.update, o.model))
        kind = "client-update" if o.kind == "update" else "aggregate"
        out.append(MembershipTarget(o.scheme, kind, o.threat.name, o.round, tuple(sorted(o.clients)), o.model,
                                    o.training.pos_weight, exposed, start, recipe, note=o.note,
                                    settings={"reference": f"the global model of round {o.round}",
                                              "records_per_client": records,
                                              "records_from": "num-examples" if o.num_examples else plan.records_how}))
    return out


def global_targets(plan: _Plan) -> list[MembershipTarget]:
    """The global models broadcast after at least one training round; the one after the last training round
    is the final global model. Members: every client that trained in an earlier round."""
    train = plan.train_rounds()
    if not train:
        return []
    out = []
    shared = _shared(train[0].params, plan.info.model)
    for d in plan.downloads:
        before = [t for t in train if t.order < d.order]
        if not before:
            continue  # the first broadcast is the pretrained model: no member
        clients = tuple(plan.client_of(p) for p in sorted({p for t in before for p in t.partitions}))
        final = d.order > train[-1].order
        recipe = ShadowRecipe(plan.training_of(before[-1].round), plan.records, len(before), plan.clients_per_round(),
                              _device_parts(plan.info), shared)
        out.append(MembershipTarget(plan.info.scheme, "final-global" if final else "global", GLOBAL_MODEL.name, d.round,
                                    clients, plan.info.model, recipe.training.pos_weight, {**plan.pretrained, **d.params},
                                    plan.pretrained, recipe,
                                    settings={"reference": f"pretrained model ({plan.pretrained_how})",
                                              "rounds_before": len(before), "records_per_client": plan.records,
                                              "records_from": plan.records_how}))
    return out


def load_device_model(run_dir: Path, client: str) -> Params | None:
    """RUN_DIR/models/<client>.pt (a dict of tensors), or None when the device left no model."""
    path = layout.model_file(Path(run_dir), client)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {n: t.detach().cpu().numpy().astype(np.float32) for n, t in state.items()}


def device_recipe(plan: _Plan, final: Params) -> ShadowRecipe:
    """How a device's final model came about. Federated: the federation replayed from the pretrained model
    (shadow client 0's personal model, shared parts averaged). On-device (and central): one local training of
    the parts that moved, for the epochs the download's config named."""
    train = plan.train_rounds()
    if plan.federated():
        shared = _shared(train[0].params, plan.info.model) if train else None
        training = plan.training_of(train[-1].round if train else None)
        return ShadowRecipe(training, plan.records, max(1, len(train)), plan.clients_per_round(),
                            _device_parts(plan.info), shared, view="device")
    training = plan.info.training
    epochs = next((d.local_epochs() for d in plan.downloads if d.local_epochs()), None)
    if epochs:  # on-device schemes announce the epochs in their one download's config
        training = replace(training, local_epochs=epochs)
    parts = _changed_parts(final, plan.pretrained) or _device_parts(plan.info)
    return ShadowRecipe(training, plan.records, 1, 1, parts, None, view="device")


def device_targets(plan: _Plan) -> list[MembershipTarget]:
    """One device-lost target per client that left a final model."""
    finals = [(c, f) for c in plan.info.clients if (f := load_device_model(plan.run_dir, c)) is not None]
    out = []
    for client, final in finals:
        recipe = device_recipe(plan, final)
        out.append(MembershipTarget(plan.info.scheme, "device-lost", DEVICE_LOST.name, None, (client,), plan.info.model,
                                    recipe.training.pos_weight, {**plan.pretrained, **final}, plan.pretrained, recipe,
                                    note=f"device-lost: {layout.MODELS_DIR}/{client}.pt",
                                    settings={"reference": f"pretrained model ({plan.pretrained_how})",
                                              "records_per_client": plan.records, "records_from": plan.records_how}))
    return out


def distilled_set_targets(plan: _Plan) -> list[MembershipTarget]:
    """One target per distilled set a client uploaded: members are the client's training records (what it
    distilled), non-members its held-out records. The attacker holds the set itself, not a model trained on it."""
    out = []
    for o in plan.observations:
        if o.kind != "distilled" or "x" not in o.raw:
            continue
        x = np.asarray(o.raw["x"], np.float32)
        out.append(MembershipTarget(o.scheme, DISTILLED_SET, o.threat.name, o.round, tuple(sorted(o.clients)), o.model,
                                    o.training.pos_weight, {}, {}, None, lira_note="not applicable: no model",
                                    note=o.note, records=x,
                                    settings={"reference": "none: the distilled records themselves",
                                              "distilled_records": int(len(x)),
                                              "score": "similarity to the nearest distilled record"}))
    return out


def shadow_caveats(info: RunInfo, target: MembershipTarget) -> list[str]:
    """Where the shadows' replay of the training is knowingly approximate (reported in the settings)."""
    out = []
    if info.dp:
        out.append("shadows train without the scheme's DP clipping and noise")
    if info.scheme == "fedrep":
        out.append("shadows train every device part jointly (FedRep trains the head first, then the body)")
    if target.kind == "client-update" and info.record.shared_parts and set(info.record.shared_parts) != set(PARTS):
        out.append("the client's personal parts are unknown: the update is applied to the last full model sent")
    if target.recipe is not None and target.recipe.clients > 1:
        out.append("shadow clients are drawn from one public pool (the real clients' data differ from each other)")
    return out


def limit_clients(targets: list[MembershipTarget], clients: Sequence[str], max_clients: int | None
                  ) -> list[MembershipTarget]:
    """Membership of the first `max_clients` clients only: their own targets (a client update, a device model,
    a distilled set), and, for a model trained by many (a global model, a SecAgg aggregate), their records as the
    members. Every target's settings say how many clients were attacked."""
    kept = list(clients if max_clients is None else clients[:max_clients])
    note = f"{len(kept)} of {len(clients)}" + ("" if len(kept) == len(clients) else
                                               f" (the attack budget's mi_max_clients = {max_clients})")
    out = []
    for t in targets:
        members = tuple(c for c in t.clients if c in kept)
        if not members:
            continue
        t.clients = members
        t.settings["clients_attacked"] = note
        out.append(t)
    return out


def lira_order(targets: list[MembershipTarget], max_targets: int | None, lira_steps: int | None = None) -> set[int]:
    """Which targets get shadows: every global and device target (few, and their shadows are shared), and the
    first max_targets client updates / aggregates, smallest batches first, then earliest round; with
    `lira_steps`, only targets whose shadow model costs at most that many local steps to train (a 12-round
    global model's shadows replay the whole federation; central's, 12 epochs on everyone's records)."""
    per_obs = [i for i, t in enumerate(targets) if t.kind in ("client-update", "aggregate")]
    per_obs.sort(key=lambda i: (targets[i].recipe.records if targets[i].recipe else 10**9, targets[i].round or 0, i))
    chosen = set(per_obs if max_targets is None else per_obs[:max_targets])
    chosen |= {i for i, t in enumerate(targets) if t.kind not in ("client-update", "aggregate")}
    if lira_steps is not None:
        chosen = {i for i in chosen if targets[i].recipe is None or targets[i].recipe.steps() <= lira_steps}
    return chosen


def attach_shadows(targets: list[MembershipTarget], prior: PopulationPrior, n_shadows: int, max_targets: int | None,
                   seed: int, lira_steps: int | None = None, device: torch.device | None = None) -> None:
    """Train (or reuse) each chosen target's shadow set on the public prior's records, on `device`."""
    if n_shadows < 2 or prior.labels is None or len(prior.samples) == 0:
        why = "fewer than 2 shadows asked for" if n_shadows < 2 else "the public prior has no labels to train shadows on"
        for t in targets:
            t.lira_note = f"not applicable: {why}"
        return
    chosen = lira_order(targets, max_targets, lira_steps)
    bank = ShadowBank(targets[0].model if targets else ModelConfig(), prior.samples, prior.labels.astype(np.float32),
                      n_shadows, seed, device)
    for i, t in enumerate(targets):
        if t.recipe is None:
            t.lira_note = "not applicable: no recipe"
        elif i not in chosen and lira_steps is not None and t.recipe.steps() > lira_steps:
            t.lira_note = (f"skipped: a shadow would train {t.recipe.steps()} local steps; the budget runs LiRA only "
                           f"where it takes at most {lira_steps}")
        elif i not in chosen:
            t.lira_note = f"skipped: outside the {max_targets} client update(s) that get LiRA (smallest batches first)"
        else:
            t.shadows = bank.get(t.reference, t.recipe)


def spread_rounds(rounds: Iterable[int | None], k: int | None) -> set[int | None]:
    """At most k of the rounds: the first, the last and evenly between (k = 1: the first; None: all of them)."""
    ordered = sorted({r for r in rounds if r is not None})
    if k is None or len(ordered) <= k:
        return set(ordered)
    if k < 2:
        return set(ordered[:max(k, 0)])
    pick = np.unique(np.round(np.linspace(0, len(ordered) - 1, k)).astype(int))
    return {ordered[i] for i in pick}


def prepare_membership(run_dir: Path, info: RunInfo, observations: list[Observation], prior: PopulationPrior,
                       seed: int = 0, n_shadows: int = DEFAULT_SHADOWS, max_targets: int | None = DEFAULT_MAX_TARGETS,
                       device_records: int | None = None, kinds: tuple[str, ...] = KINDS,
                       max_rounds: int | None = None, lira_steps: int | None = None,
                       max_clients: int | None = None, device: torch.device | None = None) -> list[MembershipTarget]:
    """The attack stage: every model the run exposes, with the attacker's shadows for LiRA (trained on `device`).

    Reads scheme.json (via `info`), the ledger, RUN_DIR/models/ (the device-lost artefact) and public records
    (via `prior`); never a client's records. `device_records`: how many records the attacker assumes a device
    trained on when the wire does not say (on-device schemes); default: 2 x batch size. `max_rounds`: the client
    updates and intermediate global models of at most this many rounds (the first, the last and evenly between;
    None: every round); the final global model and the device models are always targets. `max_clients`: only the
    first this many clients (partition order) are attacked (`limit_clients`; None: every client)."""
    plan = _plan(Path(run_dir), info, observations, seed, device_records)
    targets: list[MembershipTarget] = []
    if "client-update" in kinds or "aggregate" in kinds:
        per_round = [t for t in observation_targets(plan) if t.kind in kinds]
        keep = spread_rounds((t.round for t in per_round), max_rounds)
        targets += [t for t in per_round if t.round in keep]
    if "global" in kinds or "final-global" in kinds:
        glob = [t for t in global_targets(plan) if t.kind in kinds]
        keep = spread_rounds((t.round for t in glob if t.kind == "global"), max_rounds)
        targets += [t for t in glob if t.kind == "final-global" or t.round in keep]
    if "device-lost" in kinds:
        targets += device_targets(plan)
    if DISTILLED_SET in kinds:
        targets += distilled_set_targets(plan)
    targets = limit_clients(targets, info.clients, max_clients)
    attach_shadows(targets, prior, n_shadows, max_targets, seed, lira_steps, device)
    for t in targets:
        t.settings["shadow_caveats"] = shadow_caveats(info, t)
    return targets  # wall times stay out of settings (settings must be the same run to run): see the seconds metric


# ------------------------------------------------------------------------------------------ the attacker's scorer
@dataclass
class Candidates:
    """Records the challenger hands over (one patient's, or several patients' blocks): signals and labels,
    never their membership. `key` names a block so that its statistics are computed once per model."""

    key: str
    x: torch.Tensor  # (n, length, leads)
    y: torch.Tensor  # (n, classes)
    known: torch.Tensor  # (n, classes) bool


def log1mexp(a: np.ndarray) -> np.ndarray:
    """log(1 - exp(a)) for a < 0, stable at both ends."""
    a = np.minimum(a, -1e-15)
    return np.where(a > -math.log(2.0), np.log(-np.expm1(a)), np.log1p(-np.exp(a)))


@torch.no_grad()
def record_stats(cfg: ModelConfig, params: Params, c: Candidates, pos_weight: float | None,
                 batch: int = 64, device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per record: (the project's loss -- pos_weighted BCE averaged over known classes --, phi = logit of the
    likelihood of the record's labels, log p - log(1 - p) with log p = -sum of unweighted BCEs). The forward
    passes run on `device`; the statistics are computed on the CPU."""
    model = load_model(cfg, params, device=device).eval()
    on = torch.device("cpu") if device is None else device
    logits = torch.cat([model(c.x[i : i + batch].to(on)).cpu() for i in range(0, len(c.x), batch)]).double()
    y, known = c.y.double(), c.known.double()
    pw = None if pos_weight is None else torch.full((logits.shape[1],), float(pos_weight), dtype=torch.float64)
    weighted = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=pw, reduction="none")
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    loss = (weighted * known).sum(1) / known.sum(1).clamp_min(1.0)
    logp = -(plain * known).sum(1).numpy()
    return loss.numpy(), logp - log1mexp(logp)


class MembershipScorer:
    """The attacker's side of the game: scores candidates against a prepared target. Caches per-record
    statistics by (weights, candidate block), so targets that share a model, a reference or shadows, or
    whose candidates overlap (a global model's union of patients), pay for each evaluation once.

    `lira_confidence`: LiRA's per-record statistic, "label-logit" (phi, the paper's logit of the labels'
    likelihood) or "neg-loss" (minus the clients' own pos_weighted loss). Measured: on an overfit toy model
    the logit was clearly better (AUC 0.91-0.98 vs 0.70-0.94 over 3 seeds); on the quickstart's device models,
    near chance, the two were within noise (local-ft trained 60 epochs: mean per-client AUC 0.579 vs 0.584)."""

    def __init__(self, lira_confidence: str = "label-logit", device: torch.device | None = None) -> None:
        if lira_confidence not in LIRA_CONFIDENCES:
            raise ValueError(f"lira_confidence {lira_confidence!r}: use one of {', '.join(LIRA_CONFIDENCES)}")
        self.lira_confidence, self.device = lira_confidence, device
        self._stats: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self.seconds: dict[str, float] = {}

    def confidence(self, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return -stats[0] if self.lira_confidence == "neg-loss" else stats[1]

    def stats(self, cfg: ModelConfig, params: Params, blocks: list[Candidates], pos_weight: float | None
              ) -> tuple[np.ndarray, np.ndarray]:
        digest = f"{params_digest(params)}:{pos_weight}"
        parts = []
        for c in blocks:
            if (digest, c.key) not in self._stats:
                self._stats[(digest, c.key)] = record_stats(cfg, params, c, pos_weight, device=self.device)
            parts.append(self._stats[(digest, c.key)])
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def scores(self, target: MembershipTarget, blocks: list[Candidates]) -> dict[str, np.ndarray]:
        """Each method's per-record scores (higher: more likely a member); seconds per method in self.seconds
        (LiRA's include its share of the shadow training)."""
        t0 = time.perf_counter()
        if target.kind == DISTILLED_SET:
            out = {"mi-nn": nearest_similarity(np.concatenate([c.x.numpy() for c in blocks]), target.records)}
            self.seconds = {"mi-nn": time.perf_counter() - t0}
            return out
        own = self.stats(target.model, target.params, blocks, target.pos_weight)
        t1 = time.perf_counter()
        loss_r, _ = self.stats(target.model, target.reference, blocks, target.pos_weight)
        t2 = time.perf_counter()
        out = {"mi-loss": -own[0]}
        self.seconds = {"mi-loss": t1 - t0}
        if not same_params(target.params, target.reference):  # else every score would be 0: nothing to calibrate by
            out["mi-calibrated"] = loss_r - own[0]
            self.seconds["mi-calibrated"] = t2 - t0
        if target.shadows is not None:
            shadow = np.stack([self.confidence(self.stats(target.model, p, blocks, target.pos_weight))
                               for p in target.shadows.params])
            out["mi-lira"] = lira_scores(self.confidence(own), shadow)
            amortised = target.shadows.seconds / max(1, target.shadows.users)
            self.seconds["mi-lira"] = (t1 - t0) + (time.perf_counter() - t2) + amortised
        return out


def nearest_similarity(candidates: np.ndarray, records: np.ndarray | None) -> np.ndarray:
    """(n,) each candidate's similarity to its nearest record of `records` (a distilled set)."""
    if records is None or len(records) == 0:
        return np.full(len(candidates), math.nan)
    return similarity_matrix(candidates, records).max(axis=1)


def same_params(a: Params, b: Params) -> bool:
    """The two models are the same weights (e.g. central's devices: the only model on the wire is the final one,
    so the attacker's reference is the target itself)."""
    return a.keys() == b.keys() and all(np.array_equal(np.asarray(a[n]), np.asarray(b[n])) for n in a)


def lira_scores(target: np.ndarray, shadows: np.ndarray) -> np.ndarray:
    """Offline LiRA: z = (confidence under the target - mean_OUT) / sd_OUT per record (one-sided: monotone in
    the Gaussian likelihood ratio's p-value). shadows: (n_shadows, records). With few shadows the variance is
    pooled over the candidates (Carlini et al.'s fixed-variance variant): a per-record variance from 4 draws is
    too noisy to divide by. Within one target that makes the ranking the shadows' mean minus the target's loss."""
    mu = shadows.mean(0)
    if shadows.shape[0] >= PER_RECORD_VARIANCE_MIN:
        var = shadows.var(0, ddof=1)
    else:
        var = np.full_like(mu, float(np.mean(shadows.var(0, ddof=1))))
    return (target - mu) / np.sqrt(np.maximum(var, 1e-12))


# ------------------------------------------------------------------------------------------ metrics
def mi_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    labels = np.asarray(labels).astype(bool)
    return {"mi_auc": auc(scores, labels), "mi_tpr_at_1fpr": tpr_at_fpr(scores, labels, 0.01),
            "mi_tpr_at_10fpr": tpr_at_fpr(scores, labels, 0.10), "n_members": float(labels.sum()),
            "n_nonmembers": float((~labels).sum())}


def null_auc_sd(n_members: int, n_nonmembers: int) -> float:
    """Standard deviation of the AUC of a scorer that knows nothing (Mann-Whitney under the null)."""
    return math.sqrt((n_members + n_nonmembers + 1) / (12.0 * n_members * n_nonmembers))


# ------------------------------------------------------------------------------------------ the challenger
@dataclass
class Challenge:
    """The challenger's side: the candidate blocks and, kept back from the attacker, their membership."""

    blocks: list[Candidates]
    units: list[str]  # record ids, in block order
    is_member: np.ndarray  # (n,) 1 member, 0 non-member
    missing: tuple[str, ...]


def load_client_challenge(run_dir: Path, client: str) -> Challenge:
    """One patient: members = its training records, non-members = its held-out records. Scoring stage only."""
    files = ((layout.truth_file(run_dir, client), 1, "train"), (layout.heldout_file(run_dir, client), 0, "heldout"))
    if not all(f.is_file() for f, _, _ in files):
        return Challenge([], [], np.zeros(0, np.int64), (client,))
    blocks, units, labels = [], [], []
    for path, label, tag in files:
        data = load_npz(path)
        blocks.append(Candidates(f"{client}/{tag}", data.x, data.y, data.known))
        units += [f"{client}/{tag}/{i}" for i in range(len(data))]
        labels += [label] * len(data)
    return Challenge(blocks, units, np.asarray(labels, np.int64), ())


def join_challenges(parts: list[Challenge]) -> Challenge:
    """The union of several patients' challenges (the members and non-members of a shared model)."""
    return Challenge([b for p in parts for b in p.blocks], [u for p in parts for u in p.units],
                     np.concatenate([p.is_member for p in parts]) if parts else np.zeros(0, np.int64),
                     tuple(m for p in parts for m in p.missing))


def _settings(t: MembershipTarget, method: str, lira_confidence: str) -> str:
    s: dict[str, Any] = {**t.settings, "method": method, "kind": t.kind, "threat": t.threat_model,
                         "chance": CHANCE, "pos_weight": t.pos_weight}
    if method == "mi-lira" and t.shadows is not None:
        s.update(confidence=lira_confidence, n_shadows=len(t.shadows), shadow_recipe=t.shadows.recipe.to_dict(),
                 shadow_pool=t.shadows.pool_size, shadow_targets=t.shadows.users,
                 variance="per record" if len(t.shadows) >= PER_RECORD_VARIANCE_MIN else "pooled over the candidates")
    return json.dumps(json_safe(s), sort_keys=True, default=str)


def _note(t: MembershipTarget, method: str) -> str:
    if method == "mi-lira":
        if t.shadows is None:
            return t.lira_note
        s = t.shadows
        extra = "; shadow records drawn with replacement (small public pool)" if s.with_replacement else ""
        return (f"offline LiRA: {len(s)} shadows, all OUT, on public records, shared by {s.users} target(s)"
                f"{extra}; {t.note}").rstrip("; ")
    return t.note


def _rows_for(t: MembershipTarget, method: str, metrics: dict[str, float], note: str, scorer: MembershipScorer
              ) -> list[dict[str, Any]]:
    base = {"scheme": t.scheme, "client": "+".join(t.clients), "round": t.round, "attack": method,
            "threat_model": t.threat_model, "settings": _settings(t, method, scorer.lira_confidence), "note": note}
    return [{**base, "metric": k, "value": float(v)} for k, v in metrics.items()]


def score_target(t: MembershipTarget, challenge: Challenge, scorer: MembershipScorer
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(long-form rows, per-record units) of one target."""
    rows: list[dict[str, Any]] = []
    units: list[dict[str, Any]] = []
    if challenge.missing or len(challenge.units) == 0:
        why = f"no truth or held-out records for {', '.join(challenge.missing) or 'any client'}: not scored"
        for m in t.methods:
            rows += _rows_for(t, m, {"scored": 0.0}, why, scorer)
        return rows, units
    scores = scorer.scores(t, challenge.blocks)  # the attacker sees records, never their membership
    for m in t.methods:
        if m == "mi-calibrated" and m not in scores:
            rows += _rows_for(t, m, {"applicable": 0.0}, "not applicable: the only reference model on the wire is the "
                              "target itself", scorer)
            continue
        if m not in scores:  # LiRA without shadows: skipped (budget) or not applicable
            skipped = t.lira_note.startswith("skipped")
            rows += _rows_for(t, m, {"skipped": 1.0} if skipped else {"applicable": 0.0}, _note(t, m), scorer)
            continue
        metrics = {**mi_metrics(scores[m], challenge.is_member), "seconds": scorer.seconds.get(m, math.nan)}
        rows += _rows_for(t, m, metrics, _note(t, m), scorer)
        units += [{"scheme": t.scheme, "client": "+".join(t.clients), "round": t.round, "attack": m, "unit": u,
                   "label": int(lab), "value": float(v), "kind": t.kind, "threat_model": t.threat_model}
                  for u, lab, v in zip(challenge.units, challenge.is_member, scores[m])]
    return rows, units


def score_membership(targets: list[MembershipTarget], run_dir: Path, lira_confidence: str = "label-logit",
                     device: torch.device | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scoring stage: for each target, load its clients' members and non-members, let the prepared scorer
    score them blind, then compute AUC and TPR at 1% / 10% FPR. Returns (rows in attacks.csv's long form,
    per-record units: scheme, client, round, attack, unit, label, value, kind, threat_model)."""
    scorer = MembershipScorer(lira_confidence, device)
    per_client: dict[str, Challenge] = {}
    rows: list[dict[str, Any]] = []
    units: list[dict[str, Any]] = []
    for t in targets:
        for c in t.clients:
            if c not in per_client:
                per_client[c] = load_client_challenge(Path(run_dir), c)
        r, u = score_target(t, join_challenges([per_client[c] for c in t.clients]), scorer)
        rows += r
        units += u
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["round"] = frame["round"].astype("Int64")
    unit_frame = pd.DataFrame(units, columns=UNIT_COLUMNS)
    unit_frame["round"] = unit_frame["round"].astype("Int64")
    return frame, unit_frame


def pooled_metrics(units: pd.DataFrame, by: tuple[str, ...] = ("scheme", "kind", "attack")) -> pd.DataFrame:
    """AUC / TPR at low FPR over every record of a group of targets (e.g. all device-lost targets of a scheme):
    meaningful for calibrated scores (mi-lira, mi-calibrated), whose scale is comparable across targets."""
    out = []
    for key, g in units.groupby(list(by), dropna=False):
        m = mi_metrics(g["value"].to_numpy(), g["label"].to_numpy())
        targets = len(g[["client", "round"]].astype(str).drop_duplicates())
        out.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), **m, "targets": targets})
    return pd.DataFrame(out)
