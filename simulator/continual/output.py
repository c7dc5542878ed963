"""A continual run folder: continual.csv, timings.csv, config.toml, continual.png and continual.md.

    continual.csv   long form: seed, patient, method, stage_trained, stage_tested, metric, value. macro_auroc rows
                    are the accuracy matrix (stage_trained -1 = the pretrained model before any stage); rows with an
                    empty stage_tested are per stage (train_records, train_flops, memory_records, memory_bytes,
                    select_flops, avg_accuracy_so_far, distill_objective_before/after) or, at the last stage, the
                    run's scores (avg_accuracy, bwt, forgetting). The same config and seed give the same file.
    timings.csv     the same form: measured wall seconds (train_select_s, select_s, pretrain_s); machine-dependent.
    continual.png   average accuracy after each stage and stage 0's accuracy over the stages, one line per method.
    continual.md    the report: per method mean and 95% interval over (seed, patient) units, paired differences.

Plots use matplotlib's object API on the Agg canvas and omit the PNG 'Software' entry, as simulator.report does.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simulator.atomic import atomic_write
from simulator.config import SIZE_METHODS, RunConfig
from simulator.config_toml import config_toml
from simulator.continual.distill import EVAL_ENCODERS
from simulator.continual.run import Results
from simulator.report.fmt import fmt_bytes, fmt_si
from simulator.report.tables import t_interval

COLUMNS = ["seed", "patient", "method", "stage_trained", "stage_tested", "metric", "value"]
RESULTS_FILE, TIMINGS_FILE, PLOT_FILE, REPORT_FILE = "continual.csv", "timings.csv", "continual.png", "continual.md"


def write_run(folder: Path, cfg: RunConfig, results: Results) -> None:
    folder = Path(folder)
    rows = pd.DataFrame(results.rows, columns=COLUMNS)
    timings = pd.DataFrame(results.timings, columns=COLUMNS)
    atomic_write(folder / "config.toml", config_toml(cfg))
    atomic_write(folder / RESULTS_FILE, rows.to_csv(index=False, float_format="%.6g"))
    atomic_write(folder / TIMINGS_FILE, timings.to_csv(index=False, float_format="%.4g"))
    atomic_write(folder / PLOT_FILE, plot(rows, list(cfg.continual.methods)))
    atomic_write(folder / REPORT_FILE, report(rows, timings, cfg))


def _units(rows: pd.DataFrame, metric: str, stage=None) -> pd.DataFrame:
    """metric per (seed, patient, method), at `stage` (default: any; the run scores exist at the last stage only)."""
    sel = rows[rows["metric"] == metric]
    if stage is not None:
        sel = sel[sel["stage_trained"] == stage]
    return sel


def _per_unit(rows: pd.DataFrame, metric: str, how: str = "last") -> pd.Series:
    """One value per (method, seed, patient): the last stage's, or the sum over stages."""
    sel = rows[(rows["metric"] == metric) & (rows["patient"] != "server")]
    if how == "sum":
        return sel.groupby(["method", "seed", "patient"])["value"].sum()
    last = sel["stage_trained"].max()
    return sel[sel["stage_trained"] == last].groupby(["method", "seed", "patient"])["value"].mean()


def _stat(values) -> str:
    """mean [95% interval] of the finite values; the mean alone with fewer than two."""
    v = [float(x) for x in values if math.isfinite(float(x))]
    if not v:
        return "–"
    lo, hi = t_interval(v)
    return f"{np.mean(v):.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) else "")


def summary_table(rows: pd.DataFrame, timings: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Per method: the scores' mean [95% interval] over (seed, patient) units and the mean costs."""
    scores = {m: _per_unit(rows, m) for m in ("avg_accuracy", "bwt", "forgetting")}
    memory = _per_unit(rows, "memory_bytes")
    train = _per_unit(rows, "train_flops", "sum")
    select = _per_unit(rows, "select_flops", "sum")
    wall = _per_unit(timings, "train_select_s", "sum") if not timings.empty else pd.Series(dtype=float)
    out = []
    for m in methods:
        out.append({"method": m,
                    **{k: _stat(v.get(m, pd.Series(dtype=float)).tolist()) for k, v in scores.items()},
                    "memory kept": fmt_bytes(float(memory.get(m, pd.Series([0.0])).mean())),
                    "training FLOPs": fmt_si(float(train.get(m, pd.Series([0.0])).mean())),
                    "selection FLOPs": fmt_si(float(select.get(m, pd.Series([0.0])).mean())),
                    "wall time": f"{float(wall.get(m, pd.Series([math.nan])).mean()):.1f} s"})
    return pd.DataFrame(out)


def size_table(rows: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Per size method: scores, the width and parameters it ended with, how often it widened, its training FLOPs."""
    widened = _per_unit(rows, "widened", "sum")
    out = []
    for m in methods:
        out.append({"method": m, "avg_accuracy": _stat(_per_unit(rows, "avg_accuracy").get(m, pd.Series(dtype=float)).tolist()),
                    "forgetting": _stat(_per_unit(rows, "forgetting").get(m, pd.Series(dtype=float)).tolist()),
                    "final d_model": f"{_per_unit(rows, 'width').get(m, pd.Series([math.nan])).mean():.0f}",
                    "parameters": f"{_per_unit(rows, 'parameters').get(m, pd.Series([math.nan])).mean():,.0f}",
                    "widenings": f"{widened.get(m, pd.Series([0.0])).mean():.2f}",
                    "training FLOPs": fmt_si(float(_per_unit(rows, "train_flops", "sum").get(m, pd.Series([0.0])).mean()))})
    return pd.DataFrame(out)


def paired(rows: pd.DataFrame, a: str, b: str, metric: str) -> str:
    """a − b on `metric`, paired by (seed, patient): mean [95% interval]."""
    v = _per_unit(rows, metric)
    if a not in v.index.get_level_values(0) or b not in v.index.get_level_values(0):
        return "–"
    d = (v.loc[a] - v.loc[b]).dropna()
    return _stat(d.tolist()) if len(d) else "–"


def _markdown(table: pd.DataFrame) -> str:
    head = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    return head + "".join("| " + " | ".join(str(x) for x in r) + " |\n" for r in table.itertuples(index=False))


def report(rows: pd.DataFrame, timings: pd.DataFrame, cfg: RunConfig) -> str:
    c = cfg.continual
    methods = list(c.methods)
    units = rows[rows["patient"] != "server"][["seed", "patient"]].drop_duplicates()
    src = rows[(rows["metric"] == "source_val_macro_auroc") & (rows["method"] == "")]["value"]
    lines = [
        "# Continual learning on the device",
        "",
        f"kind `{c.kind}`, {c.stages} stages, {c.train_records} training and {c.test_records} test records per patient and "
        f"stage; {c.patients} patient(s) x {cfg.seeds} seed(s) = {len(units)} units; {c.epochs} epochs per stage, parts "
        f"{', '.join(cfg.finetune.parts)}; memory budget "
        + (f"{c.memory_records} records" if c.memory_records else f"{c.memory_fraction:.0%} of the records seen")
        + " (at least one per seen class and one normal record)."
        + (f" Pretrained model's held-out source macro-AUROC: {src.mean():.3f}." if len(src) else ""),
        "",
        "Scores are from the accuracy matrix a[i][j] (macro-AUROC on stage j's test records after stage i): average "
        "accuracy after the last stage, backward transfer (BWT, negative = later stages hurt earlier ones) and "
        "forgetting (drop from the best a stage ever scored). Mean and 95% Student-t interval over the units; the "
        "patients of a seed share one pretrained model, so the interval treats them as more independent than they are.",
        "",
        _markdown(summary_table(rows, timings, methods)),
    ]
    pairs = [(a, b) for a, b in (("distill", "random"), ("herding", "random"), ("distill", "herding"),
                                 ("random", "finetune"), ("distill", "finetune"), ("replay-all", "finetune"))
             if a in methods and b in methods]
    if pairs:
        lines += ["", "Paired differences (same patient and seed), mean [95% interval]:", "",
                  "| comparison | Δ average accuracy | Δ forgetting |", "|---|---|---|"]
        lines += [f"| {a} − {b} | {paired(rows, a, b, 'avg_accuracy')} | {paired(rows, a, b, 'forgetting')} |"
                  for a, b in pairs]
    sized = [m for m in methods if m in SIZE_METHODS]
    if sized:
        lines += ["", f"Model-size adaption (memory: {c.size_memory}; widths {cfg.model.d_model} → "
                      f"{' → '.join(map(str, c.widths))}; adaptive widens when its validation macro-AUROC on a stage's new "
                      f"records is below {c.widen_threshold:g}"
                      + (f" or its loss fell by less than {c.widen_plateau:.0%} over the stage's second half" if c.widen_plateau else "")
                      + "):", "", _markdown(size_table(rows, sized))]
        if set(SIZE_METHODS) <= set(sized):
            ratio = (_per_unit(rows, "train_flops", "sum").loc["adaptive"] / _per_unit(rows, "train_flops", "sum").loc["fixed-large"])
            lines += ["", f"adaptive − fixed-large, paired: Δ average accuracy {paired(rows, 'adaptive', 'fixed-large', 'avg_accuracy')}, "
                          f"Δ forgetting {paired(rows, 'adaptive', 'fixed-large', 'forgetting')}; adaptive's training FLOPs are "
                          f"{ratio.mean():.0%} of fixed-large's (mean over units)."]
    before, after = _units(rows, "distill_objective_before"), _units(rows, "distill_objective_after")
    if len(before):
        lines += ["", f"Distribution matching lowered its objective (on {EVAL_ENCODERS} fixed random encoders it never drew) from "
                      f"{before['value'].mean():.3g} to {after['value'].mean():.3g} on average over stages and units."]
    lines += ["", f"![average accuracy per stage]({PLOT_FILE})", ""]
    return "\n".join(lines)


def plot(rows: pd.DataFrame, methods: list[str]) -> bytes:
    """Left: average accuracy over the stages seen, after each stage. Right: stage 0's test accuracy over the stages
    (the pretrained model at -1): how much of the first stage each method keeps. Means over units."""
    from matplotlib import colormaps, rc_context

    with rc_context({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False}):
        fig = Figure(figsize=(9, 3.4), dpi=100)
        FigureCanvasAgg(fig)
        left, right = fig.subplots(1, 2)
        cmap = colormaps["tab10"]
        for k, m in enumerate(methods):
            own = rows[(rows["method"] == m) & (rows["patient"] != "server")]
            acc = own[own["metric"] == "avg_accuracy_so_far"].groupby("stage_trained")["value"].mean()
            first = own[(own["metric"] == "macro_auroc") & (own["stage_tested"].astype(str) == "0")]
            first = first.groupby("stage_trained")["value"].mean()
            left.plot(acc.index, acc.values, marker="o", color=cmap(k), label=m)
            right.plot(first.index, first.values, marker="o", color=cmap(k), label=m)
        left.set(xlabel="after stage", ylabel="average macro-AUROC, stages seen", title="average accuracy")
        right.set(xlabel="after stage (-1 = pretrained)", ylabel="macro-AUROC on stage 0", title="stage 0 over time")
        for ax in (left, right):
            ax.xaxis.get_major_locator().set_params(integer=True)
        left.legend(frameon=False)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()
