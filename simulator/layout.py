"""The names inside a scheme run folder (one `simulate` cell, or a `run-scheme` output): one owner.

The schemes' runner writes these files and the attacker and the evaluation read them; both import the
names from here.

    scheme.json              what the scheme was, as the server knows it (SCHEME_FILE)
    ledger/                  the wire ledger with payloads (LEDGER_DIR)
    truth/<client>.npz       each client's training records: scoring only (TRUTH_DIR)
    truth/heldout/<client>.npz  the patient's evaluation-only records: the non-members of membership
                             inference, scoring only (HELDOUT_DIR)
    truth/source.npz         the server's own source records (public to the attacker)
    models/<client>.pt       each device's final personal model (MODELS_DIR): what a lost or published
                             device exposes; an attacker reads it only under that threat model
    attacks.csv              every attack's scores per observation (ATTACKS_FILE)
    leakage_units.csv        per unit (record, label guess, membership candidate) the attack's score and
                             the best null's (UNITS_FILE)
    leakage.csv              the calibrated gains, intervals and verdicts (LEAKAGE_FILE)
    failures.csv             every client failure: scheme, client, round, message type and the error (FAILURES_FILE;
                             header only when nothing failed); results.csv counts them per client (failed_rounds)
    audit.csv                dp-fedavg only: the DP audit's epsilon lower bounds, in attacks.csv's form
                             (AUDIT_FILE; kept apart because re-attacking a ledger does not redo it)
    rounds.csv               the per-round curves: every device's scores, cumulative bytes and epsilon after
                             every round or epoch (ROUNDS_FILE; `simulator.curves`)

A `simulate` run folder holds failures.csv, rounds.csv and the attack files (attacks.csv, leakage_units.csv,
leakage.csv) for all its cells together, with a seed column, and ``pretrained/seed-<s>.pt``, the pretrained model every scheme of that seed started from (PRETRAINED_DIR;
`--resume` reuses it rather than looking the cache up again).

A sweep folder (simulator.sweep) holds ``sweep.csv`` (SWEEP_FILE), ``points/<point>/`` (POINTS_DIR: a complete
`simulate` run folder per point) and, while it runs, ``sweep-plan.json`` (SWEEP_PLAN).

Run folders themselves are named ``<name>-<time>`` (``-2``, ``-3``, ... when that name is taken) and a
`simulate` run is assembled under ``.<name>-<time>.partial`` until it is complete. `claim_folder`
creates a folder exclusively (``mkdir`` fails if it exists), so two runs started in the same second
with the same name get two folders, and no run ever removes or reuses another run's folder.
"""
from __future__ import annotations

import errno
import itertools
import os
from pathlib import Path

SCHEME_FILE = "scheme.json"
LEDGER_DIR = "ledger"
TRUTH_DIR = "truth"
HELDOUT_DIR = "heldout"
SOURCE_FILE = "source.npz"
MODELS_DIR = "models"
ATTACKS_FILE = "attacks.csv"
UNITS_FILE = "leakage_units.csv"
LEAKAGE_FILE = "leakage.csv"
AUDIT_FILE = "audit.csv"
FAILURES_FILE = "failures.csv"
PRETRAINED_DIR = "pretrained"
ROUNDS_FILE = "rounds.csv"
# a sweep folder (simulator.sweep): its plan while it runs, its table of points, and one complete run per point
SWEEP_PLAN = "sweep-plan.json"
SWEEP_FILE = "sweep.csv"
POINTS_DIR = "points"
# failures.csv's columns (per scheme run; a simulate run folder adds a seed column in front)
FAILURE_COLUMNS = ("scheme", "client", "round", "message_type", "error")


def truth_file(run_dir: Path, client: str) -> Path:
    return Path(run_dir) / TRUTH_DIR / f"{client}.npz"


def heldout_file(run_dir: Path, client: str) -> Path:
    return Path(run_dir) / TRUTH_DIR / HELDOUT_DIR / f"{client}.npz"


def model_file(run_dir: Path, client: str) -> Path:
    return Path(run_dir) / MODELS_DIR / f"{client}.pt"


def pretrained_file(run_dir: Path, seed: int) -> Path:
    return Path(run_dir) / PRETRAINED_DIR / f"seed-{seed}.pt"


PARTIAL_SUFFIX = ".partial"


def partial_name(final_name: str) -> str:
    """The hidden name a `simulate` run folder has until every result is in place."""
    return f".{final_name}{PARTIAL_SUFFIX}"


def claim_folder(root: Path, base: str, partial: bool = False) -> tuple[str, Path]:
    """Create a new, empty run folder under ``root`` and return (its final name, the folder created).

    The final name is ``base``, or ``base-2``, ``base-3``, ... when a run already has that name (finished or
    still partial). With ``partial`` the folder created is the hidden ``.partial`` one. Creating the folder is
    the claim: ``mkdir`` is atomic, so of two processes asking at once exactly one gets each name."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for k in itertools.count(1):
        final = base if k == 1 else f"{base}-{k}"
        if (root / final).exists() or (root / partial_name(final)).exists():
            continue
        folder = root / (partial_name(final) if partial else final)
        try:
            folder.mkdir()
        except FileExistsError:  # another run claimed it between the check and the mkdir
            continue
        return final, folder
    raise AssertionError("unreachable")


def publish(partial: Path, final_name: str) -> Path:
    """Rename a complete ``.partial`` folder to its final name; if a folder of that name appeared meanwhile,
    the next free ``-2``, ``-3``, ... name is used instead of touching it."""
    partial = Path(partial)
    for k in itertools.count(1):
        final = partial.parent / (final_name if k == 1 else f"{final_name}-{k}")
        if final.exists():
            continue
        try:
            os.rename(partial, final)  # a non-empty folder of that name makes this fail instead of replacing it
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue
            raise
        return final
    raise AssertionError("unreachable")
