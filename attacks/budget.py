"""Attack budgets: how much compute each attack may spend. Presets "quick", "standard", "thorough".

Every number here is an upper bound the attacks respect; none of them changes what the attacker
observes. A failed reconstruction under a small budget shows as a large gradient-match residual,
which is why every attack reports its residual next to its scores.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from simulator.errors import MuprivError

ATTACKS: tuple[str, ...] = ("labels", "attribute", "features", "dlg", "ig", "multistep", "membership")


@dataclass(frozen=True)
class Budget:
    name: str = "quick"
    attacks: tuple[str, ...] = ATTACKS  # which attacks run (when applicable)
    max_rounds: int | None = 4  # rounds whose observations are attacked (the first, the last and evenly between);
    # the others are listed as skipped. None: every round
    max_targets: int | None = 4  # observations that get the inversion attacks (smallest batches first); None: all.
    # 4: one per quickstart patient, the fewest units that give a calibrated interval (attacks/calibrate.py)
    max_records: int | None = 1  # dummy records per inversion; None: one per record behind the update (num-examples)
    unroll: bool = False  # dlg and ig replay the client's real local training when it was not one SGD step
    # (multistep is then ig's duplicate and skipped); False: they use the one-step (FedSGD) view
    dlg_iters: int = 4  # L-BFGS outer steps (each up to `dlg_inner` iterations): the iteration cap
    dlg_inner: int = 8
    dlg_tol: float = 0.2  # converged: the best objective fell by less than this (relative) over the window
    dlg_window: int = 3  # outer steps in the convergence window
    dlg_restarts: int = 1
    dlg_seconds: float | None = 1.0  # time cap per inversion (all restarts); None: the iteration cap only
    ig_iters: int = 60  # Adam steps per restart: the iteration cap
    ig_restarts: int = 1
    ig_lr: float = 0.1  # Adam step in units of the prior's standard deviation (Geiping et al.)
    ig_decays: int = 3  # plateaus answered by a step decay (x0.1) before the run counts as converged
    ig_tol: float = 0.1  # ig and multistep: as dlg_tol
    ig_window: int = 20  # Adam steps in the convergence window (ig and multistep)
    ig_stages_hz: tuple[float, ...] = ()  # coarse to fine: IG first fits only the frequencies below each of these
    ig_basis: str = "whitened"  # "whitened" (the prior's spectrum), "fourier" or "samples"; see docs/attacks.md
    init_scale: float = 1.0  # sd of the Gaussian initialisation around the prior (restarts after the first), in prior sds
    ig_seconds: float | None = 1.0
    multistep_iters: int = 20
    multistep_restarts: int = 1
    multistep_seconds: float | None = 1.0
    max_unroll_steps: int = 8  # local steps unrolled (more are truncated, and said so)
    precision: str = "float32"  # "float64" matches below float32's resolution (slower)
    bandlimit_hz: float | None = 40.0  # inversions optimise only frequencies below this; None: every sample
    prior_samples: int = 48  # public records used for the population prior and label-count calibration
    tv_weight: float = 0.0  # IG 1-D total variation (mean |first difference| / prior sd); see docs/attacks.md
    spectral_weight: float = 0.0  # IG Gaussian prior with the public records' power spectrum
    period_weight: float = 0.0  # IG periodicity prior (1 - best autocorrelation at a heart-rate lag)
    einthoven_weight: float = 0.0  # IG limb-lead consistency prior (III = II - I, ...)
    attribute_shadow_clients: int = 256  # pseudo-clients simulated per round for the attribute classifier
    attribute_features: str = "motor-bias"  # which update entries the attribute classifier reads
    attribute_mode: str = "linear"  # "linear": per-record gradients at the round's weights; "exact": every step
    attribute_device_variants: int = 8  # electrode placements the pseudo-clients wear (0: the public device only)
    attribute_placement_deg: float = 30.0  # SD of the assumed lead-frame rotation per body axis
    attribute_contact_gain_sd: float = 0.4  # SD of the assumed log contact gain per electrode
    mi_shadows: int = 4  # LiRA shadow models per exposed model (0: no LiRA)
    mi_max_targets: int | None = 4  # client updates / aggregates that get LiRA (smallest batches first); None: all
    mi_max_rounds: int | None = 2  # rounds whose client updates and global models are membership targets (first, last,
    # evenly between); the final global model and the device models always are. None: every round
    mi_max_clients: int | None = 16  # membership covers the first this many clients (partition order): their client
    # updates, their device models, and their records as the members of a global model; each target's settings say
    # how many of how many. 16: every patient of the quickstart and the fair study, while 64-256 stay affordable.
    # None: every client
    mi_lira_steps: int | None = 50  # LiRA only for models whose shadow costs at most this many local steps to train
    # (quickstart: a client's update 3, mu-ft's device model 36, the final global model 144). None: every target

    def __post_init__(self) -> None:
        if self.precision not in ("float32", "float64"):
            raise MuprivError(f"budget precision must be float32 or float64, got {self.precision!r}")
        if self.ig_basis not in ("whitened", "fourier", "samples"):
            raise MuprivError(f"budget ig_basis must be whitened, fourier or samples, got {self.ig_basis!r}")
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
    "standard": Budget(name="standard", max_targets=2, max_records=8, unroll=True, dlg_iters=150, dlg_inner=20,
                       dlg_window=5, dlg_seconds=7.0, ig_iters=8000, ig_restarts=2, ig_window=100,
                       ig_stages_hz=(2.5, 5.0, 10.0, 20.0), ig_basis="fourier", ig_seconds=7.0, multistep_iters=8000,
                       multistep_seconds=7.0, max_unroll_steps=16, precision="float64", prior_samples=96,
                       attribute_shadow_clients=512, mi_shadows=8, mi_max_targets=8, mi_max_rounds=4, max_rounds=None,
                       mi_lira_steps=None, mi_max_clients=64),
    "thorough": Budget(name="thorough", max_targets=None, max_records=None, unroll=True, dlg_tol=0.05, dlg_iters=500,
                       dlg_inner=20, dlg_window=5, dlg_restarts=2, dlg_seconds=300.0, ig_tol=0.05, ig_iters=20000,
                       ig_restarts=3, ig_window=200, ig_stages_hz=(2.5, 5.0, 10.0, 20.0), ig_basis="fourier",
                       ig_seconds=300.0, multistep_iters=20000, multistep_restarts=2, multistep_seconds=300.0,
                       max_unroll_steps=64, precision="float64", prior_samples=256, attribute_shadow_clients=1024,
                       mi_shadows=16, mi_max_targets=None, mi_max_rounds=None, max_rounds=None, mi_lira_steps=None,
                       mi_max_clients=None),
}


def get_budget(budget: str | Budget) -> Budget:
    """A preset by name, or a Budget as is."""
    if isinstance(budget, Budget):
        return budget
    if budget not in PRESETS:
        raise MuprivError(f"unknown attack budget {budget!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[budget]
