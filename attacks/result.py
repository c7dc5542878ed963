"""What one attack produced on one observation (`AttackResult`), and what every attack is given (`AttackContext`).

Its own module so that the attack families (attacks.attribute, ...) and the suite that runs them (attacks.suite)
both import it, and neither imports the other in a circle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attacks.budget import Budget
from attacks.priors import PopulationPrior


@dataclass
class AttackResult:
    attack: str
    obs_index: int
    threat_model: str
    settings: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # "not applicable: ..." when it did not run
    residual: float = math.nan  # final matching residual (closed-form attacks: their fit residual)
    seconds: float = 0.0
    x: np.ndarray | None = None  # reconstructed records (n, length, leads)
    labels: np.ndarray | None = None  # record-level labels (n, classes) 0/1
    presence: np.ndarray | None = None  # (classes,) classes occurring among the records
    counts: np.ndarray | None = None  # (classes,) estimated positives
    features: np.ndarray | None = None  # (d_model,) pooled features
    encoder_input: np.ndarray | None = None  # (leads,) weighted mean input sample
    converged: bool | None = None  # iterative attacks: stopped on the convergence criterion (None: closed form)
    iterations: int = 0  # iterative attacks: iterations of the reported run
    stop_reason: str = ""  # "converged", "iteration cap", "time cap" or "not finite"

    @property
    def applicable(self) -> bool:
        return not self.note.startswith("not applicable")

    @property
    def skipped(self) -> bool:
        return self.note.startswith("skipped")


@dataclass
class AttackContext:
    prior: PopulationPrior
    budget: Budget
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where inversions compute
