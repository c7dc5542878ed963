"""`mupriv simulate`: the whole comparison in one run folder.

Builds the cohort, pretrains once (cached), runs every configured scheme on the configured engine,
attacks each scheme's ledger, and writes one run folder. The folder is assembled under a hidden
".partial" name and renamed when complete, so an interrupted run never looks finished.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

import pandas as pd

from simulator.config import RunConfig
from simulator.runner import run_scheme, to_long
from simulator.study import build_study

PACKAGES = ("torch", "flwr", "opacus", "numpy", "pandas", "wfdb", "mupriv")


@dataclass
class SimulationResult:
    run_dir: Path
    results: pd.DataFrame
    attacks: pd.DataFrame | None


def manifest(cfg: RunConfig, study, schemes: list[str]) -> dict:  # noqa: ANN001 - Study
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "config_hash": cfg.hash(),
        "seed": cfg.seed,
        "schemes": schemes,
        "engine": cfg.federation.engine,
        "clients": [c.id for c in study.clients],
        "data": {"path": cfg.data.path or "synthetic", "source_train": len(study.source_train), "source_test": len(study.source_test),
                 "client_records": {c.id: [len(c.train), len(c.test)] for c in study.clients},
                 "fingerprint": _fingerprint(study)},
        "pretrained": {"cached": study.pretrain_cached, "checkpoint": study.pretrained_path.name},
        "versions": versions,
        "git_commit": _git_commit(),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def _fingerprint(study) -> str:  # noqa: ANN001
    import hashlib

    h = hashlib.sha256()
    for t in [study.source_train, study.source_test, *(d for c in study.clients for d in (c.train, c.test))]:
        h.update(t.x.numpy().tobytes())
        h.update(t.y.numpy().tobytes())
    return h.hexdigest()[:16]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def simulate(
    cfg: RunConfig,
    runs_root: Path = Path("runs"),
    name: str = "simulate",
    data_path: str | None = None,
    attack: bool = False,
    attack_budget: str = "quick",
    on_step: Callable[[str], None] | None = None,
) -> SimulationResult:
    import tomli_w  # pylint: disable=import-outside-toplevel

    say = on_step or (lambda _msg: None)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    final_dir = Path(runs_root) / f"{name}-{stamp}"
    work = Path(runs_root) / f".{name}-{stamp}.partial"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    say("building the cohort and pretraining (cached after the first run)")
    study = build_study(cfg, work / "work", data_path=data_path)
    schemes = list(cfg.schemes.run)
    long_parts, ledgers, attack_parts = [], [], []
    for name_ in schemes:
        say(f"running {name_}")
        run = run_scheme(study, name_, work / "work" / name_)
        scheme_dir = run.save(work / "schemes" / name_, study)
        long_parts.append(to_long(run.table, cfg.seed))
        frame = run.ledger.to_frame()
        frame.insert(0, "seed", cfg.seed)
        ledgers.append(frame)
        if attack:
            say(f"attacking {name_}'s ledger")
            attack_parts.append(_attack(scheme_dir, attack_budget, cfg.seed))
    results = pd.concat(long_parts, ignore_index=True)
    results.to_csv(work / "results.csv", index=False, float_format="%.10g")
    _maybe_parquet(results, work / "results.parquet")
    pd.concat(ledgers, ignore_index=True).to_csv(work / "ledger.csv", index=False)
    attacks = pd.concat(attack_parts, ignore_index=True) if attack_parts else None
    if attacks is not None:
        attacks.to_csv(work / "attacks.csv", index=False, float_format="%.10g")
    (work / "config.toml").write_text(tomli_w.dumps(_toml_safe(cfg.to_toml_dict())))
    (work / "manifest.json").write_text(json.dumps(manifest(cfg, study, schemes), indent=2, sort_keys=True) + "\n")
    shutil.rmtree(work / "work")  # client data copies and probes: scratch only
    os.replace(work, final_dir)  # complete: every result file is in place
    say("writing the report")
    _report(final_dir)  # re-renderable with `mupriv report`; written atomically
    return SimulationResult(final_dir, results, attacks)


def _attack(scheme_dir: Path, budget: str, seed: int) -> pd.DataFrame:
    from attacks.run import attack_run  # pylint: disable=import-outside-toplevel

    frame = attack_run(scheme_dir, budget=budget, seed=seed)
    if "seed" not in frame.columns:
        frame.insert(0, "seed", seed)
    return frame


def _report(run_dir: Path) -> None:
    from simulator.report.render import render_report  # pylint: disable=import-outside-toplevel

    render_report(run_dir)


def _maybe_parquet(frame: pd.DataFrame, path: Path) -> None:
    try:
        import pyarrow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        return
    frame.to_parquet(path, index=False)


def _toml_safe(value):  # noqa: ANN001, ANN202 - TOML has no None and no tuples
    if isinstance(value, dict):
        return {k: _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_safe(v) for v in value]
    return value
