"""The study every scheme shares: the cohort (server source data + patient clients) and the
server-pretrained model (full training then µ-Training), cached by a hash of what shaped it."""
from __future__ import annotations

import difflib
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from simulator.client_scores import ScoreMemo
from simulator.config import RunConfig, parse_fail
from simulator.core.checkpoint import load_model, read_checkpoint, save_checkpoint
from simulator.core.device import describe, model_device, resolve_device
from simulator.core.metrics import ClassificationMetrics
from simulator.core.model import TDSSM
from simulator.core.phases import EpochLog, PhaseResult, evaluate, train_plan
from simulator.core.tensors import ECGTensors, save_npz
from simulator.data.cache import RecordCache, default_cache_dir
from simulator.data.cohort import Client, Cohort, SyntheticCohortSpec, balanced_split, cached_synthetic_cohort, split_cohort
from simulator.data.records import ECGRecords
from simulator.data.synthetic import Population
from simulator.datasets import load_configured_records, preprocess_config, split_tensors, split_train_val
from simulator.errors import MuprivError


@dataclass(frozen=True)
class StudyClient:
    id: str
    partition: int
    train: ECGTensors
    test: ECGTensors
    data_path: Path  # the device's personal training data, as its ClientApp reads it


@dataclass
class Study:
    config: RunConfig
    clients: list[StudyClient]
    source_train: ECGTensors
    source_test: ECGTensors  # the server's validation records: pretraining picks its best epochs on them
    pretrained_path: Path
    pretrain_cached: bool = False
    pretrain_log: list[dict] = field(default_factory=list)
    source_holdout: ECGTensors | None = None  # data.source_holdout > 0: records no phase trained or selected on
    scores: ScoreMemo = field(default_factory=ScoreMemo)  # every scheme's evaluations, by weights and records

    @property
    def source_eval(self) -> ECGTensors:
        """The records that measure the source task after fine-tuning (forgetting): the holdout when there is
        one, else the validation records (then the pretrained model's score on them is its best epoch's, a
        little optimistic, by the same amount for every scheme of the seed)."""
        return self.source_holdout if self.source_holdout is not None else self.source_test

    @property
    def source_eval_name(self) -> str:
        return "holdout" if self.source_holdout is not None else "validation"

    def score_on_test(self, model: TDSSM, client: StudyClient) -> ClassificationMetrics:
        """`model` scored on the client's test records (remembered by its weights: `ScoreMemo`)."""
        return self.scores.score(model, client.test, f"test:{client.id}")

    def score_on_source(self, model: TDSSM) -> ClassificationMetrics:
        """`model` scored on the records that measure forgetting (`source_eval`; remembered by its weights)."""
        return self.scores.score(model, self.source_eval, f"source:{self.source_eval_name}")

    def pretrained(self) -> TDSSM:
        """The pretrained model on the CPU (`device` says where to compute with it)."""
        model, _ = load_model(self.pretrained_path, self.config.model)
        return model.eval()

    @property
    def device(self) -> torch.device:
        """Where this study's models compute (the config's `device`, resolved on this machine)."""
        return resolve_device(self.config.device)

    def unchanged_phases(self) -> list[str]:
        """The pretraining phases that kept epoch 0: none of their epochs beat, on validation, the model they
        started from, so the model after the phase is bitwise the model before it."""
        return [p["phase"] for p in self.pretrain_log if p.get("best_epoch") == 0]


def build_cohort(cfg: RunConfig, data_path: str | None = None, cache_dir: Path | None = None) -> Cohort:
    """Synthetic study when no data path is configured, else a split of the real records; with
    cohort.client_data, the server keeps every record of the data path and the clients come from the second set.
    A synthetic cohort is read from / stored in the cache under cache_dir when one is given (bitwise the same)."""
    path = data_path if data_path is not None else cfg.data.path
    c = cfg.cohort
    if c.client_data:
        return _two_source_cohort(cfg, path)
    if c.balanced_per_class and not path:
        raise MuprivError(f"cohort.balanced_per_class = {c.balanced_per_class} selects from real records (the paper's "
                          "fine-tuning subset); the synthetic cohort draws its patients' records: set it to 0, or give "
                          "data.path or cohort.client_data")
    if not path:
        spec = SyntheticCohortSpec(n_source=cfg.data.synthetic_records, source_patients=max(1, cfg.data.synthetic_records // 4),
                                   n_clients=c.clients, records_per_client=c.records_per_client, test_fraction=c.test_fraction,
                                   test_records=c.test_records, test_min_positives=c.test_min_positives, shift=c.shift, source=Population(), preprocess=preprocess_config(cfg.data))
        return cached_synthetic_cohort(spec, seed=cfg.seed, cache=RecordCache(cache_dir) if cache_dir is not None else None)
    if c.test_min_positives:
        raise MuprivError(f"cohort.test_min_positives = {c.test_min_positives} applies to synthetic cohorts (it redraws a "
                          f"simulated patient's test records); real data ({path}) has the records it has: set it to 0")
    records = load_configured_records(cfg.data, cfg.seed, path)
    cohort = split_cohort(records, c.clients, by=c.split, source_fraction=c.source_fraction, test_fraction=c.test_fraction,
                          alpha=c.dirichlet_alpha, seed=cfg.seed)
    return _balanced(cohort, cfg)


def _two_source_cohort(cfg: RunConfig, path: str) -> Cohort:
    """The paper's setting: the server pretrains on one data set (data.path; synthetic records when it is "") and
    the clients are drawn from another (cohort.client_data), split by patient, source or label skew."""
    c = cfg.cohort
    if c.test_min_positives:
        raise MuprivError(f"cohort.test_min_positives = {c.test_min_positives} applies to synthetic clients; the clients "
                          f"of cohort.client_data ({c.client_data}) have the records they have: set it to 0")
    source = load_configured_records(cfg.data, cfg.seed, path)
    records = load_configured_records(cfg.data, cfg.seed, c.client_data)
    clients = split_cohort(records, c.clients, by=c.split, source_fraction=0.0, test_fraction=c.test_fraction,
                           alpha=c.dirichlet_alpha, server_sources=[], seed=cfg.seed).clients
    return _balanced(Cohort(source=source, clients=clients), cfg)


def _balanced(cohort: Cohort, cfg: RunConfig) -> Cohort:
    """cohort.balanced_per_class > 0: each client trains on the balanced subset of its records, tested on the rest."""
    if not cfg.cohort.balanced_per_class:
        return cohort
    clients = []
    for k, client in enumerate(cohort.clients):
        train, test = balanced_split(client.records, cfg.cohort.balanced_per_class, seed=cfg.seed + k)
        clients.append(Client(client.id, train, test))
    return Cohort(source=cohort.source, clients=clients)


# What builds the cohort and trains the model, under simulator/.
PRETRAINING_CODE = ("core", "data", "datasets.py", "config.py", "study.py")


@functools.cache
def pretraining_code_digest() -> str:
    """A hash of the source that shapes a pretrained model, so a new version of the code never reuses a
    model an older one trained (any edit, even a comment, retrains: pretraining is the cheap side)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for part in PRETRAINING_CODE:
        for path in sorted((root / part).rglob("*.py")) if (root / part).is_dir() else [root / part]:
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def pretrain_key(cfg: RunConfig, data_path: str | None) -> str:
    """What the pretrained model depends on: model, data, cohort (it decides the source set), train, seed, the
    code that trains it, and the torch thread count. The thread count changes the order of float sums and so
    the weights' last bits: a model pretrained on 1 thread, read back by a 2-thread run, changed one of the
    quickstart's metrics in its 4th decimal. A GPU (its name, CUDA and cuDNN versions) is part of the key for the
    same reason; the CPU adds nothing to the key."""
    facts = {"model": cfg.model.to_dict(), "data": cfg.to_dict()["data"], "cohort": cfg.to_dict()["cohort"],
             "train": cfg.to_dict()["train"], "seed": cfg.seed, "path": data_path,
             "threads": torch.get_num_threads(), "code": pretraining_code_digest()}
    device = describe(resolve_device(cfg.device))
    if device["device"] != "cpu":
        facts["device"] = device
    blob = json.dumps(facts, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_study(
    cfg: RunConfig,
    work_dir: Path,
    data_path: str | None = None,
    cache_dir: Path | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    pretrained: Path | None = None,
) -> Study:
    """Cohort, each client's data file under work_dir/clients/, and the pretrained model (from the cache
    when the same settings were pretrained before). ``pretrained``: use this checkpoint instead (a resumed
    run's own model: its cache key may differ now, e.g. on another thread count, and a run must not mix
    two pretrained models)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cohort = build_cohort(cfg, data_path, cache_dir=cache)
    if len(cohort.source) < 4:
        raise MuprivError(f"the server's source set has {len(cohort.source)} records: pretraining needs more; raise data.synthetic_records or cohort.source_fraction")
    source_train, source_test, holdout = split_source(cohort.source, cfg)
    _check_fail_clients(cfg, [c.id for c in cohort.clients])
    clients_dir = Path(work_dir) / "clients"
    clients_dir.mkdir(parents=True, exist_ok=True)
    clients = []
    for k, c in enumerate(cohort.clients):
        train, test = c.train.tensors(), c.test.tensors()
        if len(train) == 0 or len(test) == 0:
            raise MuprivError(f"client {c.id} has {len(train)} train / {len(test)} test records: give each client more records (cohort.records_per_client) or fewer clients")
        path = clients_dir / f"{c.id}.npz"
        save_npz(train, path)
        clients.append(StudyClient(c.id, k, train, test, path))

    if pretrained is not None:
        load_model(Path(pretrained), cfg.model)  # another architecture is an error here, before any scheme runs
        log = list(read_checkpoint(Path(pretrained)).get("extra", {}).get("phases", []))
        return Study(cfg, clients, source_train, source_test, Path(pretrained), True, log, holdout)
    ckpt = cache / "pretrained" / f"{pretrain_key(cfg, data_path)}.pt"
    cached = ckpt.is_file()
    if cached:  # what each phase did was saved with the model
        log = list(read_checkpoint(ckpt).get("extra", {}).get("phases", []))
    else:
        with _seeded(cfg.seed):
            model = TDSSM(cfg.model)  # initialised on the CPU (the same weights on every device), then moved
        model.to(resolve_device(cfg.device))
        results = train_plan(model, cfg.train.plan(), {"source": source_train}, {"source": source_test}, seed=cfg.seed, on_epoch=on_epoch)
        log = [phase_log(r) for r in results]
        m = evaluate(model, source_test)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        extra = {"phases": log, "source_test_macro_auroc": m.macro_auroc}
        if model_device(model).type != "cpu":  # CPU checkpoints stay byte for byte as they were
            extra["device"] = describe(model_device(model))
        save_checkpoint(ckpt, model, config=cfg.to_dict(), extra=extra)
    return Study(cfg, clients, source_train, source_test, ckpt, cached, log, holdout)


def split_source(source: ECGRecords, cfg: RunConfig) -> tuple[ECGTensors, ECGTensors, ECGTensors | None]:
    """(train, validation, holdout) of the server's records. The holdout (data.source_holdout of them) is drawn
    first and never reaches pretraining; validation is data.val_fraction of the rest. Without a holdout the
    split is the one every earlier run used."""
    if not cfg.data.source_holdout:
        return (*split_train_val(source, cfg.data.val_fraction, cfg.seed), None)
    split = split_tensors(source.tensors(), cfg.data.source_holdout, cfg.seed, stream=0x401D)
    if split is None:
        raise MuprivError(f"data: {len(source)} source records cannot give data.source_holdout = {cfg.data.source_holdout}; "
                          "give more records (data.synthetic_records) or lower data.source_holdout")
    rest, holdout = split
    split = split_tensors(rest, cfg.data.val_fraction, cfg.seed)
    if split is None:
        raise MuprivError(f"data: the {len(rest)} source records left after data.source_holdout cannot be split with "
                          f"data.val_fraction = {cfg.data.val_fraction}; give more records or lower either fraction")
    return (*split, holdout)


def _check_fail_clients(cfg: RunConfig, ids: list[str]) -> None:
    """federation.fail may only name clients this cohort has (checked before anything trains)."""
    for client, _ in parse_fail(cfg.federation.fail):
        if client != "*" and client not in ids:
            close = difflib.get_close_matches(client, ids, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"this cohort's clients are {', '.join(ids)}"
            raise MuprivError(f"federation.fail names client {client!r}, which this cohort does not have: {hint}")


def phase_log(result: PhaseResult) -> dict:
    """One pretraining phase as the run records it. best_epoch 0: no epoch beat the model the phase started
    from (start_val_macro_auroc), so the phase changed nothing; the per-epoch scores show by how much."""
    return {"phase": result.phase.name, "epochs": result.phase.epochs, "best_epoch": result.best_epoch,
            "best_val_macro_auroc": result.best_val_macro_auroc, "start_val_macro_auroc": result.start_val_macro_auroc,
            "val_macro_auroc": [h.val_macro_auroc for h in result.history]}


class _seeded:
    """Initialise a model from the run seed without touching the caller's RNG."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        import torch  # pylint: disable=import-outside-toplevel

        self._ctx = torch.random.fork_rng(devices=[])
        self._ctx.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


