"""From a scheme run's wire ledger (+ its scheme.json) to the attacker's observations.

This is the only input the attacks get. An `Observation` holds what the server saw for one client
(or one SecAgg sum) in one round: the global parameters it sent down, the client's update (its
parameters after local training minus the global ones), the training hyperparameters it sent or that
the threat model grants, and the metrics the client reported. Pairing: a "train" DOWN message and
its UP reply share (exchange, node id).

`clients` / `partition_ids` are simulation bookkeeping (a real server knows only node ids): they are
carried so that the evaluation can join ground truth afterwards; no attack reads them.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from attacks.threat import AGGREGATE, DISTILLED, NOTHING, ThreatModel, threat_for
from simulator.core.model import ModelConfig, TDSSM
from simulator.data.preprocess import DEFAULT_INPUT
from simulator import layout
from simulator.errors import MuprivError
from simulator.ledger import DOWN, UP, WireLedger
from simulator.scheme_record import SchemeRecord

SERVER = "server"  # ledger direction of what the server learns after SecAgg+ unmasking


@dataclass(frozen=True)
class LocalTraining:
    """How a client trains locally, as the threat model grants it."""

    optimizer: str = "adamw"  # "adamw" or "sgd"
    lr: float = 3e-3
    kernel_lr: float | None = None  # S4D kernel parameters' lr (None: same as lr)
    weight_decay: float = 0.01
    local_epochs: int = 1
    batch_size: int = 32
    pos_weight: float | None = 6.0
    schedule: str = "cosine"  # "cosine" (the project's train_phase) or "constant"
    momentum: float = 0.0  # SGD only
    prox_mu: float = 0.0  # FedProx proximal term

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def steps(self, n_examples: int) -> int:
        return self.local_epochs * max(1, math.ceil(n_examples / self.batch_size))


@dataclass(frozen=True)
class DataSpec:
    """The public input format: samples per record, rate and scaling (the run's data config)."""

    length: int
    fs: float
    scale: str
    source: str  # where the attacker read it from

    def to_dict(self) -> dict[str, Any]:
        return {"length": self.length, "fs": self.fs, "scale": self.scale, "source": self.source}


@dataclass(frozen=True)
class RunInfo:
    """scheme.json as the attacker uses it: the record, with the model config, local training and threat model
    resolved."""

    scheme: str
    params: dict[str, Any]
    model: ModelConfig
    seed: int
    training: LocalTraining
    clients: tuple[str, ...]
    partition_to_client: dict[int, str]
    observable: str
    dp: dict[str, Any] | None
    data: DataSpec
    threat: ThreatModel
    record: SchemeRecord = field(repr=False)  # the file as written (simulator.scheme_record)


@dataclass
class Observation:
    scheme: str
    round: int | None
    kind: str  # "update", "aggregate", "raw", "distilled", "nothing", or "disaggregated" (attacks/disaggregate.py)
    threat: ThreatModel
    model: ModelConfig
    data: DataSpec
    training: LocalTraining
    global_params: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # sent down this round
    context_params: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # unshared params, last seen
    update: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # client minus global (mean over K)
    raw: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # central, distill-share: x, y, known as uploaded
    num_examples: int | None = None  # behind this update (aggregate: all K clients together, when known)
    local_steps: int | None = None  # per client, as reported
    num_clients: int = 1
    dp: dict[str, Any] | None = None
    node_ids: tuple[int, ...] = ()
    note: str = ""
    # Simulation bookkeeping, for scoring only:
    partition_ids: tuple[int, ...] = ()
    clients: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        who = "+".join(self.clients) if self.clients else "+".join(map(str, self.node_ids))
        return f"{self.scheme}/r{self.round}/{who}"

    def base_params(self) -> dict[str, np.ndarray]:
        """Parameters at the start of local training as the attacker best knows them."""
        return {**self.context_params, **self.global_params}


# ------------------------------------------------------------------------------------------ scheme.json
def training_from(record: SchemeRecord) -> LocalTraining:
    """LocalTraining from scheme.json's threat block (and FedProx's ``mu`` from the scheme's params). A run written
    before the record held the kernel learning rate or the schedule gets the same lr for the kernel and the schedule
    its optimiser had then (cosine for AdamW, constant for SGD)."""
    t = record.threat
    return LocalTraining(
        optimizer=t.optimizer, lr=float(t.lr), kernel_lr=None if t.kernel_lr is None else float(t.kernel_lr),
        weight_decay=float(t.weight_decay), local_epochs=int(t.local_epochs), batch_size=int(t.batch_size),
        pos_weight=None if t.pos_weight is None else float(t.pos_weight),
        schedule=t.schedule or ("cosine" if t.optimizer == "adamw" else "constant"),
        prox_mu=float(record.params.get("mu", 0.0)),  # FedProx's proximal weight (no other scheme has a "mu")
    )


def _with_config(training: LocalTraining, config: dict[str, Any]) -> LocalTraining:
    """What the server itself put in the round's config wins over scheme.json (it was on the wire)."""
    kw: dict[str, Any] = {}
    for key, name, cast in (("lr", "lr", float), ("local-epochs", "local_epochs", int), ("batch-size", "batch_size", int),
                            ("pos-weight", "pos_weight", float), ("weight-decay", "weight_decay", float),
                            ("proximal-mu", "prox_mu", float)):
        if key in config and isinstance(config[key], (int, float)) and not isinstance(config[key], bool):
            kw[name] = cast(config[key])
    return replace(training, **kw) if kw else training


def data_spec(record: SchemeRecord, run_dir: Path) -> DataSpec:
    """The public input format: scheme.json's data block; for a run written before it had one, the server's own
    source data shape, then the project's default model input."""
    defaults = DEFAULT_INPUT
    if record.data is not None:
        return DataSpec(record.data.length, float(record.data.fs), record.data.scale, "scheme.json data")
    source = Path(run_dir) / layout.TRUTH_DIR / layout.SOURCE_FILE
    if source.is_file():  # the server's own data: the attacker may look at it
        with np.load(source) as f:
            return DataSpec(int(f["x"].shape[1]), defaults.fs, defaults.scale, "truth/source.npz shape")
    return DataSpec(defaults.length, defaults.fs, defaults.scale, "project defaults (scheme.json has no data block)")


def load_run_info(run_dir: Path) -> RunInfo:
    path = Path(run_dir) / layout.SCHEME_FILE
    if not path.is_file():
        raise MuprivError(f"{path} is missing: attack a scheme run directory (one written by `mupriv simulate`, "
                          f"with scheme.json and ledger/)")
    record = SchemeRecord.read(path)
    try:
        model = ModelConfig(**record.model)
    except TypeError as e:
        raise MuprivError(f"{path}: key model: not a ModelConfig ({e})") from None
    dp = None if record.dp is None else dataclasses.asdict(record.dp)
    try:
        threat = threat_for(record.scheme, record.observable, dp)
    except KeyError as e:
        raise MuprivError(f"{path}: {e.args[0]}") from None
    return RunInfo(scheme=record.scheme, params=dict(record.params), model=model, seed=record.seed,
                   training=training_from(record), clients=record.clients,
                   partition_to_client=dict(record.partition_to_client), observable=threat.observable, dp=dp,
                   data=data_spec(record, Path(run_dir)), threat=threat, record=record)


# ------------------------------------------------------------------------------------------ arrays
@functools.lru_cache(maxsize=8)
def _shapes(cfg: ModelConfig) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(parameter shapes, state-dict shapes) of the public architecture, in the model's order."""
    model = TDSSM(cfg)
    return ({n: tuple(p.shape) for n, p in model.named_parameters()},
            {n: tuple(t.shape) for n, t in model.state_dict().items()})


def resolve_param_arrays(payload: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The model parameters a message carried, by parameter name.

    Named arrays ("<record>/<param name>") are taken as named; records whose keys are positions
    ("fitins.parameters/0", ...: Flower's legacy API) are mapped onto the model's parameter (or
    state-dict) order when every shape fits. Anything else (masks, data, configs) is left out."""
    pshape, sshape = _shapes(cfg)
    by_record: dict[str, dict[str, np.ndarray]] = {}
    for full, arr in payload.items():
        rec, _, key = full.rpartition("/")
        by_record.setdefault(rec, {})[key] = arr
    out: dict[str, np.ndarray] = {}
    for arrays in by_record.values():
        named = {k: a for k, a in arrays.items() if k in pshape and tuple(a.shape) == pshape[k]}
        if named:
            out.update({k: np.asarray(a, dtype=np.float32) for k, a in named.items()})
            continue
        if all(k.isdigit() for k in arrays):
            seq = [arrays[k] for k in sorted(arrays, key=int)]
            for order in (list(pshape), list(sshape)):
                shapes = [sshape[n] for n in order]
                if len(seq) == len(order) and all(tuple(a.shape) == s for a, s in zip(seq, shapes)):
                    out.update({n: np.asarray(a, dtype=np.float32) for n, a in zip(order, seq) if n in pshape})
                    break
    return out


def _raw_records(payload: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    by_record: dict[str, dict[str, np.ndarray]] = {}
    for full, arr in payload.items():
        rec, _, key = full.rpartition("/")
        by_record.setdefault(rec, {})[key] = arr
    for arrays in by_record.values():
        if "x" in arrays and "y" in arrays and np.asarray(arrays["x"]).ndim == 3:
            return {k: np.asarray(v) for k, v in arrays.items() if k in ("x", "y", "known")}
    return {}


def _config_of(entry: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rec in entry.records.values():
        if rec.get("__kind__") == "config":
            out.update({k: v for k, v in rec.items() if k != "__kind__"})
    return out


def _metrics_of(entry: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rec in entry.records.values():
        if rec.get("__kind__") in ("metrics", "config"):
            out.update({k: v for k, v in rec.items() if k != "__kind__"})
    return out


def _int_or_none(v: Any) -> int | None:
    return None if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) else int(v)


# ------------------------------------------------------------------------------------------ observations
def observations_from_ledger(ledger: WireLedger, info: RunInfo) -> list[Observation]:
    """Every attackable view the server had of this run, in ledger order."""
    cfg = info.model
    entries = ledger.entries

    def client_of(pid: int | None) -> str:
        return info.partition_to_client.get(pid, f"partition-{pid}") if pid is not None else "unknown"

    def base(kind: str, **kw: Any) -> Observation:
        fields_ = dict(scheme=info.scheme, kind=kind, threat=info.threat, model=cfg, data=info.data,
                       training=info.training, dp=info.dp)
        fields_.update(kw)
        return Observation(**fields_)

    sends_up = any(e.direction == UP and not e.is_error and (e.tensor_names) for e in entries)
    if info.observable == NOTHING and not sends_up:
        return [base("nothing", round=None, clients=(c,), partition_ids=tuple(p for p, cc in info.partition_to_client.items() if cc == c))
                for c in info.clients]

    # Parameters the server sent earlier, per node and overall: the attacker's best guess of the
    # parts a client keeps personal (e.g. the round-0 full download of fed-mu/fedrep/fedper).
    last_by_node: dict[int, dict[str, np.ndarray]] = {}
    last_any: dict[str, np.ndarray] = {}
    down_at: dict[tuple[int, int], tuple[Any, dict[str, np.ndarray], dict[str, np.ndarray]]] = {}
    round_global: dict[int | None, tuple[dict[str, np.ndarray], dict[str, Any], list[int]]] = {}
    observations: list[Observation] = []
    note = "" if info.observable != NOTHING else "scheme.json says nothing leaves the device, but UP messages carry arrays"

    for e in entries:
        if e.is_error:
            continue
        if e.direction == DOWN:
            arrays = resolve_param_arrays(e.payload, cfg)
            context = {**last_any, **last_by_node.get(e.node_id, {})}
            down_at[(e.exchange, e.node_id)] = (e, arrays, context)
            if arrays:
                last_by_node.setdefault(e.node_id, {}).update(arrays)
                last_any.update(arrays)
                if e.message_type.split(".")[0] == "train":
                    g, conf, parts = round_global.setdefault(e.round, ({}, {}, []))
                    g.update(arrays)
                    conf.update(_config_of(e))
                    if e.partition_id is not None and e.partition_id not in parts:
                        parts.append(e.partition_id)
            continue
        if e.direction == UP:
            raw = _raw_records(e.payload)
            if raw:  # records went up: the real ones (central) or a distilled set (distill-share), as scheme.json says
                kind = "distilled" if info.observable == DISTILLED else "raw"
                # num_examples: the records behind the upload. A distilled set does not say how many real records it
                # condenses, so it is left unknown (the label nulls then use the patient's true count, not the
                # smaller distilled one, which would make "no attack" look worse than it is)
                observations.append(base(kind, round=e.round, raw=raw, node_ids=(e.node_id,),
                                         num_examples=int(raw["x"].shape[0]) if kind == "raw" else None,
                                         partition_ids=(e.partition_id,) if e.partition_id is not None else (),
                                         clients=(client_of(e.partition_id),), note=note))
                continue
            if info.observable == AGGREGATE:
                continue  # per-client uploads are masked under SecAgg+; only the unmasked sum is attackable
            down = down_at.get((e.exchange, e.node_id))
            client = resolve_param_arrays(e.payload, cfg)
            if down is None or not client:
                continue
            d_entry, glob, context = down
            shared = [n for n in client if n in glob]
            if not shared:
                continue
            metrics = _metrics_of(e)
            training = _with_config(info.training, _config_of(d_entry))
            observations.append(base(
                "update", round=e.round if e.round is not None else d_entry.round,
                global_params={n: glob[n] for n in shared},
                context_params={n: a for n, a in {**context, **glob}.items() if n not in shared},
                update={n: client[n] - glob[n] for n in shared},
                num_examples=_int_or_none(metrics.get("num-examples", metrics.get("num_examples"))),
                local_steps=_int_or_none(metrics.get("local-steps")),
                node_ids=(e.node_id,), partition_ids=(e.partition_id,) if e.partition_id is not None else (),
                clients=(client_of(e.partition_id),), note=note, training=training,
            ))
            continue
        if e.direction == SERVER and e.message_type.split(".")[0] == "aggregate":
            observations.append(_aggregate_observation(e, info, round_global, last_any, base, client_of))
    return observations


AGGREGATE_FORMS = ("updates-sum", "updates-mean", "params-sum", "params-mean")


def aggregate_form(arrays: dict[str, np.ndarray], glob: dict[str, np.ndarray], k: int, declared: Any) -> tuple[str, str]:
    """(form, how it was decided). A declared "aggregate-of" wins. Otherwise: parameters (a mean, e.g.
    Flower's SecAgg+ workflow, which unmasks the example-weighted mean of the clients' parameters, or a
    sum) lie near the global ones, updates near zero; a sum of updates is the documented default."""
    if declared is not None:
        if str(declared) not in AGGREGATE_FORMS:
            raise MuprivError(f"aggregate-of {declared!r} unknown; use one of {', '.join(AGGREGATE_FORMS)}")
        return str(declared), "declared"
    names = [n for n in arrays if n in glob]
    if not names:
        return "updates-sum", "default"
    a = np.concatenate([np.ravel(arrays[n]) for n in names]).astype(np.float64)
    g = np.concatenate([np.ravel(glob[n]) for n in names]).astype(np.float64)
    gn = max(float(np.linalg.norm(g)), 1e-30)
    if np.linalg.norm(a - g) < 0.5 * gn:
        return "params-mean", "inferred: near the global parameters"
    if k > 1 and np.linalg.norm(a / k - g) < 0.5 * gn:
        return "params-sum", "inferred: near K x the global parameters"
    return "updates-sum", "default: far from the global parameters"


def _aggregate_observation(e: Any, info: RunInfo, round_global: dict, last_any: dict[str, np.ndarray], base: Any,
                           client_of: Any) -> Observation:
    """What SecAgg+ leaves the server: one aggregate of the K sampled clients, as the mean update."""
    meta = _metrics_of(e)
    glob, conf, parts = round_global.get(e.round, ({}, {}, []))
    arrays = resolve_param_arrays(e.payload, info.model)
    k = _int_or_none(meta.get("num-clients")) or max(1, len(parts))
    try:
        form, how = aggregate_form(arrays, glob, k, meta.get("aggregate-of"))
    except MuprivError as err:
        raise MuprivError(f"ledger aggregate entry row {e.row}: {err}") from None
    shared = [n for n in arrays if n in glob]
    scale = {"updates-sum": 1.0 / k, "updates-mean": 1.0, "params-sum": 1.0 / k, "params-mean": 1.0}[form]
    offset = form.startswith("params")
    update = {n: arrays[n] * scale - (glob[n] if offset else 0.0) for n in shared}
    pids = meta.get("partition-ids")
    pids = [int(p) for p in pids] if isinstance(pids, list) else list(parts)
    note = f"aggregate read as {form} ({how})" if shared else "aggregate carries no parameter the server sent down"
    return base("aggregate", round=e.round, global_params={n: glob[n] for n in shared},
                context_params={n: a for n, a in last_any.items() if n not in shared}, update=update,
                num_examples=_int_or_none(meta.get("num-examples")), num_clients=k,
                training=_with_config(info.training, conf), node_ids=(),
                partition_ids=tuple(pids), clients=tuple(client_of(p) for p in pids), note=note)


def observe_run(run_dir: Path) -> tuple[RunInfo, list[Observation]]:
    """scheme.json + ledger/ of a run directory -> (run info, observations). Reads nothing under truth/
    except, for the input format only, the server's own source data when scheme.json lacks a data block."""
    run_dir = Path(run_dir)
    info = load_run_info(run_dir)
    ledger_dir = run_dir / layout.LEDGER_DIR
    if not ledger_dir.is_dir():
        raise MuprivError(f"{ledger_dir} is missing: a scheme run directory needs the ledger written by WireLedger.save")
    ledger = WireLedger.load(ledger_dir)
    return info, observations_from_ledger(ledger, info)
