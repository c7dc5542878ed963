"""`attack_run`: attack one scheme run directory and score it.

Stages, in this order:
  (a) observe: scheme.json + ledger/ -> Observations (the server's view only);
  (b) attack: every applicable attack on every observation, with the public prior and a budget;
  (c) score: only now is RUN_DIR/truth/<client>.npz read, to join the ground truth.

Run directory layout (written by the schemes): scheme.json, ledger/ (WireLedger.save), truth/<client>.npz
(each client's training records, for scoring only), optionally truth/source.npz (the server's own data,
usable as a public prior) and truth/population_mean.npz.
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import torch

from attacks.budget import Budget, get_budget
from attacks.calibrate import UNIT_COLUMNS
from attacks.disaggregate import KIND as DISAGGREGATED
from attacks.disaggregate import Disaggregation, disaggregation_report
from attacks.membership import MI_PRIOR_SAMPLES, MembershipTarget, prepare_membership, score_membership, spread_rounds
from attacks.observe import Observation, RunInfo, observe_run
from attacks.priors import PopulationPrior, population_prior
from attacks.score import Case, Scorer, load_truth
from attacks.result import AttackContext, AttackResult
from attacks.suite import run_attacks

Progress = Callable[[int, int, str], None]  # (done, total, what)

# The attacks run on one CPU thread. Their work is long chains of small ops (one update's few records):
# a second thread gains little, and when another process holds a core, OpenMP's waiting threads make it
# several times slower (measured on the quickstart's fedprox ledger with one other busy process:
# 28 s on 1 thread, 125 s on 2). A fixed count also keeps attack numbers the same on every machine.
ATTACK_THREADS = 1


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op torch threads, then restore the caller's count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class AttackReport:
    frame: pd.DataFrame  # long form: scheme, client, round, attack, threat_model, metric, value, settings, note
    units: pd.DataFrame  # attacks.calibrate.UNIT_COLUMNS: per unit, the attack's score and the best null's
    cases: list[Case]  # reconstructed vs true records, for plots
    info: RunInfo
    observations: list[Observation]
    results: list[AttackResult]
    prior: PopulationPrior


DISAGGREGATED_SUFFIX = "+disagg"


def _disaggregation_row(d: Disaggregation, observations: list[Observation]) -> AttackResult:
    """One attacks.csv row per disaggregation window: its rank, conditioning, residual and who was recovered."""
    last = d.rounds.observations[-1]
    i = next(k for k, o in enumerate(observations) if o is last)
    summary = d.summary()
    note = "" if d.observations else "not applicable: no client identifiable (" + "; ".join(
        sorted(set(d.skipped.values()))) + ")"
    return AttackResult("disaggregate", i, last.threat.name, settings=summary, residual=float(summary["residual"]),
                        note=note)


def observation_seed(seed: int, index: int) -> int:
    return (seed * 100_003 + index * 7_919) % (2**31)


def inversion_targets(observations: list[Observation], max_targets: int | None) -> set[int]:
    """Which observations get the expensive inversions: a budgeted attacker goes for the easiest victims
    first (fewest records behind the update, then earliest round, then ledger order)."""
    order = sorted(range(len(observations)), key=lambda i: (observations[i].num_examples or 10**9,
                                                            observations[i].round or 0, i))
    return set(order if max_targets is None else order[:max_targets])


def attack_observations(run_dir: Path, budget: str | Budget = "quick", seed: int = 0, progress: Progress | None = None,
                        device: torch.device | None = None
                        ) -> tuple[RunInfo, list[Observation], PopulationPrior, list[AttackResult]]:
    """Stages (a) and (b): everything the attacker does. Reads no client data. The inversions compute on `device`
    (default: the CPU); the closed-form attacks and the attribute attack's shadow updates stay on the CPU."""
    b = get_budget(budget)
    info, observations = observe_run(Path(run_dir))
    prior = population_prior(Path(run_dir), info.data, info.model.n_leads, b.prior_samples)
    windows = disaggregation_report(observations, info)  # [] unless the server sees aggregates only
    observations = observations + [o for d in windows for o in d.observations]
    rounds = spread_rounds((o.round for o in observations if o.kind != DISAGGREGATED), b.max_rounds)
    attacked = [i for i, o in enumerate(observations) if o.round is None or o.round in rounds or o.kind == DISAGGREGATED]
    attacked_set = set(attacked)
    targets = {attacked[k] for k in inversion_targets([observations[i] for i in attacked], b.max_targets)}
    results: list[AttackResult] = [_disaggregation_row(d, observations) for d in windows if d.rounds.observations]
    with torch.random.fork_rng(devices=[]), torch_threads(ATTACK_THREADS):
        for i, obs in enumerate(observations):
            if progress:
                progress(i, len(observations), obs.key)
            if i not in attacked_set:
                results.append(AttackResult("all", i, obs.threat.name, note=f"skipped: round {obs.round} is outside "
                                            f"the budget's {b.max_rounds} attacked rounds ({sorted(rounds)})"))
                continue
            ctx = AttackContext(prior, b, observation_seed(seed, i), device or torch.device("cpu"))
            found = run_attacks(obs, i, ctx, i in targets)
            if obs.kind == DISAGGREGATED:  # the same attacks on a recovered per-client update: kept apart
                for res in found:
                    res.attack = f"{res.attack}{DISAGGREGATED_SUFFIX}"
            results.extend(found)
    if progress:
        progress(len(observations), len(observations), "done")
    return info, observations, prior, results


def membership_targets(run_dir: Path, info: RunInfo, observations: list[Observation], budget: str | Budget,
                       seed: int = 0, device: torch.device | None = None) -> list[MembershipTarget]:
    """Stage (b) for membership inference: every model the run exposes, with its shadow models trained on
    public records (on `device`). Reads the ledger, scheme.json, RUN_DIR/models/ (the device-lost threat) and the server's
    source data; never a client's records."""
    b = get_budget(budget)
    if "membership" not in b.attacks:
        return []
    prior = population_prior(Path(run_dir), info.data, info.model.n_leads, MI_PRIOR_SAMPLES)
    with torch.random.fork_rng(devices=[]), torch_threads(ATTACK_THREADS):
        return prepare_membership(Path(run_dir), info, observations, prior, seed=seed, n_shadows=b.mi_shadows,
                                  max_targets=b.mi_max_targets, max_rounds=b.mi_max_rounds,
                                  lira_steps=b.mi_lira_steps, max_clients=b.mi_max_clients, device=device)


def _membership_frames(targets: list[MembershipTarget], run_dir: Path, device: torch.device | None = None
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The challenger's part: score the targets on members and non-members. Each row's attack is named
    <method>@<model kind> (a fedavg run exposes client updates, global models and device models: their
    scores must not pool); each per-record unit serves both membership quantities."""
    rows, units = score_membership(targets, Path(run_dir), device=device)
    kinds = [json.loads(s).get("kind", "") for s in rows["settings"]]
    rows["attack"] = [f"{a}@{k}" if k else a for a, k in zip(rows["attack"], kinds)]
    units = units.assign(attack=[f"{a}@{k}" for a, k in zip(units["attack"], units["kind"])], null=math.nan,
                         null_kind="")
    both = pd.concat([units.assign(quantity=q) for q in ("membership_auc", "membership_tpr1")], ignore_index=True)
    return rows, both[UNIT_COLUMNS]


def score_results(run_dir: Path, info: RunInfo, observations: list[Observation], results: list[AttackResult],
                  prior: PopulationPrior, seed: int = 0, membership: list[MembershipTarget] | None = None,
                  device: torch.device | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[Case]]:
    """Stage (c): join RUN_DIR/truth and score every result: (attacks.csv rows, units, cases)."""
    clients = tuple(dict.fromkeys([*info.clients, *(c for o in observations for c in o.clients)]))
    truth = load_truth(Path(run_dir), clients)
    scorer = Scorer(observations, truth, prior, seed)
    with torch_threads(ATTACK_THREADS):  # the scorer's products run on torch threads too
        frame = scorer.rows(results)
        units = scorer.units()
        if membership:
            mi_rows, mi_units = _membership_frames(membership, run_dir, device)
            frame = pd.concat([frame, mi_rows], ignore_index=True)
            units = pd.concat([units, mi_units], ignore_index=True)
    if truth.missing:
        frame.loc[frame["client"].isin(truth.missing), "note"] = "no truth file: not scored"
    return frame, units, scorer.cases


def attack_run_report(run_dir: Path, budget: str | Budget = "quick", seed: int = 0,
                      progress: Progress | None = None, device: torch.device | None = None) -> AttackReport:
    """Attack and score a scheme run directory; inversions and membership's models run on `device` (default: CPU)."""
    info, observations, prior, results = attack_observations(run_dir, budget, seed, progress, device)
    targets = membership_targets(run_dir, info, observations, budget, seed, device)
    frame, units, cases = score_results(run_dir, info, observations, results, prior, seed, membership=targets,
                                        device=device)
    return AttackReport(frame, units, cases, info, observations, results, prior)


def attack_run(run_dir: Path, budget: str | Budget = "quick", seed: int = 0) -> pd.DataFrame:
    """Attack a scheme run directory and return the long-form results table
    (scheme, client, round, attack, threat_model, metric, value, settings (JSON), note)."""
    return attack_run_report(run_dir, budget, seed).frame
