"""Provenance: what a run folder's manifest.json records so that a result can be traced to its inputs.

The config hash, seeds, schemes, engine, torch device and attack settings; per seed the cohort (clients, record counts, a data
fingerprint) and the pretrained model every scheme started from (its phases, and whether one kept epoch 0); the
package versions, git commit and machine. `simulator.simulate` writes the per-seed facts when a seed first runs
(so a resumed run names the model the cache gave then) and the manifest when the run is assembled.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from simulator.config import RunConfig
from simulator.core.device import describe, resolve_device
from simulator.study import Study

PACKAGES = ("torch", "flwr", "opacus", "numpy", "pandas", "wfdb", "mupriv")


def manifest(cfg: RunConfig, plan: Any, work: Path) -> dict:
    """manifest.json of a run folder; ``plan`` is its simulator.simulate.Plan (seeds, schemes, attack settings)."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    studies = {}
    for seed in plan.seeds:
        facts = work / "work" / f"study-seed-{seed}.json"
        studies[str(seed)] = json.loads(facts.read_text()) if facts.is_file() else None
    return {
        "config_hash": cfg.hash(),
        "seed": cfg.seed,
        "seeds": list(plan.seeds),
        "schemes": list(plan.schemes),
        "engine": cfg.federation.engine,
        # which torch device produced the numbers (CUDA numbers are not bitwise the CPU's; simulator.core.device)
        "device": {"configured": cfg.device, **describe(resolve_device(cfg.device))},
        "attacks": {"enabled": plan.attack, "budget": plan.attack_budget, "run": list(cfg.attacks.run)},
        "data": plan.data_path or cfg.data.path or "synthetic",
        "data_fingerprints": {k: v["fingerprint"] for k, v in studies.items() if v},
        "studies": studies,
        "versions": versions,
        "git_commit": git_commit(),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def study_facts(study: Study, own: Path) -> dict:
    """The per-seed part of the manifest: clients, record counts, a data fingerprint, the checkpoint (its cache
    name, and ``own``: the run folder's copy every scheme of the seed started from)."""
    return {
        "clients": [c.id for c in study.clients],
        "source_train": len(study.source_train), "source_test": len(study.source_test),
        "source_holdout": len(study.source_holdout) if study.source_holdout is not None else 0,
        "source_scored_on": study.source_eval_name,  # what forgetting and the source score were measured on
        "client_records": {c.id: [len(c.train), len(c.test)] for c in study.clients},
        "fingerprint": fingerprint(study),
        "pretrained": {"cached": study.pretrain_cached, "checkpoint": study.pretrained_path.name, "run_copy": str(own),
                       "phases": study.pretrain_log},  # best_epoch 0: that phase changed nothing
    }


def fingerprint(study: Study) -> str:
    h = hashlib.sha256()
    extra = [study.source_holdout] if study.source_holdout is not None else []  # earlier runs' fingerprints stay as they were
    for t in [study.source_train, study.source_test, *(d for c in study.clients for d in (c.train, c.test)), *extra]:
        h.update(t.x.numpy().tobytes())
        h.update(t.y.numpy().tobytes())
    return h.hexdigest()[:16]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
