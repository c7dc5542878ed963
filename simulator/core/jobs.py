"""A device's local training as a job: trained on the spot, or handed to whoever batches this thread's jobs.

A device's code calls `run_training(job)` where it would call `train_phase`. Normally that is all it does. The
inline engine's batched backend (`simulator.engine.batching`) runs each client of a round in its own thread and
installs a handler there with `handing_jobs_to`; the call then blocks until the round's jobs have been trained
together (`simulator.core.stacked`) and returns this job's result. The device's code cannot tell the difference,
so the Flower message flow and the wire ledger stay exactly as they are.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from simulator.core.model import TDSSM
from simulator.core.phases import EpochLog, Phase, PhaseResult, train_phase
from simulator.core.tensors import ECGTensors


@dataclass
class TrainingJob:
    """One `train_phase` call without validation: the model trains in place, the last epoch is kept."""

    model: TDSSM
    phase: Phase
    data: ECGTensors
    seed: int
    penalty: Callable[[], torch.Tensor] | None = None
    on_epoch: Callable[[EpochLog], None] | None = None


@dataclass
class JobOutcome:
    """What a job gave: its result, and the wall time charged to it (a batch's time is shared equally)."""

    result: PhaseResult
    wall_s: float


Handler = Callable[[TrainingJob], JobOutcome]
_local = threading.local()
log = logging.getLogger(__name__)
_said: set[str] = set()  # reasons already logged in this process


def train_now(job: TrainingJob) -> JobOutcome:
    """The sequential path: `train_phase` on this job alone."""
    start = time.perf_counter()
    result = train_phase(job.model, job.phase, job.data, None, seed=job.seed, penalty=job.penalty,
                         on_epoch=job.on_epoch)
    return JobOutcome(result, time.perf_counter() - start)


def run_training(job: TrainingJob) -> JobOutcome:
    """Train `job`: here and now, or through the handler installed in this thread."""
    handler: Handler | None = getattr(_local, "handler", None)
    return train_now(job) if handler is None else handler(job)


@contextlib.contextmanager
def handing_jobs_to(handler: Handler) -> Iterator[None]:
    """Within the block, this thread's `run_training` calls go to `handler`."""
    saved = getattr(_local, "handler", None)
    _local.handler = handler
    try:
        yield
    finally:
        _local.handler = saved


def note_unbatched(reason: str) -> None:
    """Training that bypasses `run_training` says why (once per process) when this thread's jobs are being batched."""
    if getattr(_local, "handler", None) is not None:
        log_unbatched(reason)


def log_unbatched(reason: str) -> None:
    """Log, once per process, why some training did not run batched."""
    if reason not in _said:
        _said.add(reason)
        log.info("batch_clients: %s", reason)
