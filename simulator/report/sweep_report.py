"""The report of a sweep folder (simulator/sweep.py): the trade-off across its points.

Each point is a complete run with its own report (points/<point>/report.md); this one reads every
point's summary (simulator/report/tables.scheme_summary, the same statistics) and shows:
- the points and their settings;
- per point and scheme: Δ macro-AUROC, forgetting, bytes up, ε and the kinds of leakage detected;
- plots: personal gain against each numeric swept key, one line per scheme; ε against gain for the
  schemes that report ε; kinds of leakage detected against bytes up.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from simulator.errors import MuprivError
from simulator.layout import POINTS_DIR, SWEEP_FILE
from simulator.report.document import Block, Heading, Image, Para, Table, to_html, to_markdown
from simulator.report.files import write_atomic
from simulator.report.fmt import MISSING, finite, fmt_stat
from simulator.report.load import load_run
from simulator.report.conclusions import POINT_COMPARED, points_compared
from simulator.report.tables import LEAKAGE, QUANTITIES, leak_verdicts, lookup, scheme_summary, sorted_schemes

FIGURES_DIR = "figures"
SHOWN = ("improvement_macro_auroc", "forgetting_macro_auroc", "bytes_up", "epsilon")


def load_sweep(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, summary): sweep.csv, and every point's scheme summary with a leading `point` column."""
    path = Path(run_dir) / SWEEP_FILE
    if not path.is_file():
        raise MuprivError(f"{path} is missing: {run_dir} is not a finished sweep folder")
    points = pd.read_csv(path, dtype=str, keep_default_na=False)
    parts = []
    for point in points["point"]:
        summary = scheme_summary(load_run(Path(run_dir) / POINTS_DIR / point))
        summary.insert(0, "point", point)
        parts.append(summary)
    return points, pd.concat(parts, ignore_index=True)


def _numeric(values: pd.Series) -> list[float] | None:
    try:
        out = [float(v) for v in values]
    except ValueError:
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _stat(summary: pd.DataFrame, point: str, scheme: str, quantity: str) -> dict | None:
    return lookup(summary[summary["point"] == point], scheme, quantity)


def _mean(stat: dict | None) -> float:
    return float(stat["mean"]) if stat is not None and finite(stat["mean"]) else math.nan


def _err(stat: dict | None) -> float:
    """The seed interval's half-width when there is one, else the sd over clients."""
    if stat is None:
        return 0.0
    if finite(stat.get("ci_low")) and finite(stat.get("ci_high")):
        return (float(stat["ci_high"]) - float(stat["ci_low"])) / 2
    return float(stat["sd"]) if finite(stat.get("sd")) else 0.0


def gain_vs_key_png(points: pd.DataFrame, summary: pd.DataFrame, key: str) -> bytes | None:
    """Personal Δ macro-AUROC against one numeric swept key, one line per scheme (other keys: separate lines)."""
    from simulator.report.plots import _STYLE, _figure, _png, scheme_colors  # pylint: disable=import-outside-toplevel

    xs = _numeric(points[key])
    if xs is None or len(set(xs)) < 2:
        return None
    others = [c for c in points.columns if c not in ("point", key)]
    import matplotlib  # pylint: disable=import-outside-toplevel

    schemes = sorted_schemes(summary["scheme"])
    colors = scheme_colors(schemes)
    styles = ["-", "--", ":", "-."]
    with matplotlib.rc_context(_STYLE):
        fig = _figure(7.0, 4.2)
        ax = fig.add_subplot()
        groups = points.groupby(others, sort=False) if others else [((), points)]
        for g, (rest, rows) in enumerate(groups):
            rest = rest if isinstance(rest, tuple) else (rest,)
            suffix = "" if not others else " (" + ", ".join(f"{k}={v}" for k, v in zip(others, rest)) + ")"
            for s in schemes:
                stats = [_stat(summary, p, s, "improvement_macro_auroc") for p in rows["point"]]
                xy = sorted((float(x), _mean(st), _err(st)) for x, st in zip(rows[key], stats) if finite(_mean(st)))
                if len(xy) < 2:
                    continue
                ax.errorbar([p[0] for p in xy], [p[1] for p in xy], yerr=[p[2] for p in xy], color=colors[s],
                            linestyle=styles[g % len(styles)], marker="o", capsize=3, label=s + suffix)
        if not ax.lines:
            return None
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        ax.axhline(0.0, color="0.6", linewidth=0.8)
        ax.set_xlabel(key)
        ax.set_ylabel("Δ personal macro-AUROC vs pretrained")
        ax.set_title(f"personal gain vs {key} (error bars: seed 95% interval, or sd over clients)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.tight_layout()
        return _png(fig)


def epsilon_vs_gain_png(summary: pd.DataFrame) -> bytes | None:
    """ε against personal gain across points for the schemes that report ε; the others as dashed means."""
    from simulator.report.plots import _STYLE, _figure, _png, scheme_colors  # pylint: disable=import-outside-toplevel

    eps = summary[(summary["quantity"] == "epsilon") & summary["mean"].map(finite)]
    if eps.empty:
        return None
    import matplotlib  # pylint: disable=import-outside-toplevel

    schemes = sorted_schemes(summary["scheme"])
    colors = scheme_colors(schemes)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(7.0, 4.2)
        ax = fig.add_subplot()
        for s in sorted_schemes(eps["scheme"]):
            xy = sorted((float(r["mean"]), _mean(g), _err(g)) for _, r in eps[eps["scheme"] == s].iterrows()
                        if finite(_mean(g := _stat(summary, r["point"], s, "improvement_macro_auroc"))))
            ax.errorbar([p[0] for p in xy], [p[1] for p in xy], yerr=[p[2] for p in xy], color=colors[s], marker="D",
                        capsize=3, label=f"{s} (one point per setting)")
        for s in schemes:
            if s in set(eps["scheme"]):
                continue
            gains = summary[(summary["scheme"] == s) & (summary["quantity"] == "improvement_macro_auroc")]["mean"]
            gains = [float(v) for v in gains if finite(v)]
            if gains:
                ax.axhline(sum(gains) / len(gains), color=colors[s], linestyle="--", linewidth=1, label=f"{s} (no ε, mean)")
        ax.set_xscale("log")
        ax.set_xlabel("ε (per client, whole run; log)")
        ax.set_ylabel("Δ personal macro-AUROC vs pretrained")
        ax.set_title("privacy budget vs personal gain across the sweep")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.tight_layout()
        return _png(fig)


def leakage_vs_bytes_png(summary: pd.DataFrame) -> bytes | None:
    """Kinds of leakage detected (calibrated verdicts) against bytes up, one marker per (point, scheme)."""
    from simulator.report.plots import _STYLE, _bytes_axis, _figure, _png, scheme_colors  # pylint: disable=import-outside-toplevel

    rows = []
    for (point, s), _ in summary.groupby(["point", "scheme"], sort=False):
        up = _mean(_stat(summary, point, s, "bytes_up"))
        fams = [r for fam in LEAKAGE if (r := _stat(summary, point, s, fam.key)) is not None]
        assessed = [r for r in fams if r["note"] != "not applicable"]
        if finite(up) and assessed:
            rows.append((s, up, sum(r["note"] == "leaks" for r in assessed)))
    if not rows:
        return None
    import matplotlib  # pylint: disable=import-outside-toplevel

    schemes = sorted_schemes(summary["scheme"])
    colors = scheme_colors(schemes)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(7.0, 4.2)
        ax = fig.add_subplot()
        for s in sorted_schemes({r[0] for r in rows}):
            mine = [r for r in rows if r[0] == s]
            ax.scatter([r[1] for r in mine], [r[2] for r in mine], color=colors[s], s=50, label=s, alpha=0.8)
        ax.set_xscale("symlog", linthresh=1000.0)
        _bytes_axis(ax.xaxis)
        ax.set_ylim(-0.3, len(LEAKAGE) + 0.3)
        ax.set_xlabel("bytes up per client (symlog)")
        ax.set_ylabel(f"kinds of leakage detected (of {len(LEAKAGE)})")
        ax.set_title("calibrated leakage vs communication (one marker per point and scheme)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.tight_layout()
        return _png(fig)


def build_sweep_report(run_dir: Path) -> tuple[str, list[Block], dict[str, bytes]]:
    points, summary = load_sweep(run_dir)
    keys = [c for c in points.columns if c != "point"]
    blocks: list[Block] = [Heading("Sweep"),
                           Para(f"{len(points)} points over {', '.join(f'`{k}`' for k in keys)}; each is a complete run "
                                f"with its own report ({POINTS_DIR}/<point>/report.md). Numbers below are that report's: "
                                "mean ± sd over clients, [the 95% interval over seeds] with two or more seeds."),
                           Table(["point", *keys, "report"],
                                 [[p, *(row[k] for k in keys), f"{POINTS_DIR}/{p}/report.md"]
                                  for p, (_, row) in zip(points["point"], points.iterrows())])]
    schemes = sorted_schemes(summary["scheme"])
    rows = []
    for _, row in points.iterrows():
        for s in schemes:
            part = summary[summary["point"] == row["point"]]
            if part[part["scheme"] == s].empty:
                continue
            cells = [fmt_stat(st, QUANTITIES[q].kind) if (st := lookup(part, s, q)) else MISSING for q in SHOWN]
            rows.append([row["point"], *(row[k] for k in keys), s, *cells, leak_verdicts(part, s)])
    blocks += [Heading("Per point and scheme", 3),
               Table(["point", *keys, "scheme", *(QUANTITIES[q].label for q in SHOWN), "leaks (calibrated)"], rows)]
    blocks += _points_compared_blocks(Path(run_dir), points)
    figures: dict[str, bytes] = {}
    blocks.append(Heading("Trade-offs"))
    made = [(f"gain-vs-{i}.png", gain_vs_key_png(points, summary, k), f"personal gain vs {k}") for i, k in enumerate(keys)]
    made += [("epsilon-vs-gain.png", epsilon_vs_gain_png(summary), "ε vs personal gain"),
             ("leakage-vs-bytes.png", leakage_vs_bytes_png(summary), "leakage vs bytes up")]
    for name, png, alt in made:
        if png is None:
            continue
        figures[name] = png
        blocks += [Heading(alt, 3), Image(f"{FIGURES_DIR}/{name}", png, alt)]
    if not figures:
        blocks.append(Para("No trade-off plot applies: the swept values are not numeric, no scheme reports ε and "
                           "nothing was attacked."))
    return f"mupriv sweep report: {Path(run_dir).name}", blocks, figures


def _points_compared_blocks(run_dir: Path, points: pd.DataFrame) -> list[Block]:
    """Each point against the first, paired per patient (simulator.report.conclusions.points_compared)."""
    path = run_dir / "results.csv"
    if len(points) < 2 or not path.is_file():
        return []
    table = points_compared(pd.read_csv(path), reference=str(points["point"].iloc[0]))
    if table.empty:
        return []
    labels = {c.metric: c.label for c in POINT_COMPARED}
    keys = [c for c in points.columns if c != "point"]
    settings = {p: ", ".join(f"{k}={row[k]}" for k in keys) for p, (_, row) in zip(points["point"], points.iterrows())}
    rows = [[r.scheme, f"{r.point} ({settings.get(r.point, '')})", labels[r.metric], f"{r.difference:+.3f}",
             f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]", f"{r.level:.4g}", r.basis, r.verdict] for r in table.itertuples()]
    first = points["point"].iloc[0]
    return [Heading(f"Points compared with {first} ({settings[first]})", 3),
            Para("Point minus the reference point, paired per patient (same seed and client: the same cohort and "
                 "records; the swept setting differs), with the Student-t interval over seed means (over patients "
                 "with one seed), Bonferroni-adjusted over the points compared. \"better\" means the point's value "
                 "is better than the reference's (higher scores and Δ macro-AUROC, lower forgetting). The pretrained "
                 "model's source score is forgetting plus the source score after: what the seed's pretrained model "
                 "scored on the server's evaluation records (its holdout, when the run has one)."),
            Table(["scheme", "point", "metric", "difference", "interval", "level", "basis", "verdict"], rows)]


def render_sweep_report(run_dir: str | Path) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    title, blocks, figures = build_sweep_report(run_dir)
    for old in (run_dir / FIGURES_DIR).glob("*.png"):
        if old.name not in figures:
            old.unlink()
    for name, png in figures.items():
        write_atomic(run_dir / FIGURES_DIR / name, png)
    md = write_atomic(run_dir / "report.md", to_markdown(title, blocks))
    page = write_atomic(run_dir / "report.html", to_html(title, blocks))
    return md, page
