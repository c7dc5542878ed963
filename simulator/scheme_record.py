"""The vocabulary of scheme.json that both sides of the run-folder contract share (simulator.layout names the file).

The schemes declare what leaves the device with one of `OBSERVABLES` (baselines.registry), the runner writes it
into scheme.json, and the attacker keys its threat models on it (attacks.threat). This module is their one owner
and imports nothing, so attacks/ may depend on it (README, Layout).
"""
from __future__ import annotations

NOTHING = "nothing"
RAW = "raw records"
UPDATES = "per-client updates"
CLIPPED = "clipped per-client updates"
NOISED = "noised per-client updates"
AGGREGATE = "aggregate only"
OBSERVABLES: tuple[str, ...] = (NOTHING, RAW, UPDATES, CLIPPED, NOISED, AGGREGATE)
