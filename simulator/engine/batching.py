"""The inline engine's batched client backend: a round's ClientApps run as usual, their local training together.

`run_together(calls)` runs each call (one ClientApp handling one message) in its own thread, but never two at
once: a baton passes from call to call in order, exactly as the sequential engine would run them, except that a
call which reaches its local training (`simulator.core.jobs.run_training`) hands the job over and yields the
baton. When every call has either finished or handed over a job, the jobs train together
(`simulator.core.stacked.train_stacked`, grouped by `stack_key`) and the calls resume in order, each until it
finishes or hands over its next job (FedRep trains twice per round). So every ClientApp still receives and
returns its own messages, and the work it does around training stays in the sequential order. A call that
resumes gets back the process-wide random streams (Python's, numpy's, torch's) it yielded with.

Jobs that cannot train together train alone with `train_phase`, and the reason is logged once: a group of one,
self-distillation, a penalty other than FedProx's. DP-SGD never hands over a job: it trains client by client.
"""
from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from simulator.core.jobs import JobOutcome, TrainingJob, handing_jobs_to, log_unbatched, train_now
from simulator.core.stacked import stack_key, train_stacked


@dataclass
class CallOutcome:
    """What one call gave: its return value or the exception it raised (with its traceback)."""

    value: Any = None
    error: BaseException | None = None


class _Call:
    """One call in its own thread, run only while it holds the baton."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.outcome = CallOutcome()
        self.job: TrainingJob | None = None
        self.job_outcome: JobOutcome | BaseException | None = None
        self.done = False
        self._go = threading.Semaphore(0)
        self._back = threading.Semaphore(0)
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def resume(self) -> None:
        """Give this call the baton; return when it finishes or hands over a job."""
        self._go.release()
        self._back.acquire()

    def _main(self) -> None:
        self._go.acquire()
        try:
            with handing_jobs_to(self._hand_over):
                self.outcome.value = self.fn()
        except BaseException as ex:  # pylint: disable=broad-exception-caught - returned to the engine as the reply
            self.outcome.error = ex
        finally:
            self.done = True
            self._back.release()

    def _hand_over(self, job: TrainingJob) -> JobOutcome:
        self.job, self.job_outcome = job, None
        own_random = _global_random_state()  # process-wide streams this call may be in the middle of
        self._back.release()  # yield the baton ...
        self._go.acquire()  # ... and wait until the job has trained
        _set_global_random_state(own_random)
        outcome, self.job = self.job_outcome, None
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome


def _global_random_state() -> tuple:
    """The process-wide random streams: Python's, numpy's and torch's (CPU) global generators."""
    return random.getstate(), np.random.get_state(), torch.random.get_rng_state()


def _set_global_random_state(state: tuple) -> None:
    """Give a resuming call back the streams it yielded with: code that seeds a global generator around its whole
    call (SecAgg+'s quantisation mod seeds numpy's) then draws as if it had run alone, as it would sequentially."""
    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.random.set_rng_state(state[2])


def run_together(calls: Sequence[Callable[[], Any]]) -> list[CallOutcome]:
    """Run `calls` in order, their local training batched across them; one outcome per call, in order."""
    runners = [_Call(fn) for fn in calls]
    waiting = runners
    while waiting:
        for runner in waiting:
            runner.resume()
        waiting = [r for r in waiting if not r.done]
        outcomes = train_jobs([r.job for r in waiting])  # type: ignore[misc]
        for runner, outcome in zip(waiting, outcomes):
            runner.job_outcome = outcome
    return [r.outcome for r in runners]


def train_jobs(jobs: Sequence[TrainingJob]) -> list[JobOutcome | BaseException]:
    """Train every job: those with equal `stack_key` together, the rest one by one. Outcomes in job order."""
    groups: dict[tuple, list[int]] = {}
    alone: list[tuple[int, str]] = []
    for i, job in enumerate(jobs):
        key, reason = stack_key(job)
        if key is None:
            alone.append((i, reason))
        else:
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        if len(members) == 1:
            alone.append((members[0], "no other client of the round trains the same phase on data of the same size"))
    outcomes: list[JobOutcome | BaseException | None] = [None] * len(jobs)
    for members in (m for m in groups.values() if len(m) > 1):
        for i, outcome in zip(members, _guarded(lambda ms=members: train_stacked([jobs[i] for i in ms]), len(members))):
            outcomes[i] = outcome
    for i, reason in sorted(alone):
        log_unbatched(f"a client trains alone: {reason}")
        outcomes[i] = _guarded(lambda i=i: [train_now(jobs[i])], 1)[0]
    return outcomes  # type: ignore[return-value]


def _guarded(train: Callable[[], list], n: int) -> list:
    """`train()`, or its exception for each of the n jobs (it becomes each client's error reply)."""
    try:
        return train()
    except Exception as ex:  # pylint: disable=broad-exception-caught
        return [ex] * n
