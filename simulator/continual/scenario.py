"""The continual scenario: each synthetic patient's records arrive in stages, each with its own train and test records.

kind "class": stage 0 knows every class except `new_classes`; stage s >= 1 adds `new_classes[s - 1]` (a patient
develops AF, then sinus tachycardia). A share `new_share` of stage s's records have the new class as their main
finding; the rest follow the population's mix restricted to the classes known by then ("none" included). A
record's second class (the generator's combinations) is kept only when that class is known by then too, so a
record of stage s never carries a class that appears later: a multi-label record belongs to the stage at which
its last class is known. Labels are `known` only for the classes of the stage's list: the device cannot label a
condition before it has appeared, so a later class is left out of the loss and the metrics, not taught as
negative.

kind "domain": every stage has every class in the population's mix, but the wearable is worn a new way at each
stage: stage 0 is the patient's own electrode placement and contact gains, each later stage a fresh draw of
them (the rotation of the lead frame and each electrode's gain of simulator.data.synthetic; SD from
cohort.shift). The heart (the patient's traits) stays the same. "both": new placement and new class per stage.

Every patient and stage draws from its own seeded stream, (seed, patient, stage): the same config and seed give
the same records, and adding a stage does not change the earlier ones.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from simulator.config import ContinualConfig, RunConfig
from simulator.core.labels import CLASSES
from simulator.core.tensors import ECGTensors
from simulator.data.cohort import SyntheticCohortSpec, client_population
from simulator.data.preprocess import preprocess_records
from simulator.data.synthetic import (PLACEMENT_COLUMNS, WEIGHT_NAMES, Population, sample_labels,
                                      sample_labels_given, sample_traits, synthesize_records)
from simulator.datasets import preprocess_config
from simulator.errors import MuprivError


@dataclass(frozen=True)
class Stage:
    """One stage of one patient: the classes known by then (`classes`), those first seen here (`new`; stage 0: all
    of its classes) and the records. `known` of every record is True exactly for `classes`."""

    index: int
    classes: tuple[str, ...]
    new: tuple[str, ...]
    train: ECGTensors
    test: ECGTensors


@dataclass(frozen=True)
class PatientStream:
    patient: str
    stages: tuple[Stage, ...]


def stage_classes(c: ContinualConfig) -> list[tuple[str, ...]]:
    """The classes known at each stage, in CLASSES order."""
    if c.kind == "domain":
        return [CLASSES] * c.stages
    later = list(c.new_classes)
    out = []
    for s in range(c.stages):
        known = set(CLASSES) - set(later[s:])
        out.append(tuple(k for k in CLASSES if k in known))
    return out


def _stage_rng(seed: int, patient: int, stage: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 0xC047, int(patient), int(stage), int(purpose)])


def _labels(c: ContinualConfig, pop: Population, stage: int, known: tuple[str, ...], n: int,
            rng: np.random.Generator) -> np.ndarray:
    """(n, 6) multi-hot labels of one stage, with no class outside `known`."""
    w = pop.weight_vector().copy()
    for j, name in enumerate(CLASSES):
        if name not in known:
            w[1 + j] = 0.0  # WEIGHT_NAMES = ("none",) + CLASSES
    w /= w.sum()
    weights = np.broadcast_to(w, (n, len(WEIGHT_NAMES)))
    y = sample_labels(weights, pop.combo_prob, rng)
    if c.kind != "domain" and stage > 0:
        new = CLASSES.index(c.new_classes[stage - 1])
        rows = np.flatnonzero(rng.random(n) < c.new_share)
        if len(rows):
            y[rows] = sample_labels_given(np.full(len(rows), new), w, pop.combo_prob, rng)
    # the generator may add a second class of (tiny) weight; one not known yet is dropped before rendering
    y[:, [j for j, name in enumerate(CLASSES) if name not in known]] = 0.0
    return y


def build_streams(cfg: RunConfig, seed: int) -> list[PatientStream]:
    """Every patient's stages, preprocessed as [data] says for the model."""
    c = cfg.continual
    if c.kind in ("domain", "both") and cfg.cohort.shift <= 0:
        raise MuprivError(f"continual.kind = {c.kind!r} draws a new electrode placement per stage with SD proportional to "
                          f"cohort.shift, which is 0: set cohort.shift > 0 (e.g. 1.0)")
    pop = client_population(SyntheticCohortSpec(shift=cfg.cohort.shift))
    # render only the seconds the model sees (the centred crop of a longer record would be thrown away): half the time
    pop = replace(pop, device=replace(pop.device, seconds=max(2.0, cfg.data.length / cfg.data.fs)))
    pre = preprocess_config(cfg.data)
    known_per_stage = stage_classes(c)
    streams = []
    for k in range(c.patients):
        traits = sample_traits(1, pop, _stage_rng(seed, k, 0, 0))
        stages = []
        for s, known in enumerate(known_per_stage):
            rng = _stage_rng(seed, k, s, 1)
            t = traits
            if c.kind != "class" and s > 0:  # worn a new way: a fresh placement and contact gains, same heart
                fresh = sample_traits(1, pop, _stage_rng(seed, k, s, 2))
                t = traits.copy()
                for col in PLACEMENT_COLUMNS:
                    t[col] = fresh[col].to_numpy()
            n = c.train_records + c.test_records
            y = _labels(c, pop, s, known, n, rng)
            recs = synthesize_records(t, np.zeros(n, np.int64), y, pop.device, rng, source=f"continual-stage-{s}",
                                      record_ids=[f"P{k:03d}S{s}R{i:04d}" for i in range(n)], patient_ids=[f"P{k:03d}"])
            recs = preprocess_records(recs, pre)
            mask = np.array([name in known for name in CLASSES])
            recs = replace(recs, known=np.broadcast_to(mask, recs.labels.shape).copy())
            data = recs.tensors()
            new = known if s == 0 else tuple(x for x in known if x not in known_per_stage[s - 1])
            stages.append(Stage(s, known, new, data.subset(np.arange(c.train_records)),
                                data.subset(np.arange(c.train_records, n))))
        streams.append(PatientStream(f"patient-{k:03d}", tuple(stages)))
    return streams
