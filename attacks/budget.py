"""Attack budgets: how much compute each attack may spend. Presets "quick", "standard", "thorough".

Every number here is an upper bound the attacks respect; none of them changes what the attacker
observes. A failed reconstruction under a small budget shows as a large gradient-match residual,
which is why every attack reports its residual next to its scores.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from simulator.errors import MuprivError

ATTACKS: tuple[str, ...] = ("labels", "features", "dlg", "ig", "multistep")


@dataclass(frozen=True)
class Budget:
    name: str = "quick"
    attacks: tuple[str, ...] = ATTACKS  # which attacks run (when applicable)
    max_targets: int | None = 1  # observations that get the inversion attacks (smallest batches first); None: all
    max_records: int = 1  # dummy records reconstructed per observation (the batch may hold more)
    dlg_iters: int = 4  # L-BFGS outer steps (each up to `dlg_inner` function evaluations)
    dlg_inner: int = 8
    dlg_restarts: int = 1
    ig_iters: int = 40  # Adam steps per restart
    ig_restarts: int = 1
    ig_lr: float = 0.01  # step size in units of the signal's value range
    multistep_iters: int = 20
    multistep_restarts: int = 1
    max_unroll_steps: int = 8  # local steps unrolled by the multi-step attack (more are truncated, and said so)
    precision: str = "float32"  # "float64" matches below float32's resolution (slower)
    bandlimit_hz: float | None = 40.0  # inversions optimise only frequencies below this; None: every sample
    prior_samples: int = 48  # public records used for the population prior and label-count calibration
    tv_weight: float = 0.0  # IG smoothness prior (mean squared first difference / variance); see docs/attacks.md
    period_weight: float = 0.0  # IG periodicity prior (1 - best autocorrelation at a heart-rate lag)
    einthoven_weight: float = 0.0  # IG limb-lead consistency prior (III = II - I, ...)

    def __post_init__(self) -> None:
        if self.precision not in ("float32", "float64"):
            raise MuprivError(f"budget precision must be float32 or float64, got {self.precision!r}")
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise MuprivError(f"unknown attack(s) {unknown} in the budget; attacks are {list(ATTACKS)}")

    def with_overrides(self, **kw: object) -> "Budget":
        unknown = [k for k in kw if k not in {f.name for f in dataclasses.fields(self)}]
        if unknown:
            raise MuprivError(f"unknown budget field(s) {unknown}; valid: {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **kw)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, Budget] = {
    "quick": Budget(),
    "standard": Budget(name="standard", max_targets=8, max_records=4, dlg_iters=15, dlg_inner=15, ig_iters=300,
                       ig_restarts=2, multistep_iters=100, max_unroll_steps=16, precision="float64", prior_samples=96),
    "thorough": Budget(name="thorough", max_targets=None, max_records=16, dlg_iters=40, dlg_inner=20, dlg_restarts=2,
                       ig_iters=1000, ig_restarts=3, multistep_iters=400, multistep_restarts=2, max_unroll_steps=64,
                       precision="float64", prior_samples=256),
}


def get_budget(budget: str | Budget) -> Budget:
    """A preset by name, or a Budget as is."""
    if isinstance(budget, Budget):
        return budget
    if budget not in PRESETS:
        raise MuprivError(f"unknown attack budget {budget!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[budget]
