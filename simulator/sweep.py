"""Sweeps: one run folder holding a grid of settings, each point a complete run.

A setting is a dotted config key and a TOML value: ``train.lr=3e-3``,
``schemes.dp-fedavg.noise_multiplier=2``, ``schemes.run=["mu-ft","fedavg"]``. ``--set KEY=VALUE``
changes the config once; ``--sweep KEY=V1,V2,...`` (or a ``[sweep]`` table in the config, whose keys
are the dotted keys and whose values are lists) makes one point per value, and several axes make
their grid. Every point goes through the config's own parser, so an unknown key or a bad value is
the config's one-line error before anything runs.

The sweep folder::

    sweep.csv            one row per point: point, then one column per swept key (the value as TOML)
    config.toml          the base config (the points' own configs are in their folders)
    points/<point>/      a complete `simulate` run folder per point (results, ledger, attacks, report)
    results.csv          every point's results.csv with a leading `point` column
    leakage.csv          every point's calibrated leakage with a leading `point` column (when attacked)
    rounds.csv           every point's per-round curves, failures.csv every point's client failures, likewise
    report.md/.html      the trade-off across points (simulator/report/sweep_report.py)

Resume works per (point, scheme, seed) cell: a finished point is kept, an interrupted one is resumed
from its own cells, and a point not started yet starts.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from simulator.config import RunConfig, check_axes
from simulator.config_grid import Axis, Setting, grid, point_names, toml_text
from simulator.errors import MuprivError
from simulator.layout import POINTS_DIR, SWEEP_FILE, SWEEP_PLAN
from simulator.run_files import atomic_csv, atomic_text, toml_safe

# ---------------------------------------------------------------------------------------- running
@dataclass(frozen=True)
class SweepPlan:
    final_name: str
    axes: tuple[Axis, ...]
    data_path: str | None
    attack: bool
    attack_budget: str

    def to_json(self) -> str:
        return json.dumps({"final_name": self.final_name, "axes": [[a.key, list(a.values)] for a in self.axes],
                           "data_path": self.data_path, "attack": self.attack, "attack_budget": self.attack_budget},
                          indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> "SweepPlan":
        try:
            raw = json.loads(path.read_text())
            return cls(str(raw["final_name"]), tuple(Axis(str(k), tuple(v)) for k, v in raw["axes"]),
                       raw.get("data_path"), bool(raw["attack"]), str(raw["attack_budget"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise MuprivError(f"{path} is unreadable ({e}): this sweep cannot be resumed; start it again") from None


def is_sweep(run_dir: Path) -> bool:
    return (Path(run_dir) / SWEEP_PLAN).is_file() or (Path(run_dir) / SWEEP_FILE).is_file()


def simulate_sweep(cfg: RunConfig, axes: tuple[Axis, ...], runs_root: Path = Path("runs"), name: str = "sweep",
                   data_path: str | None = None, attack: bool | None = None, attack_budget: str | None = None,
                   on_step=None) -> Path:  # noqa: ANN001 - simulator.simulate.Say
    """Start a sweep folder and fill it; returns the finished folder."""
    work = start_sweep(cfg, axes, runs_root, name, data_path, attack, attack_budget)
    return _fill_sweep(work, cfg, SweepPlan.load(work / SWEEP_PLAN), on_step or (lambda _msg: None))


def start_sweep(cfg: RunConfig, axes: tuple[Axis, ...], runs_root: Path = Path("runs"), name: str = "sweep",
                data_path: str | None = None, attack: bool | None = None, attack_budget: str | None = None) -> Path:
    """Check every point, claim a new ``.partial`` sweep folder (simulator.layout: never one another run holds) and
    write its config and plan; `resume_sweep` fills it. Returns the folder, so a caller can name it if stopped."""
    import tomli_w  # pylint: disable=import-outside-toplevel

    from simulator import layout  # pylint: disable=import-outside-toplevel

    check_axes(cfg, axes)
    if attack_budget is not None:
        from attacks.budget import get_budget  # pylint: disable=import-outside-toplevel

        get_budget(attack_budget)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    final_name, work = layout.claim_folder(Path(runs_root), f"{name}-{stamp}", partial=True)
    plan = SweepPlan(final_name, axes, data_path, cfg.attacks.enabled if attack is None else attack,
                     attack_budget or cfg.attacks.budget)
    atomic_text(work / "config.toml", tomli_w.dumps(toml_safe(cfg.to_toml_dict())))
    atomic_text(work / SWEEP_PLAN, plan.to_json())
    return work


def resume_sweep(run_dir: Path, on_step=None) -> Path:  # noqa: ANN001
    from simulator.config import load_config  # pylint: disable=import-outside-toplevel

    run_dir = Path(run_dir)
    return _fill_sweep(run_dir, load_config(run_dir / "config.toml"), SweepPlan.load(run_dir / SWEEP_PLAN),
                       on_step or (lambda _msg: None))


def _fill_sweep(work: Path, cfg: RunConfig, plan: SweepPlan, say) -> Path:  # noqa: ANN001
    import tomli_w  # pylint: disable=import-outside-toplevel

    from simulator import simulate as sim  # pylint: disable=import-outside-toplevel

    points = grid(plan.axes)
    names = point_names(points)
    configs = check_axes(cfg, plan.axes)
    for i, (point, settings, pcfg) in enumerate(zip(names, points, configs)):
        final = work / POINTS_DIR / point
        if final.is_dir():
            continue  # finished earlier
        label = f"point {i + 1} of {len(points)} ({point}: " + ", ".join(f"{k}={toml_text(v)}" for k, v in settings) + ")"
        step = (lambda msg, _label=label: say(f"{_label}: {msg}"))
        partial = work / POINTS_DIR / f".{point}.partial"
        if partial.is_dir() and (partial / sim.PLAN_NAME).is_file():
            sim.resume(partial, on_step=step)
            continue
        partial.mkdir(parents=True, exist_ok=True)
        point_plan = sim.Plan(final_name=point, seeds=tuple(pcfg.study_seeds()), schemes=tuple(pcfg.schemes.run),
                              data_path=plan.data_path, attack=plan.attack, attack_budget=plan.attack_budget,
                              threads=torch.get_num_threads())
        atomic_text(partial / "config.toml", tomli_w.dumps(toml_safe(pcfg.to_toml_dict())))
        atomic_text(partial / sim.PLAN_NAME, json.dumps(dataclasses.asdict(point_plan), indent=2) + "\n")
        sim.resume(partial, on_step=step)
    say("assembling the sweep")
    _assemble_sweep(work, plan, names, points)
    (work / SWEEP_PLAN).unlink()
    from simulator import layout  # pylint: disable=import-outside-toplevel

    final_dir = layout.publish(work, plan.final_name)  # never over another run's folder
    say("writing the sweep report")
    from simulator.report.sweep_report import render_sweep_report  # pylint: disable=import-outside-toplevel

    render_sweep_report(final_dir)
    return final_dir


def _assemble_sweep(work: Path, plan: SweepPlan, names: list[str], points: list[tuple[Setting, ...]]) -> None:
    from simulator import layout  # pylint: disable=import-outside-toplevel

    table = pd.DataFrame([{"point": n, **{k: toml_text(v) for k, v in settings}} for n, settings in zip(names, points)])
    atomic_csv(table, work / SWEEP_FILE)
    for name in ("results.csv", layout.LEAKAGE_FILE, layout.ROUNDS_FILE, layout.FAILURES_FILE):
        parts = []
        for point in names:
            path = work / POINTS_DIR / point / name
            if path.is_file():
                frame = pd.read_csv(path)
                frame.insert(0, "point", point)
                parts.append(frame)
        if parts:
            atomic_csv(pd.concat(parts, ignore_index=True), work / name)
