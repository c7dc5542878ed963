"""Server source data + N clients, each with a personal train/test split; a client never holds another's records.

Splits of an existing record set (`split_cohort`):
  by="patient"    patients (patient_id, else record_id) are shuffled; `source_fraction` of the records (whole patients)
                  go to the server, the other patients are dealt to n_clients clients of similar size.
  by="source"     hospital-level clients: each database (metadata `source`) is one client; the server keeps the
                  databases in `server_sources` (default: the largest one). n_clients caps the number of clients.
  by="dirichlet"  label skew: after the server's share, each patient goes to a client drawn from Dirichlet(alpha)
                  proportions of its main label (small alpha = each client sees few classes).
`synthetic_cohort` simulates the default study: a source population recorded by clinical devices, and clients
that are single patients wearing a different device (noise, sampling rate, and electrodes placed and in contact
their own way), older on average and with their own class mix, scaled by `shift` in [0, 1]. Each patient draws
from streams of their own, so patients are rendered side by side on threads with bitwise the same records, and
`cached_synthetic_cohort` keeps a built cohort on disk (simulator.data.cache), keyed by its spec, seed and code."""
from __future__ import annotations

import functools
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import scipy

from simulator.atomic import atomic_write
from simulator.core.labels import CLASSES
from simulator.data.cache import RecordCache
from simulator.data.positives import top_up
from simulator.data.preprocess import PreprocessConfig, preprocess_records
from simulator.data.records import ECGRecords
from simulator.data.synthetic import (WEIGHT_NAMES, Population, sample_labels, sample_traits,
                                      synthesize, synthesize_records)
from simulator.errors import MuprivError

SplitBy = Literal["patient", "source", "dirichlet"]


@dataclass(frozen=True)
class Client:
    id: str
    train: ECGRecords
    test: ECGRecords

    @property
    def records(self) -> ECGRecords:
        return ECGRecords.concat([self.train, self.test])


@dataclass(frozen=True)
class Cohort:
    source: ECGRecords
    clients: list[Client]

    def client(self, client_id: str) -> Client:
        for c in self.clients:
            if c.id == client_id:
                return c
        raise MuprivError(f"no client {client_id!r}; clients are {', '.join(c.id for c in self.clients)}")

    def summary(self) -> pd.DataFrame:
        rows = [{"part": "source", "split": "all", "records": len(self.source), **self.source.class_counts()}]
        for c in self.clients:
            for split, r in (("train", c.train), ("test", c.test)):
                rows.append({"part": c.id, "split": split, "records": len(r), **r.class_counts()})
        return pd.DataFrame(rows)


def client_rng(seed: int, client_index: int, purpose: int = 0) -> np.random.Generator:
    """Every client derives its own stream from (seed, client index)."""
    return np.random.default_rng([int(seed), 0xC11E, int(client_index), int(purpose)])


def train_test_split(records: ECGRecords, test_fraction: float, rng: np.random.Generator) -> tuple[ECGRecords, ECGRecords]:
    """Random split, stratified by main label; with >= 2 records both parts get at least one.

    A set of several patients of whom some have several records (a hospital client of CODE-15%, whose exams.csv
    names the patient) is split by whole patients, so no patient is on both sides; a set that is one patient
    (the personal split of a wearer's own records) or where every record is its own patient is split by record."""
    if not 0.0 <= test_fraction < 1.0:
        raise MuprivError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n = len(records)
    _, groups = np.unique(records.patient_ids, return_inverse=True)
    n_groups = int(groups.max()) + 1 if n else 0
    if 1 < n_groups < n:
        return _split_patients(records, groups, n_groups, test_fraction, rng)
    key = _main_label(records)
    # stratified and exact: rank every record by its (randomised) position within its label group, take the first k
    rank = np.empty(n)
    for k in np.unique(key):
        idx = rng.permutation(np.flatnonzero(key == k))
        rank[idx] = (np.arange(len(idx)) + rng.random()) / len(idx)
    n_test = int(round(test_fraction * n))
    if n >= 2 and test_fraction > 0:
        n_test = min(max(n_test, 1), n - 1)
    test_mask = np.zeros(n, bool)
    test_mask[np.argsort(rank, kind="stable")[:n_test]] = True
    return records.subset(np.flatnonzero(~test_mask)), records.subset(np.flatnonzero(test_mask))


def _split_patients(records: ECGRecords, groups: np.ndarray, n_groups: int, test_fraction: float,
                    rng: np.random.Generator) -> tuple[ECGRecords, ECGRecords]:
    """train_test_split by whole patients: patients ranked at random within strata of their most common main label,
    taken into the test set until it holds about test_fraction of the records; both sides keep a patient."""
    n = len(records)
    key = _main_label(records)
    g_key = np.array([np.bincount(key[groups == g]).argmax() for g in range(n_groups)])
    sizes = np.bincount(groups, minlength=n_groups)
    rank = np.empty(n_groups)
    for k in np.unique(g_key):
        idx = rng.permutation(np.flatnonzero(g_key == k))
        rank[idx] = (np.arange(len(idx)) + rng.random()) / len(idx)
    in_test = np.zeros(n_groups, bool)
    target, taken = test_fraction * n, 0
    for g in np.argsort(rank, kind="stable"):
        if test_fraction <= 0 or (taken >= target and in_test.any()) or in_test.sum() == n_groups - 1:
            break
        in_test[g] = True
        taken += sizes[g]
    test_mask = in_test[groups]
    return records.subset(np.flatnonzero(~test_mask)), records.subset(np.flatnonzero(test_mask))


def _main_label(records: ECGRecords) -> np.ndarray:
    """0 = none, 1 + class index of the rarest positive class otherwise."""
    pos = (records.labels > 0.5) & records.known
    if len(records) == 0:
        return np.zeros(0, int)
    prevalence = pos.sum(axis=0) + 1e-9
    score = np.where(pos, 1.0 / prevalence, 0.0)
    return np.where(pos.any(axis=1), score.argmax(axis=1) + 1, 0)


def _groups(records: ECGRecords) -> tuple[np.ndarray, np.ndarray]:
    pids = records.patient_ids
    uniq, inv = np.unique(pids, return_inverse=True)
    return uniq, inv


def split_cohort(records: ECGRecords, n_clients: int, *, by: SplitBy = "patient", source_fraction: float = 0.5,
                 test_fraction: float = 0.3, alpha: float = 0.5, server_sources: Sequence[str] | None = None,
                 seed: int = 0) -> Cohort:
    if n_clients < 1:
        raise MuprivError(f"n_clients must be >= 1, got {n_clients}")
    if not 0.0 <= source_fraction < 1.0:
        raise MuprivError(f"source_fraction must be in [0, 1), got {source_fraction}")
    rng = np.random.default_rng([int(seed), 0xC0407])
    n = len(records)
    owner = np.full(n, -2)  # -1 = server source, k = client k
    if by == "source":
        src = records.meta["source"].fillna("unknown").astype(str).to_numpy()
        names, counts = np.unique(src, return_counts=True)
        order = names[np.argsort(-counts, kind="stable")]
        server = list(server_sources) if server_sources is not None else [order[0]]
        missing = set(server) - set(names)
        if missing:
            raise MuprivError(f"server_sources {sorted(missing)} not in the data; sources are {', '.join(names)}")
        clients_src = [s for s in order if s not in server][:n_clients]
        if not clients_src:
            raise MuprivError(f"by='source' needs at least 2 sources, the data has {len(names)} ({', '.join(names)})")
        owner[np.isin(src, server)] = -1
        ids = []
        for k, s in enumerate(clients_src):
            owner[src == s] = k
            ids.append(f"site-{s}")
    else:
        uniq, inv = _groups(records)
        G = len(uniq)
        sizes = np.bincount(inv, minlength=G)
        perm = rng.permutation(G)
        n_server = 0
        server_groups = []
        for g in perm:
            if n_server >= source_fraction * n:
                break
            server_groups.append(g); n_server += sizes[g]
        in_server = set(server_groups)
        rest = [g for g in perm if g not in in_server]
        if len(rest) < n_clients:
            raise MuprivError(f"only {len(rest)} patient(s) left for {n_clients} clients; lower n_clients or source_fraction")
        group_owner = np.full(G, -1)
        if by == "patient":
            load = np.zeros(n_clients)
            for i, g in enumerate(sorted(rest, key=lambda g: -sizes[g])):  # largest first onto the lightest client
                k = i if i < n_clients else int(np.argmin(load))
                group_owner[g] = k; load[k] += sizes[g]
        elif by == "dirichlet":
            main = _main_label(records)
            g_label = np.array([np.bincount(main[inv == g], minlength=len(CLASSES) + 1).argmax() for g in range(G)])
            props = rng.dirichlet(np.full(n_clients, alpha), size=len(CLASSES) + 1)
            for i, g in enumerate(rest):
                k = i if i < n_clients else int(rng.choice(n_clients, p=props[g_label[g]]))
                group_owner[g] = k
        else:
            raise MuprivError(f"split by must be patient, source or dirichlet, got {by!r}")
        owner = group_owner[inv]
        ids = [f"client-{k:03d}" for k in range(n_clients)]
    clients = []
    for k, cid in enumerate(ids):
        part = records.subset(np.flatnonzero(owner == k))
        tr, te = train_test_split(part, test_fraction, client_rng(seed, k))
        clients.append(Client(cid, tr, te))
    return Cohort(source=records.subset(np.flatnonzero(owner == -1)), clients=clients)


def balanced_subset(records: ECGRecords, per_class: int, *, include_normal: bool = True, seed: int = 0) -> ECGRecords:
    """The paper's fine-tuning subset: up to `per_class` records positive for each class (each record used once,
    rarest classes first), plus `per_class` records with no class when include_normal. Fewer where the data has fewer."""
    return records.subset(balanced_indices(records, per_class, include_normal=include_normal, seed=seed))


def balanced_split(records: ECGRecords, per_class: int, seed: int = 0) -> tuple[ECGRecords, ECGRecords]:
    """(the balanced subset, every other record): the paper fine-tunes on the first and tests on the second."""
    picked = np.zeros(len(records), bool)
    picked[balanced_indices(records, per_class, seed=seed)] = True
    return records.subset(np.flatnonzero(picked)), records.subset(np.flatnonzero(~picked))


def balanced_indices(records: ECGRecords, per_class: int, *, include_normal: bool = True, seed: int = 0) -> np.ndarray:
    """The indices of balanced_subset, sorted."""
    rng = np.random.default_rng([int(seed), 0xBA1])
    pos = (records.labels > 0.5) & records.known
    taken = np.zeros(len(records), bool)
    order = np.argsort(pos.sum(axis=0), kind="stable")
    picks = []
    for j in order:
        cand = rng.permutation(np.flatnonzero(pos[:, j] & ~taken))[:per_class]
        taken[cand] = True; picks.extend(cand.tolist())
    if include_normal:
        cand = rng.permutation(np.flatnonzero(~pos.any(axis=1) & records.known.all(axis=1) & ~taken))[:per_class]
        picks.extend(cand.tolist())
    return np.sort(np.asarray(picks, dtype=np.int64))


# ----------------------------------------------------------------------------------------------------------
# The synthetic study
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticCohortSpec:
    n_source: int = 2000
    source_patients: int = 500
    n_clients: int = 8
    records_per_client: int = 60
    test_fraction: float = 0.3
    test_records: int = 0                  # > 0: each patient's personal test set is this many more records (evaluation
                                           # only; all records_per_client then train), instead of test_fraction of them
    test_min_positives: int = 0            # > 0 (needs test_records): redraw test records until each class has this
                                           # many positives in every patient's test set (simulator.data.positives)
    shift: float = 0.5                     # 0 = clients like the source population ... 1 = strongly shifted
    source: Population = field(default_factory=Population)
    client_fs: float | None = None         # wearable rate; None = 500 Hz when shift > 0, else the source's rate
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.shift <= 1.0:
            raise MuprivError(f"cohort shift must be in [0, 1], got {self.shift}")
        if self.n_clients < 0 or self.records_per_client < 2 or self.n_source < 1:
            raise MuprivError("cohort: need n_source >= 1, n_clients >= 0 and records_per_client >= 2")
        if self.test_records < 0:
            raise MuprivError(f"cohort: test_records must be >= 0, got {self.test_records}")
        if self.test_min_positives < 0:
            raise MuprivError(f"cohort: test_min_positives must be >= 0, got {self.test_min_positives}")
        if self.test_min_positives and len(CLASSES) * self.test_min_positives > self.test_records:
            raise MuprivError(f"cohort: test_min_positives = {self.test_min_positives} needs test_records >= "
                              f"{len(CLASSES) * self.test_min_positives} ({len(CLASSES)} classes), got {self.test_records}")


PLACEMENT_DEG = 30.0      # at shift 1: SD of the per-patient rotation of the electrode frame about each axis
CONTACT_GAIN_SD = 0.4     # at shift 1: log-normal SD of each electrode's per-patient contact gain
MAX_WORKERS = 8           # threads that build a cohort, at most (see default_workers)


def client_population(spec: SyntheticCohortSpec) -> Population:
    """The wearable population: noisier device at another rate and mains frequency, each patient's own electrode
    placement (lead frame rotated, SD PLACEMENT_DEG * shift degrees per axis) and contact gains, older patients."""
    s, src = spec.shift, spec.source
    d = src.device
    fs = spec.client_fs if spec.client_fs is not None else (500.0 if s > 0 else d.fs)
    dev = replace(d, name="wearable", fs=fs, wander_mv=d.wander_mv * (1 + 3 * s), muscle_mv=d.muscle_mv * (1 + 4 * s),
                  powerline_mv=d.powerline_mv * (1 + 3 * s), powerline_hz=60.0 if s > 0 else d.powerline_hz,
                  gain_sd=d.gain_sd * (1 + s), placement_deg=d.placement_deg + PLACEMENT_DEG * s,
                  contact_gain_sd=d.contact_gain_sd + CONTACT_GAIN_SD * s)
    return replace(src, name="wearable", age_mean=src.age_mean + 12 * s, device=dev)


def synthesize_cohort_raw(spec: SyntheticCohortSpec = SyntheticCohortSpec(), seed: int = 0,
                          workers: int | None = None) -> tuple[ECGRecords, list[tuple[str, ECGRecords]]]:
    """The cohort's records before preprocessing (mV, each device's own rate): source set and (client id, records).
    `workers` threads render patients side by side (default: default_workers()); the records do not depend on it."""
    pop = client_population(spec)
    with ThreadPoolExecutor(_workers(workers, spec)) as pool:
        source = pool.submit(_source_raw, spec, seed)
        clients = list(pool.map(lambda k: (_client_id(k), _client_raw(spec, pop, seed, k)), range(spec.n_clients)))
        return source.result(), clients


def default_workers() -> int:
    """Threads that build a cohort: one per usable core, at most MAX_WORKERS. Each patient has its own random
    stream and the heavy steps (FFTs, resampling, noise arithmetic) release the GIL, so patients render side by side."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def _workers(workers: int | None, spec: SyntheticCohortSpec) -> int:
    """The pool size: as asked (default_workers() for None), and no more threads than tasks (patients + source)."""
    n = default_workers() if workers is None else int(workers)
    if n < 1:
        raise MuprivError(f"cohort: workers must be >= 1, got {n}")
    return max(1, min(n, spec.n_clients + 1))


def _client_id(k: int) -> str:
    return f"client-{k:03d}"


def _source_raw(spec: SyntheticCohortSpec, seed: int) -> ECGRecords:
    return synthesize(spec.n_source, seed=seed, population=spec.source, n_patients=spec.source_patients,
                      id_prefix="SRC", patient_prefix="S")


def _client_raw(spec: SyntheticCohortSpec, pop: Population, seed: int, k: int) -> ECGRecords:
    """Patient k's records in mV, drawn from that patient's own streams only (client_rng(seed, k, 1), and 3 for
    test_min_positives' redraws), so that patients can be rendered in any order or side by side."""
    rng = client_rng(seed, k, purpose=1)
    traits = sample_traits(1, pop, rng)
    base = pop.weight_vector()
    if spec.shift > 0:  # each patient's own class mix around the population's
        conc = np.maximum(base * len(WEIGHT_NAMES) * 4 * (1.0 - 0.9 * spec.shift), 0.05)
        w = 0.85 * rng.dirichlet(conc) + 0.15 * base  # skewed, but every class stays possible
    else:
        w = base
    n = spec.records_per_client + spec.test_records
    labels = sample_labels(np.broadcast_to(w, (n, len(WEIGHT_NAMES))), pop.combo_prob, rng)
    recs = synthesize_records(traits, np.zeros(n, np.int64), labels, pop.device, rng,
                              source=pop.name, record_ids=[f"C{k:03d}R{i:04d}" for i in range(n)],
                              patient_ids=[f"C{k:03d}"])
    if spec.test_min_positives:
        recs = _with_test_positives(recs, spec, traits, w, pop, client_rng(seed, k, purpose=3))
    return recs


def _with_test_positives(recs: ECGRecords, spec: SyntheticCohortSpec, traits: pd.DataFrame, weights: np.ndarray,
                         pop: Population, rng: np.random.Generator) -> ECGRecords:
    """The patient's records with some test records (the last spec.test_records) redrawn class-conditionally, same
    patient and device, so that each class has spec.test_min_positives positives in the test set. The redraws come
    from a stream of their own: the training records stay bitwise those of test_min_positives = 0."""
    first = spec.records_per_client
    new = top_up(recs.labels[first:], spec.test_min_positives, weights, pop.combo_prob, rng)
    if not new:
        return recs
    rows = sorted(new)
    ids = recs.record_ids
    extra = synthesize_records(traits, np.zeros(len(rows), np.int64), np.stack([new[r] for r in rows]), pop.device, rng,
                               source=pop.name, record_ids=[ids[first + r] for r in rows],
                               patient_ids=list(recs.meta["patient_id"].iloc[:1]))
    order = np.arange(len(recs))
    order[[first + r for r in rows]] = len(recs) + np.arange(len(rows))
    return ECGRecords.concat([recs, extra]).subset(order)


def synthetic_cohort(spec: SyntheticCohortSpec = SyntheticCohortSpec(), seed: int = 0, workers: int | None = None) -> Cohort:
    """Source population records + one client per simulated patient, all preprocessed with spec.preprocess,
    each client's records split into personal train/test. Each patient is rendered and preprocessed in one go on
    one of `workers` threads (default_workers()), so only a few patients' raw records are in memory at a time;
    the result is bitwise the same for any number of workers."""
    pop = client_population(spec)
    with ThreadPoolExecutor(_workers(workers, spec)) as pool:
        source = pool.submit(lambda: preprocess_records(_source_raw(spec, seed), spec.preprocess))
        clients = list(pool.map(lambda k: _client(spec, pop, seed, k), range(spec.n_clients)))
        return Cohort(source=source.result(), clients=clients)


def _client(spec: SyntheticCohortSpec, pop: Population, seed: int, k: int) -> Client:
    """Patient k rendered, preprocessed and split into personal train/test."""
    recs = preprocess_records(_client_raw(spec, pop, seed, k), spec.preprocess)
    if spec.test_records > 0:   # labels are drawn i.i.d., so the last records are a random held-out set
        n = spec.records_per_client
        tr, te = recs.subset(np.arange(n)), recs.subset(np.arange(n, len(recs)))
    else:
        tr, te = train_test_split(recs, spec.test_fraction, client_rng(seed, k, purpose=2))
    return Client(_client_id(k), tr, te)


# ----------------------------------------------------------------------------------------------------------
# The cohort cache: a built synthetic cohort on disk, keyed by its spec, seed and the code that built it
# ----------------------------------------------------------------------------------------------------------
COHORT_FORMAT = "mupriv-cohort-1"
# The source that decides a synthetic cohort's bits, under simulator/.
COHORT_CODE = ("data/synthetic.py", "data/cohort.py", "data/preprocess.py", "data/positives.py", "data/records.py",
               "core/labels.py")


@functools.cache
def cohort_code_token() -> str:
    """A hash of COHORT_CODE and of numpy's and scipy's versions (their random streams and resampling filters), so
    a cached cohort is only ever read back by the code that built it: any edit of the generator, even a comment,
    builds the cohort anew (building is the cheap side of a stale cohort)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"numpy {np.__version__} scipy {scipy.__version__}".encode())
    for part in COHORT_CODE:
        h.update(part.encode())
        h.update((root / part).read_bytes())
    return h.hexdigest()[:16]


def cohort_cache_settings(spec: SyntheticCohortSpec, seed: int) -> dict:
    """What a cached cohort is keyed by: the whole spec (population, device, preprocessing), the seed, the code."""
    return {"spec": asdict(spec), "seed": int(seed), "code": cohort_code_token(), "format": COHORT_FORMAT}


def cached_synthetic_cohort(spec: SyntheticCohortSpec = SyntheticCohortSpec(), seed: int = 0,
                            cache: RecordCache | None = None, workers: int | None = None) -> Cohort:
    """synthetic_cohort through `cache` (a RecordCache; None or a disabled one builds every time). A hit is bitwise
    the cohort a build gives; an entry that cannot be read is built again and overwritten."""
    build = functools.partial(synthetic_cohort, spec, seed, workers)
    if cache is None:
        return build()
    return cache.fetch("cohort", cohort_cache_settings(spec, seed), build, load_cohort, save_cohort)


def _parts(cohort: Cohort) -> list[ECGRecords]:
    """source, then each client's train and test: the order a cohort file stores them in."""
    return [cohort.source] + [r for c in cohort.clients for r in (c.train, c.test)]


def save_cohort(cohort: Cohort, path: Path | str) -> Path:
    """A cohort as one uncompressed .npz, written atomically: each part's signals, labels and known as arrays, and a
    JSON header with the client ids, each part's rate, units, problems and metadata (values and dtypes)."""
    parts = _parts(cohort)
    header = {"format": COHORT_FORMAT, "clients": [c.id for c in cohort.clients],
              "parts": [{"fs": float(r.fs), "units": r.units, "problems": list(r.problems), "meta": _meta_columns(r.meta)}
                        for r in parts]}
    arrays = {f"{name}_{i}": getattr(r, name) for i, r in enumerate(parts) for name in ("signals", "labels", "known")}
    return atomic_write(Path(path), lambda tmp: np.savez(tmp, header=np.array(json.dumps(header)), **arrays))


def load_cohort(path: Path | str) -> Cohort:
    """A cohort save_cohort wrote; MuprivError when the file is not one or cannot be read whole."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            header = json.loads(str(f["header"]))
            if header.get("format") != COHORT_FORMAT:
                raise MuprivError(f"{path}: not a mupriv cohort file (no '{COHORT_FORMAT}' marker)")
            parts = [ECGRecords(f[f"signals_{i}"], f[f"labels_{i}"], f[f"known_{i}"], _meta_frame(p["meta"]),
                                fs=float(p["fs"]), units=str(p["units"]), problems=tuple(p["problems"]))
                     for i, p in enumerate(header["parts"])]
    except MuprivError:
        raise
    except Exception as e:
        raise MuprivError(f"{path}: cannot read as a cohort file ({type(e).__name__}: {e}); delete it and re-create it") from None
    ids = header["clients"]
    if len(parts) != 1 + 2 * len(ids):
        raise MuprivError(f"{path}: {len(parts)} record sets for {len(ids)} clients; delete it and re-create it")
    return Cohort(source=parts[0], clients=[Client(cid, parts[1 + 2 * k], parts[2 + 2 * k]) for k, cid in enumerate(ids)])


def _meta_columns(meta: pd.DataFrame) -> list[list]:
    """[name, dtype, values] per column. JSON keeps every value exactly (a float64 as its shortest repr, NaN as NaN),
    and the dtype puts each column back as it was (the records .npz of simulator.data.npzio keeps values, not dtypes)."""
    return [[str(c), str(meta[c].dtype), meta[c].tolist()] for c in meta.columns]


def _meta_frame(columns: list[list]) -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series(values, dtype=dtype) for name, dtype, values in columns})
    for name, dtype, _ in columns:
        if str(frame[name].dtype) != dtype:
            raise MuprivError(f"metadata column {name} reads back as {frame[name].dtype}, not {dtype}")
    return frame
