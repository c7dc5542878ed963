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
    audit.csv                dp-fedavg only: the DP audit's epsilon lower bounds, in attacks.csv's form
                             (AUDIT_FILE; kept apart because re-attacking a ledger does not redo it)

A `simulate` run folder holds the last three for all its cells together, with a seed column.
"""
from __future__ import annotations

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


def truth_file(run_dir: Path, client: str) -> Path:
    return Path(run_dir) / TRUTH_DIR / f"{client}.npz"


def heldout_file(run_dir: Path, client: str) -> Path:
    return Path(run_dir) / TRUTH_DIR / HELDOUT_DIR / f"{client}.npz"


def model_file(run_dir: Path, client: str) -> Path:
    return Path(run_dir) / MODELS_DIR / f"{client}.pt"
