"""The stage loop: a server-pretrained TDSSM goes to each patient's device, which trains stage after stage with
one memory method, and is scored on every stage's test records seen so far after each.

Per stage i the device trains [finetune] parts (µ-Fine-Tuning: encoder + decoder by default) for
continual.epochs on:
- finetune: the stage's new records only (the forgetting baseline);
- replay-all: every record seen so far (the upper bound; its memory is everything);
- random / herding / distill: the new records plus the memory kept after stage i-1, repeated so that it makes
  up about continual.replay_share of the records (a handful of kept records would otherwise hardly count);
- adaptive / fixed-large (model-size adaption, simulator.continual.widen): as continual.size_memory, on the
  stage's records less a validation share; adaptive starts small and widens when its trigger fires, fixed-large
  is the largest width from the start (pretrained at that width by the same plan).
After training it updates the memory from the candidates it holds (memory + new records) to the budget of the
records seen so far (simulator.continual.memory). The epoch trained last is kept: there is no validation split
(the device's new records are few, and every method is treated alike).

Every patient, method and stage trains from its own seed, the same for every method, so methods differ only
in what they train on.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from simulator.config import SIZE_METHODS, RunConfig
from simulator.continual.distill import distill
from simulator.continual.memory import Memory, budget, embeddings, select_herding, select_random
from simulator.continual.metrics import average_accuracy, summary
from simulator.continual.scenario import PatientStream, build_streams, stage_classes
from simulator.continual.widen import should_widen, widen
from simulator.core.cost import count_flops, phase_cost
from simulator.core.labels import CLASSES
from simulator.core.device import resolve_device
from simulator.core.model import TDSSM, count_parameters
from simulator.core.phases import Phase, evaluate, train_phase, train_plan
from simulator.core.tensors import ECGTensors
from simulator.data.preprocess import preprocess_records
from simulator.data.synthetic import Population, synthesize
from simulator.datasets import preprocess_config, split_tensors
from simulator.errors import MuprivError

# on_train(patient, method, stage, training set): what the device is about to train on, with each record's origin
# stage (tests check that no record of a later stage is ever in it)
TrainHook = Callable[[str, str, int, Memory], None]


@dataclass
class Results:
    """Long-form rows: `rows` (seed, patient, method, stage_trained, stage_tested, metric, value) are
    deterministic for a config and seed; `timings` (wall seconds) are not, so they are kept apart."""

    rows: list[dict] = field(default_factory=list)
    timings: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def pretrain(cfg: RunConfig, seed: int) -> tuple[TDSSM, float]:
    """The server's model: cfg.train's plan on synthetic source records; later-stage classes are not labelled
    (kind "class"/"both": the server model is trained for the conditions the device checks at first).
    Returns the model and its held-out source macro-AUROC."""
    c = cfg.continual
    pop = Population()
    pop = replace(pop, device=replace(pop.device, seconds=max(2.0, cfg.data.length / cfg.data.fs)))
    recs = preprocess_records(synthesize(c.pretrain_records, seed=seed, population=pop, id_prefix="SRC",
                                         patient_prefix="S"), preprocess_config(cfg.data))
    data = recs.tensors()
    first = stage_classes(c)[0]
    known = torch.tensor([name in first for name in CLASSES])
    data = ECGTensors(data.x, data.y * known, data.known & known)
    split = split_tensors(data, cfg.data.val_fraction, seed)
    if split is None:
        raise MuprivError(f"continual.pretrain_records = {c.pretrain_records} cannot be split with data.val_fraction = "
                          f"{cfg.data.val_fraction}; raise pretrain_records")
    train, val = split
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TDSSM(cfg.model)  # initialised on the CPU, then moved: the same weights on every device
    model.to(resolve_device(cfg.device))
    train_plan(model, cfg.train.plan(), {"source": train}, {"source": val}, seed=seed)
    return model.eval(), evaluate(model, val).macro_auroc


class _Flops:
    """Training FLOPs from simulator.core.cost: one counted step per batch size, times the steps."""

    def __init__(self, model: TDSSM, phase: Phase, length: int):
        self.model, self.phase, self.length = model, phase, length
        self.per_step: dict[int, int] = {}

    def step(self, batch: int) -> int:
        if batch not in self.per_step:
            self.per_step[batch] = phase_cost(self.model, self.phase, self.length, batch).step_flops
        return self.per_step[batch]

    def training(self, n: int) -> int:
        b = self.phase.batch_size
        full, rest = divmod(n, b)
        per_epoch = full * self.step(b) + (self.step(rest) if rest else 0)
        return per_epoch * self.phase.epochs


def training_set(method: str, new: Memory, memory: Memory | None, seen: list[Memory], replay_share: float) -> Memory:
    """What the device trains on at a stage (see the module docstring)."""
    if method == "replay-all":  # the new records first, as for every method
        return Memory.concat([new] + seen[:-1])
    if method == "finetune" or memory is None or len(memory) == 0:
        return new
    repeats = max(1, round(replay_share / (1 - replay_share) * len(new) / len(memory)))
    return Memory.concat([new] + [memory] * repeats)


def run_patient(cfg: RunConfig, stream: PatientStream, pretrained: TDSSM, method: str, seed: int, patient_index: int,
                results: Results, on_train: TrainHook | None = None) -> np.ndarray:
    """One device through every stage with one method; appends its rows and returns its accuracy matrix.

    "adaptive" and "fixed-large" keep continual.size_memory's memory and hold out data.val_fraction of each stage's
    new records as validation (the trigger's evidence; "fixed-large" holds them out too, so both train on the same
    records). "adaptive" starts from `pretrained` (model.d_model) and, after a stage's training, widens to the next
    of continual.widths and trains the stage again for as long as the trigger fires and widths remain."""
    c = cfg.continual
    T = len(stream.stages)
    sized = method in SIZE_METHODS
    memory_method = c.size_memory if sized else method
    phase = replace(cfg.finetune.phase(), epochs=c.epochs)
    model = copy.deepcopy(pretrained)
    flops = _Flops(model, phase, stream.stages[0].train.length)
    widths = list(c.widths) if method == "adaptive" else []
    a = np.full((T, T), math.nan)
    memory: Memory | None = None
    seen: list[Memory] = []
    seen_records = 0

    def row(i, j, metric, value, table=results.rows):
        table.append({"seed": seed, "patient": stream.patient, "method": method, "stage_trained": i,
                      "stage_tested": j, "metric": metric, "value": float(value)})

    for j, st in enumerate(stream.stages):  # the starting model on every stage: what each stage adds to
        row(-1, j, "macro_auroc", evaluate(pretrained, st.test).macro_auroc)
    for i, stage in enumerate(stream.stages):
        train_seed = seed * 100_000 + patient_index * 100 + i
        fit, val = stage.train, None
        if sized:
            split = split_tensors(stage.train, cfg.data.val_fraction, train_seed)
            fit, val = split if split is not None else (stage.train, None)
        new = Memory.of_records(fit, i)
        seen.append(new)
        seen_records += len(new)
        data = training_set(memory_method, new, memory, seen, c.replay_share)
        t0 = time.perf_counter()
        train_flops, widened = 0, 0
        while True:
            if on_train is not None:
                on_train(stream.patient, method, i, data)
            result = train_phase(model, phase, data.data, None, seed=train_seed + 10_000 * widened)
            train_flops += flops.training(len(data))
            val_auroc = evaluate(model, val).macro_auroc if val is not None else math.nan
            if not widths or not should_widen(val_auroc, [h.loss for h in result.history], c.widen_threshold, c.widen_plateau):
                break
            model = widen(model, widths.pop(0))
            flops = _Flops(model, phase, stage.train.length)
            widened += 1
        train_s = time.perf_counter() - t0
        row(i, "", "train_records", len(data))
        row(i, "", "train_flops", train_flops)
        if sized:
            row(i, "", "val_macro_auroc", val_auroc)
            row(i, "", "widened", widened)
        row(i, "", "width", model.cfg.d_model)
        row(i, "", "parameters", count_parameters(model)["total"])

        t0 = time.perf_counter()
        memory, select_flops = _update_memory(cfg, memory_method, method, model, memory, new, seen, seen_records, seed,
                                              patient_index, i, results, stream.patient)
        select_s = time.perf_counter() - t0
        row(i, "", "memory_records", len(memory) if memory is not None else 0)
        row(i, "", "memory_bytes", memory.nbytes if memory is not None else 0)
        row(i, "", "select_flops", select_flops)
        row(i, "", "train_select_s", train_s + select_s, results.timings)
        row(i, "", "select_s", select_s, results.timings)
        for j in range(i + 1):
            a[i, j] = evaluate(model, stream.stages[j].test).macro_auroc
            row(i, j, "macro_auroc", a[i, j])
        row(i, "", "avg_accuracy_so_far", average_accuracy(a, i))
    for metric, value in summary(a).items():
        row(T - 1, "", metric, value)
    return a


def _update_memory(cfg: RunConfig, method: str, label: str, model: TDSSM, memory: Memory | None, new: Memory,
                   seen: list[Memory], seen_records: int, seed: int, patient_index: int, stage: int, results: Results,
                   patient: str) -> tuple[Memory | None, int]:
    """The memory after a stage (`method`: the memory method; `label`: the method its rows are filed under), and the
    FLOPs its selection took on the device."""
    c = cfg.continual
    if method == "finetune":
        return None, 0
    if method == "replay-all":
        return Memory.concat(seen), 0
    candidates = new if memory is None else Memory.concat([memory, new])
    groups_seen = int(candidates.groups.any(dim=0).sum())
    size = budget(seen_records, groups_seen, c.memory_fraction, c.memory_records)
    rng = np.random.default_rng([int(seed), patient_index, stage, 0x5E1])
    if method == "random":
        return select_random(candidates, size, rng)[0], 0
    if method == "herding":
        work = count_flops(lambda: embeddings(model, candidates.data.x))
        return select_herding(candidates, size, model, rng)[0], work
    result = distill(candidates, size, cfg.model, c, stage, seed * 1000 + patient_index)
    for metric, value in (("distill_objective_before", result.objective_before), ("distill_objective_after", result.objective_after)):
        results.rows.append({"seed": seed, "patient": patient, "method": label, "stage_trained": stage, "stage_tested": "",
                             "metric": metric, "value": value})
    return result.memory, result.flops


def run_continual(cfg: RunConfig, on_step: Callable[[str], None] | None = None,
                  on_train: TrainHook | None = None) -> Results:
    """Every seed of the config: pretrain, build the patients' stages, run every method on every patient."""
    say = on_step or (lambda msg: None)
    results = Results()
    for seed in cfg.study_seeds():
        t0 = time.perf_counter()
        say(f"seed {seed}: pretraining on {cfg.continual.pretrain_records} source records")
        pretrained, source_auroc = pretrain(cfg, seed)
        results.rows.append({"seed": seed, "patient": "server", "method": "", "stage_trained": -1, "stage_tested": "",
                             "metric": "source_val_macro_auroc", "value": float(source_auroc)})
        results.timings.append({"seed": seed, "patient": "server", "method": "", "stage_trained": -1, "stage_tested": "",
                                "metric": "pretrain_s", "value": time.perf_counter() - t0})
        large = None
        if "fixed-large" in cfg.continual.methods:
            width = cfg.continual.widths[-1]
            say(f"seed {seed}: pretraining the fixed d_model-{width} model")
            large_cfg = replace(cfg, model=replace(cfg.model, d_model=width))
            large, large_auroc = pretrain(large_cfg, seed)
            results.rows.append({"seed": seed, "patient": "server", "method": "fixed-large", "stage_trained": -1,
                                 "stage_tested": "", "metric": "source_val_macro_auroc", "value": float(large_auroc)})
        say(f"seed {seed}: building {cfg.continual.patients} patients' stages")
        streams = build_streams(cfg, seed)
        for k, stream in enumerate(streams):
            for method in cfg.continual.methods:
                say(f"seed {seed}: {stream.patient}, {method}")
                start = large if method == "fixed-large" else pretrained
                run_patient(cfg, stream, start, method, seed, k, results, on_train)
    return results

