"""The report's plots, as PNG bytes.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot: no global figure
state, no GUI backend). PNGs are saved at a fixed size and dpi without the 'Software' metadata
entry, so the same numbers give the same bytes on the same matplotlib version.
"""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

from simulator.report.fmt import finite, fmt_si
from simulator.report.tables import ALL_CLIENTS, LEAKAGE, lookup, sorted_schemes

DPI = 100
_STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False}
_BYTES_LINTHRESH = 1000.0  # symlog's linear range: puts "nothing sent" (0 B) on the axis


def scheme_colors(schemes: list[str]) -> dict[str, tuple]:
    """One fixed colour per scheme, the same in every plot of a report."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(schemes) <= 10 else "tab20"]
    return {s: cmap(i % cmap.N) for i, s in enumerate(sorted_schemes(schemes))}


def _figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas; call inside ``rc_context(_STYLE)`` (rc is read as artists are made)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _tick_bytes(x: float, _pos: object = None) -> str:
    """Decimal units on log axes, whose ticks sit at powers of ten: '0 B', '100 B', '1 kB', '10 MB'."""
    if x < 0:
        return ""
    text = fmt_si(x) if x else "0"
    return text + ("B" if text[-1].isalpha() else " B")


def _bytes_axis(axis) -> None:
    axis.set_major_formatter(FuncFormatter(_tick_bytes))


# ---------------------------------------------------------------------------- frontier
def frontier_png(summary: pd.DataFrame) -> bytes | None:
    """Accuracy vs bytes vs leakage: x bytes up per client (symlog), y personal macro-AUROC.

    Colour = how many kinds of leakage (waveform, re-identification, diagnoses, features, membership) the
    calibrated attacks detected; hollow grey = no leakage assessment (not attacked, or nothing to attack).
    """
    schemes = sorted_schemes(summary["scheme"])
    points = []
    for s in schemes:
        acc, up = lookup(summary, s, "personal_macro_auroc"), lookup(summary, s, "bytes_up")
        if acc is None or up is None or not (finite(acc["mean"]) and finite(up["mean"])):
            continue
        rows = [r for fam in LEAKAGE if (r := lookup(summary, s, fam.key)) is not None]
        assessed = [r for r in rows if r["note"] != "not applicable"]
        name = s if assessed else s + (" (leakage n/a)" if rows else " (not attacked)")
        leaking = sum(r["note"] == "leaks" for r in assessed) if assessed else math.nan
        points.append((name, float(up["mean"]), float(acc["mean"]), float(acc["sd"]) if finite(acc["sd"]) else 0.0, leaking))
    if not points:
        return None
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        fig = _figure(7.0, 4.5)
        ax = fig.add_subplot()
        norm = Normalize(0.0, float(len(LEAKAGE)))
        cmap = matplotlib.colormaps["plasma"]
        for s, x, y, sd, leaking in points:
            ax.errorbar(x, y, yerr=sd, fmt="none", ecolor="0.6", elinewidth=1, capsize=3, zorder=1, clip_on=False)
            if finite(leaking):
                ax.scatter([x], [y], s=120, c=[cmap(norm(leaking))], edgecolors="black", linewidths=0.6, zorder=2, clip_on=False)
            else:
                ax.scatter([x], [y], s=120, facecolors="none", edgecolors="0.5", linewidths=1.2, zorder=2, clip_on=False)
            ax.annotate(s, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8)
        xmax = max(p[1] for p in points) * 4 + 2 * _BYTES_LINTHRESH
        ax.set_xscale("symlog", linthresh=_BYTES_LINTHRESH)
        ax.set_xlim(0, xmax)
        # 0, then powers of ten beyond the linear range (symlog's own ticks crowd around 0)
        ax.xaxis.set_major_locator(FixedLocator([0.0] + [10.0 ** k for k in range(3, int(math.log10(xmax)) + 1)]))
        ax.xaxis.set_minor_locator(NullLocator())
        _bytes_axis(ax.xaxis)
        ax.set_xlabel("bytes up per client (symlog; 0 = nothing leaves the device)")
        ax.set_ylabel("personal macro-AUROC (mean ± sd over clients)")
        ax.set_title("accuracy vs communication vs leakage")
        sm = ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, label=f"kinds of leakage detected (of {len(LEAKAGE)})")
        fig.tight_layout()
        return _png(fig)


# ---------------------------------------------------------------------------- per client
def per_client_png(per_client: pd.DataFrame, metric_label: str = "personal macro-AUROC") -> bytes | None:
    """Grouped bars: one group per client, one bar per scheme (mean over seeds, sd over seeds as error bar)."""
    if per_client.empty:
        return None
    import matplotlib

    schemes = sorted_schemes(per_client["scheme"])
    clients = sorted(set(per_client["client"]))
    colors = scheme_colors(schemes)
    width = 0.8 / len(schemes)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(min(16.0, max(6.0, 0.25 * len(clients) * len(schemes) + 2.0)), 4.0)
        ax = fig.add_subplot()
        x = np.arange(len(clients))
        for i, s in enumerate(schemes):
            rows = per_client[per_client["scheme"] == s].set_index("client").reindex(clients)
            sd = rows["sd"].fillna(0.0).to_numpy(dtype=float)
            ax.bar(x + (i - (len(schemes) - 1) / 2) * width, rows["mean"].to_numpy(dtype=float), width,
                   yerr=sd if sd.any() else None, capsize=2, color=colors[s], label=s, error_kw={"elinewidth": 0.8})
        ax.set_xticks(x, clients, rotation=45 if len(clients) > 6 else 0, ha="right" if len(clients) > 6 else "center")
        ax.set_ylabel(metric_label)
        ax.set_ylim(0, 1.05)
        ax.axhline(0.5, color="0.6", linewidth=0.8, linestyle=":")
        ax.set_title(f"{metric_label} per client")
        ax.legend(fontsize=7, ncol=min(len(schemes), 5), loc="upper center", bbox_to_anchor=(0.5, -0.15 if len(clients) <= 6 else -0.3),
                  frameon=False)
        fig.tight_layout()
        return _png(fig)


# ---------------------------------------------------------------------------- DP
def epsilon_png(results: pd.DataFrame, summary: pd.DataFrame) -> bytes | None:
    """ε vs personal macro-AUROC: one point per (client, seed) of each DP scheme; non-DP schemes as lines."""
    keys = ["seed", "scheme", "client"]
    acc = results[(results["metric"] == "personal_macro_auroc") & (results["client"] != ALL_CLIENTS)]
    acc = acc.groupby(keys)["value"].mean().rename("personal_macro_auroc").reset_index()
    eps = results[results["metric"] == "epsilon"]
    per_client = eps[eps["client"] != ALL_CLIENTS].groupby(keys)["value"].mean().rename("epsilon").reset_index()
    # a scheme-level epsilon (client "all", e.g. central DP) applies to each of its clients
    scheme_level = eps[eps["client"] == ALL_CLIENTS].groupby(["seed", "scheme"])["value"].mean().rename("eps_all").reset_index()
    wide = acc.merge(per_client, on=keys, how="left").merge(scheme_level, on=["seed", "scheme"], how="left")
    wide["epsilon"] = wide["epsilon"].fillna(wide["eps_all"])
    wide = wide.dropna(subset=["epsilon", "personal_macro_auroc"])
    if wide.empty:
        return None
    import matplotlib

    dp = sorted_schemes(wide["scheme"])
    all_schemes = sorted_schemes(summary["scheme"])
    colors = scheme_colors(all_schemes)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(6.5, 4.0)
        ax = fig.add_subplot()
        for s in dp:
            rows = wide[wide["scheme"] == s]
            ax.scatter(rows["epsilon"], rows["personal_macro_auroc"], s=25, color=colors[s], label=f"{s} (client × seed)", alpha=0.8)
            ax.scatter([rows["epsilon"].mean()], [rows["personal_macro_auroc"].mean()], s=120, marker="D",
                       color=colors[s], edgecolors="black", linewidths=0.8)
        for s in all_schemes:
            if s in dp:
                continue
            acc = lookup(summary, s, "personal_macro_auroc")
            if acc is not None and finite(acc["mean"]):
                ax.axhline(float(acc["mean"]), color=colors[s], linewidth=1, linestyle="--", label=f"{s} (no DP, mean)")
        ax.set_xlabel("ε (per client, whole run)")
        ax.set_ylabel("personal macro-AUROC")
        ax.set_title("privacy budget vs accuracy (diamond: scheme mean)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.tight_layout()
        return _png(fig)


# ---------------------------------------------------------------------------- ledger
def bytes_per_round_png(per_round: pd.DataFrame) -> bytes | None:
    """Serialised bytes per round, summed over clients: one panel per direction, one line per scheme.

    Lines are dodged sideways a little per scheme, so schemes with equal bytes stay visible.
    """
    if per_round.empty:
        return None
    import matplotlib

    schemes = sorted_schemes(per_round["scheme"])
    directions = sorted(set(per_round["direction"]), key=lambda d: ({"up": 0, "down": 1}.get(d, 2), d))
    colors = scheme_colors(schemes)
    markers = "ov^sDP*Xhd"
    dodge = 0.3 / max(len(schemes), 1)
    positive = per_round["bytes"][per_round["bytes"] > 0].to_numpy(dtype=float)
    if positive.size == 0:
        return None
    # whole decades, so that the log axis always has at least two labelled ticks
    decades = (10.0 ** math.floor(math.log10(positive.min())), 10.0 ** max(math.ceil(math.log10(positive.max())),
                                                                            math.floor(math.log10(positive.min())) + 1))
    with matplotlib.rc_context(_STYLE):
        fig = _figure(3.4 * len(directions) + 1.6, 3.8)
        axes = fig.subplots(1, len(directions), sharey=True, squeeze=False)[0]
        for ax, direction in zip(axes, directions):
            for i, s in enumerate(schemes):
                rows = per_round[(per_round["scheme"] == s) & (per_round["direction"] == direction)]
                if rows.empty:
                    continue
                x = rows["round"].to_numpy(dtype=float) + (i - (len(schemes) - 1) / 2) * dodge
                ax.plot(x, rows["bytes"].to_numpy(dtype=float), marker=markers[i % len(markers)], markersize=4,
                        color=colors[s], label=s)
            ax.set_yscale("log")
            ax.set_ylim(*decades)
            _bytes_axis(ax.yaxis)
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("round")
            ax.set_title(f"{direction}" + {"up": " (client → server)", "down": " (server → client)"}.get(direction, ""))
            ax.xaxis.get_major_locator().set_params(integer=True)
        axes[0].set_ylabel("bytes per round, all clients")
        handles = {}
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        ordered = [s for s in schemes if s in handles]
        fig.legend([handles[s] for s in ordered], ordered, fontsize=7, loc="center right", frameon=False)
        fig.suptitle("bytes on the wire per round (ledger.csv)", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1 - 1.4 / fig.get_figwidth(), 1))
        return _png(fig)


# ---------------------------------------------------------------------------- per-round curves
def _curve_lines(means: pd.DataFrame, x: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(scheme, xs, ys) per scheme, rounds in order, rounds without a personal macro-AUROC left out."""
    lines = []
    for s in sorted_schemes(means["scheme"]):
        rows = means[(means["scheme"] == s)].sort_values("round").dropna(subset=[x, "personal_macro_auroc"])
        if not rows.empty:
            lines.append((s, rows[x].to_numpy(dtype=float), rows["personal_macro_auroc"].to_numpy(dtype=float)))
    return lines


def _curve_figure(lines: list[tuple[str, np.ndarray, np.ndarray]], schemes: list[str]) -> tuple[Figure, object]:
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot()
    colors = scheme_colors(schemes)
    markers = "ov^sDP*Xhd"
    for i, (s, xs, ys) in enumerate(lines):
        ax.plot(xs, ys, marker=markers[i % len(markers)], markersize=3.5, linewidth=1.2, color=colors[s], label=s)
    ax.axhline(0.5, color="0.6", linewidth=0.8, linestyle=":")
    ax.set_ylabel("personal macro-AUROC (mean over clients)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig, ax


def curves_round_png(means: pd.DataFrame) -> bytes | None:
    """Personal macro-AUROC after every round (every epoch for on-device schemes and central): one line per scheme,
    the mean over clients (and seeds); round 0 is the pretrained model."""
    lines = _curve_lines(means, "round")
    if not lines:
        return None
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        fig, ax = _curve_figure(lines, list(means["scheme"]))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("round (federated) or epoch (mu-ft, local-ft, central); 0 = pretrained")
        ax.set_title("personal macro-AUROC per round")
        fig.tight_layout()
        return _png(fig)


def curves_bytes_png(means: pd.DataFrame) -> bytes | None:
    """Personal macro-AUROC against the cumulative bytes a client has sent up (symlog): what accuracy each byte buys."""
    lines = _curve_lines(means, "bytes_up")
    if not lines:
        return None
    import matplotlib

    xmax = max(float(xs.max()) for _, xs, _ in lines) * 4 + 2 * _BYTES_LINTHRESH
    with matplotlib.rc_context(_STYLE):
        fig, ax = _curve_figure(lines, list(means["scheme"]))
        ax.set_xscale("symlog", linthresh=_BYTES_LINTHRESH)
        ax.set_xlim(0, xmax)
        ax.xaxis.set_major_locator(FixedLocator([0.0] + [10.0 ** k for k in range(3, int(math.log10(xmax)) + 1)]))
        ax.xaxis.set_minor_locator(NullLocator())
        _bytes_axis(ax.xaxis)
        ax.set_xlabel("cumulative bytes up per client (symlog; 0 = nothing sent yet)")
        ax.set_title("personal macro-AUROC vs bytes sent")
        fig.tight_layout()
        return _png(fig)
