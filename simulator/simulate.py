"""`mupriv simulate`: the whole comparison in one run folder.

For each study seed: build the cohort, pretrain once (cached), then run every configured scheme on
the configured engine and attack its ledger. Each (seed, scheme) pair is a *cell* written to
``schemes/<scheme>/seed-<seed>/`` and marked done last, so an interrupted run can be finished with
``--resume`` without redoing finished cells. The folder is assembled under a hidden ``.partial`` name
and renamed when every cell is done, so an unfinished run never looks finished; simulator.layout makes
both names unique, so runs started at the same time never share or remove each other's folder.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from simulator import layout
from simulator.atomic import atomic_write
from simulator.config import RunConfig, load_config
from simulator.curves import curves_long
from simulator.errors import MuprivError
from simulator.provenance import manifest, study_facts
from simulator.run_files import atomic_csv, atomic_text, merge_cells, toml_safe, write_leakage
from simulator.runner import run_scheme, save_truth, to_long
from simulator.study import Study, build_study

PLAN_NAME = "plan.json"
DONE_MARK = ".done"
# Measured, not computed: kept out of results.csv so that the same config and seed give the same bytes.
TIMING_METRICS = ("wall_s",)

Say = Callable[[str], None]


@dataclass
class SimulationResult:
    run_dir: Path
    results: pd.DataFrame
    attacks: pd.DataFrame | None


@dataclass(frozen=True)
class Plan:
    """What a run folder is being filled with; saved as plan.json so that --resume can finish it."""

    final_name: str  # the folder's name once complete
    seeds: tuple[int, ...]
    schemes: tuple[str, ...]
    data_path: str | None
    attack: bool
    attack_budget: str
    threads: int | None = None  # torch threads the run started with: --resume uses the same (float sum order)

    @classmethod
    def load(cls, path: Path) -> "Plan":
        try:
            raw = json.loads(path.read_text())
            threads = raw.get("threads")
            return cls(str(raw["final_name"]), tuple(int(s) for s in raw["seeds"]), tuple(map(str, raw["schemes"])),
                       raw.get("data_path"), bool(raw["attack"]), str(raw["attack_budget"]),
                       None if threads is None else int(threads))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise MuprivError(f"{path} is unreadable ({e}): this run cannot be resumed; start it again") from None


def cell_dir(run_dir: Path, scheme: str, seed: int) -> Path:
    return Path(run_dir) / "schemes" / scheme / f"seed-{seed}"


def cell_done(run_dir: Path, scheme: str, seed: int) -> bool:
    return (cell_dir(run_dir, scheme, seed) / DONE_MARK).is_file()


# ---------------------------------------------------------------------------------------- entry points
def simulate(
    cfg: RunConfig,
    runs_root: Path = Path("runs"),
    name: str = "simulate",
    data_path: str | None = None,
    attack: bool | None = None,
    attack_budget: str | None = None,
    on_step: Say | None = None,
) -> SimulationResult:
    """Start a new run folder and fill it. ``attack``/``attack_budget`` override ``cfg.attacks``."""
    work = start(cfg, runs_root, name, data_path, attack, attack_budget)
    return _fill(work, cfg, Plan.load(work / PLAN_NAME), on_step or (lambda _msg: None))


def start(
    cfg: RunConfig,
    runs_root: Path = Path("runs"),
    name: str = "simulate",
    data_path: str | None = None,
    attack: bool | None = None,
    attack_budget: str | None = None,
) -> Path:
    """Claim a new ``.partial`` run folder (simulator.layout: never one another run holds) and write its config
    and plan; `resume` then fills it. Returns the folder, so that a caller can name it if the run is stopped."""
    import tomli_w  # pylint: disable=import-outside-toplevel

    if attack_budget is not None:
        from attacks.budget import get_budget  # pylint: disable=import-outside-toplevel

        get_budget(attack_budget)  # a bad name fails before anything runs
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    final_name, work = layout.claim_folder(Path(runs_root), f"{name}-{stamp}", partial=True)
    plan = Plan(final_name=final_name, seeds=tuple(cfg.study_seeds()), schemes=tuple(cfg.schemes.run),
                data_path=data_path, attack=cfg.attacks.enabled if attack is None else attack,
                attack_budget=attack_budget or cfg.attacks.budget, threads=torch.get_num_threads())
    atomic_text(work / "config.toml", tomli_w.dumps(toml_safe(cfg.to_toml_dict())))
    atomic_text(work / PLAN_NAME, json.dumps(asdict(plan), indent=2) + "\n")
    return work


def resume(run_dir: Path, on_step: Say | None = None) -> SimulationResult:
    """Finish an interrupted run folder: only the (scheme, seed) cells not yet done are run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MuprivError(f"{run_dir} does not exist: pass the .partial folder an interrupted `mupriv simulate` left in runs/")
    if not (run_dir / PLAN_NAME).is_file():
        if (run_dir / "results.csv").is_file():
            raise MuprivError(f"{run_dir} is a finished run: nothing to resume (re-render it with `mupriv report {run_dir}`)")
        raise MuprivError(f"{run_dir / PLAN_NAME} is missing: {run_dir} is not a run folder started by `mupriv simulate`")
    cfg = load_config(run_dir / "config.toml")
    return _fill(run_dir, cfg, Plan.load(run_dir / PLAN_NAME), on_step or (lambda _msg: None))


def attack_run_folder(run_dir: Path, budget: str, on_step: Say | None = None,
                      device: torch.device | None = None) -> pd.DataFrame:
    """Attack every (scheme, seed) cell of a finished run folder again (e.g. with a bigger budget, on a GPU
    `device`): rewrites each cell's attacks.csv and plots, the folder's attacks.csv and plots/, and the report.
    The device is this call's, not the run's config's: a run made on a GPU can be re-attacked on a laptop."""
    from attacks.budget import get_budget  # pylint: disable=import-outside-toplevel

    get_budget(budget)
    say = on_step or (lambda _msg: None)
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.toml")
    cells = sorted(p.parent for p in (run_dir / "schemes").glob("*/seed-*/scheme.json"))
    if not cells:
        raise MuprivError(f"{run_dir / 'schemes'} holds no scheme runs: pass a run folder written by `mupriv simulate`")
    for cell in cells:
        seed = int(cell.name.removeprefix("seed-"))
        say(f"seed {seed}: attacking {cell.parent.name}'s ledger ({budget} budget)")
        shutil.rmtree(cell / "plots", ignore_errors=True)
        _attack_cell(cell, cfg, budget, seed, device)
    attacks = pd.concat([pd.read_csv(c / name) for c in cells for name in (layout.ATTACKS_FILE, layout.AUDIT_FILE)
                         if (c / name).is_file()], ignore_index=True)
    atomic_csv(attacks, run_dir / layout.ATTACKS_FILE)
    write_leakage(run_dir, cells)
    shutil.rmtree(run_dir / "plots", ignore_errors=True)
    schemes = tuple(dict.fromkeys(c.parent.name for c in cells))
    seeds = tuple(sorted({int(c.name.removeprefix("seed-")) for c in cells}))
    _collect_plots(run_dir, Plan("", seeds, schemes, None, True, budget))
    say("writing the report")
    _report(run_dir)
    return attacks


# ---------------------------------------------------------------------------------------- the cells
def _fill(work: Path, cfg: RunConfig, plan: Plan, say: Say) -> SimulationResult:
    total = len(plan.seeds) * len(plan.schemes)
    done = sum(cell_done(work, s, seed) for seed in plan.seeds for s in plan.schemes)
    if done:
        say(f"resuming: {done} of {total} (scheme, seed) cells already done")
    threads = torch.get_num_threads()
    if plan.threads and plan.threads != threads:
        say(f"running on {plan.threads} torch thread(s), as this run started (this process had {threads})")
        torch.set_num_threads(plan.threads)
    progress = Progress(total, done, say)
    try:
        for seed in plan.seeds:
            pending = [s for s in plan.schemes if not cell_done(work, s, seed)]
            if pending:
                _fill_seed(work, replace(cfg, seed=seed), seed, pending, plan, progress)
        return _assemble(work, cfg, plan, say)
    finally:
        torch.set_num_threads(threads)


class Progress:
    """The console's "cell 7 of 30, about 12 min left": what this process spent so far (pretraining included)
    per cell it finished, times the cells left. A say-function with a prefix; the run folder never sees it."""

    def __init__(self, total: int, done: int, say: Say) -> None:
        self.total, self.done, self.say = total, done, say
        self.finished_here = 0
        self.started = time.monotonic()

    def cell_done(self) -> None:
        self.done += 1
        self.finished_here += 1

    def __call__(self, msg: str) -> None:
        eta = ""
        if self.finished_here:
            left = (time.monotonic() - self.started) / self.finished_here * (self.total - self.done)
            eta = f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left"
        self.say(f"cell {min(self.done + 1, self.total)} of {self.total}{eta}: {msg}")


def _fill_seed(work: Path, cfg: RunConfig, seed: int, pending: list[str], plan: Plan, say: Say) -> None:
    """The cohort and the pretrained model of one seed, then its pending cells. The run keeps its own copy of the
    pretrained model (pretrained/seed-<s>.pt): a resumed run starts every remaining scheme from that one, never
    from a second model the cache would key differently (another thread count, another code version)."""
    own = layout.pretrained_file(work, seed)
    facts = work / "work" / f"study-seed-{seed}.json"
    if own.is_file():
        say(f"seed {seed}: building the cohort; the pretrained model is this run's own ({own.relative_to(work)})")
        study = build_study(cfg, work / "work" / f"seed-{seed}", data_path=plan.data_path, pretrained=own)
    else:
        say(f"seed {seed}: building the cohort and pretraining (cached after the first run)")
        study = build_study(cfg, work / "work" / f"seed-{seed}", data_path=plan.data_path)
        _link_or_copy(study.pretrained_path, own)
    for phase in study.unchanged_phases():
        say(f"seed {seed}: pretraining's {phase} phase kept epoch 0 (no epoch beat the model it started from "
            f"on validation): it changed nothing")
    truth = save_truth(study, work / "work" / f"seed-{seed}" / "truth")
    if not facts.is_file():  # written when the seed first ran: it names the model the cache gave then
        atomic_text(facts, json.dumps(study_facts(study, own.relative_to(work)), indent=2))
    for scheme in pending:
        _run_cell(work, study, scheme, seed, truth, plan, say)
        if isinstance(say, Progress):
            say.cell_done()


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        atomic_write(dst, Path(src).read_bytes())


def _run_cell(work: Path, study: Study, scheme: str, seed: int, truth: Path, plan: Plan, say: Say) -> None:
    cell = cell_dir(work, scheme, seed)
    if cell.exists():  # half-written by an interrupted run
        shutil.rmtree(cell)
    say(f"seed {seed}: running {scheme}")
    run = run_scheme(study, scheme, work / "work" / f"seed-{seed}" / scheme, curves=study.config.report.curves)
    run.save(cell, study, truth_from=truth)
    if plan.attack and study.config.attacks.audit and scheme == "dp-fedavg" and run.setup.params.get("mode") == "dp-sgd":
        say(f"seed {seed}: auditing dp-fedavg's DP-SGD with canaries")
        atomic_csv(_audit(study, run, seed), cell / layout.AUDIT_FILE)
    long = to_long(run.table, seed)
    timing = long["metric"].isin(TIMING_METRICS)
    atomic_csv(long[~timing], cell / "results.csv")
    atomic_csv(long[timing], cell / "timings.csv")
    if run.curves is not None:
        atomic_csv(curves_long(run.curves, seed), cell / layout.ROUNDS_FILE)
    if plan.attack:
        say(f"seed {seed}: attacking {scheme}'s ledger ({plan.attack_budget} budget)")
        _attack_cell(cell, study.config, plan.attack_budget, seed, study.device)
    (cell / DONE_MARK).write_text("")
    shutil.rmtree(work / "work" / f"seed-{seed}" / scheme, ignore_errors=True)  # probes: scratch only


def _audit(study: Study, run, seed: int) -> pd.DataFrame:  # noqa: ANN001 - simulator.runner.SchemeRun
    """The one-run DP audit (attacks/audit.py) of the device with the fewest records (the largest sample rate,
    hence the largest epsilon), with the same DP parameters, steps and pretrained start: white-box gradient
    canaries and flipped-label public records (the server's held-out source records)."""
    from attacks.audit import DPSGDConfig, audit_dp_sgd, audit_rows  # pylint: disable=import-outside-toplevel
    from attacks.run import ATTACK_THREADS, torch_threads  # pylint: disable=import-outside-toplevel

    dp = DPSGDConfig.from_setup(run.setup)
    model = study.pretrained()
    client = min(study.clients, key=lambda c: (len(c.train), c.id))
    rows = []
    with torch_threads(ATTACK_THREADS):
        for canaries, public in (("gradient", None), ("input", study.source_test)):
            for res in audit_dp_sgd(model.cfg, model.state_dict(), client.train, public, dp, canaries, seed=seed):
                rows += audit_rows(res, client=client.id)
    frame = pd.DataFrame(rows)
    frame.insert(0, "seed", seed)
    return frame


def _attack_cell(cell: Path, cfg: RunConfig, budget: str, seed: int, device: torch.device | None = None) -> None:
    """attacks.csv and the reconstructions' plots of one cell; the attacker reads scheme.json + ledger/ only.
    Inversions and membership's models compute on `device` (default: the CPU)."""
    from attacks.budget import get_budget  # pylint: disable=import-outside-toplevel
    from attacks.plots import plot_case  # pylint: disable=import-outside-toplevel
    from attacks.run import attack_run_report  # pylint: disable=import-outside-toplevel

    chosen = get_budget(budget).with_overrides(attacks=tuple(cfg.attacks.run))
    report = attack_run_report(cell, chosen, seed, device=device)
    for frame, name in ((report.frame, layout.ATTACKS_FILE), (report.units, layout.UNITS_FILE)):
        if "seed" not in frame.columns:
            frame.insert(0, "seed", seed)
        atomic_csv(frame, cell / name)
    (cell / "plots").mkdir(exist_ok=True)
    for tag, case in _example_cases(report.cases).items():
        plot_case(case, cell / "plots" / f"{tag}.png", f"{tag} ({case.attack})", report.prior.fs)


def _example_cases(cases: list) -> dict:  # noqa: ANN001 - attacks.score.Case
    """The best reconstruction of the scheme (by Pearson r, over every waveform attack) and the median
    one of the same attack: what the report shows as examples."""
    import math  # pylint: disable=import-outside-toplevel

    waves = [c for c in cases if c.attack != "raw" and math.isfinite(c.r)]
    if not waves:
        return {}
    best = max(waves, key=lambda c: c.r)
    pool = sorted((c for c in waves if c.attack == best.attack), key=lambda c: c.r)
    return {"best": best, "median": pool[(len(pool) - 1) // 2]}


# ---------------------------------------------------------------------------------------- assembly
def _assemble(work: Path, cfg: RunConfig, plan: Plan, say: Say) -> SimulationResult:
    cells = [(seed, s, cell_dir(work, s, seed)) for seed in plan.seeds for s in plan.schemes]
    results, attacks = merge_cells(work, cells)
    _collect_plots(work, plan)
    atomic_text(work / "manifest.json", json.dumps(manifest(cfg, plan, work), indent=2, sort_keys=True) + "\n")
    shutil.rmtree(work / "work", ignore_errors=True)  # client data copies and probes: scratch only
    (work / PLAN_NAME).unlink()
    final_dir = layout.publish(work, plan.final_name)  # complete: every result file is in place
    say("writing the report")
    _report(final_dir)  # re-renderable with `mupriv report`; written atomically
    return SimulationResult(final_dir, results, attacks)


def _collect_plots(work: Path, plan: Plan) -> None:
    """plots/<scheme>-best.png and -median.png from the first seed, which the report embeds."""
    plots = work / "plots"
    for scheme in plan.schemes:
        for png in sorted((cell_dir(work, scheme, plan.seeds[0]) / "plots").glob("*.png")):
            plots.mkdir(exist_ok=True)
            shutil.copy2(png, plots / f"{scheme}-{png.name}")


def _report(run_dir: Path) -> None:
    from simulator.report.render import render_report  # pylint: disable=import-outside-toplevel

    render_report(run_dir)
