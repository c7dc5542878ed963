"""`render_report(run_dir)`: report.md, report.html and figures/*.png in a run folder.

Everything written comes from the run's files alone (no clock, no host), in a fixed order with
fixed number formats, so rendering a run twice gives a byte-identical report.md.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from simulator.core.labels import CLASSES
from simulator.errors import MuprivError
from simulator.report import plots
from simulator.report.conclusions import COMPARED, REFERENCE, conclusions
from simulator.report.document import Block, Code, Heading, Image, Para, Table, to_html, to_markdown
from simulator.report.failures import failure_blocks, scheme_failures
from simulator.report.files import write_atomic
from simulator.report.fmt import MISSING, fmt_bytes, fmt_interval, fmt_leakage, fmt_stat, fmt_value
from simulator.report.load import PLOTS_DIR, RunData, load_run
from simulator.scheme_record import SchemeRecord
from simulator.report.tables import (ACCURACY, COMMUNICATION, DEVICE_COST, LEAKAGE, PRIVACY, QUANTITIES, Quantity,
                                     attack_stats, curve_means, leak_verdicts, ledger_per_round, ledger_totals, lookup, metric_stats,
                                     other_metrics, per_client_values, run_schemes, scheme_key, scheme_summary)

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"  # our plots; plots/ belongs to the attacks (reconstructions)
FIGURE_NAMES = ("frontier.png", "per-client-auroc.png", "epsilon-vs-accuracy.png", "bytes-per-round.png",
                "auroc-per-round.png", "auroc-vs-bytes-up.png")

# manifest.json essentials: (label, candidate keys in order of preference)
_MANIFEST_FIELDS = (
    ("name", ("name", "run_name")),
    ("created", ("created", "created_at", "started", "start_time", "time", "timestamp")),
    ("mupriv version", ("mupriv_version", "version")),
    ("config hash", ("config_hash", "hash")),
    ("configured seeds", ("seeds", "seed")),
    ("configured schemes", ("schemes",)),
    ("engine", ("engine",)),
    ("git commit", ("git_commit", "git", "commit")),
    ("data", ("data_fingerprints", "data_fingerprint", "data")),
    ("packages", ("packages", "package_versions", "versions")),
    ("machine", ("machine", "host", "platform")),
)
_MAX_CELL = 400


def _short(value: Any) -> str:
    """A manifest value on one line: scalars as is, lists comma-joined, dicts 'key value' sorted."""
    if isinstance(value, dict):
        text = ", ".join(f"{k} {_short(v) if not isinstance(v, (dict, list)) else json.dumps(v, sort_keys=True)}"
                         for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_short(v) for v in value)
    else:
        text = "" if value is None else str(value)
    return text if len(text) <= _MAX_CELL else text[:_MAX_CELL - 1] + "…"


def manifest_essentials(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of the manifest keys a reader needs; missing keys are simply left out."""
    rows = []
    for label, keys in _MANIFEST_FIELDS:
        key = next((k for k in keys if k in manifest and manifest[k] not in (None, "", [], {})), None)
        if key is not None:
            rows.append((label, _short(manifest[key])))
    return rows


# ---------------------------------------------------------------------------- tables of the report
def _quantity_table(summary: pd.DataFrame, schemes: list[str], quantities: Iterable[Quantity],
                    labels: dict[str, str] | None = None) -> Table | None:
    """``labels``: extra text after a scheme's name (its client failures)."""
    labels = labels or {}
    quantities = [q for q in quantities if (summary["quantity"] == q.key).any()]
    if not quantities:
        return None
    rows = [[f"{s} {labels[s]}" if s in labels else s,
             *(fmt_stat(r, q.kind) if (r := lookup(summary, s, q.key)) else MISSING for q in quantities)]
            for s in schemes]
    return Table(["scheme", *(q.label for q in quantities)], rows)


def _summary_table(summary: pd.DataFrame, schemes: list[str], labels: dict[str, str] | None = None) -> Table:
    """``labels``: extra text after a scheme's name (its client failures)."""
    labels = labels or {}
    cols = ["personal_macro_f1", "personal_macro_auroc", "improvement_macro_auroc", "forgetting_macro_auroc",
            "bytes_up", "bytes_down", "trainable_params", "epsilon"]
    header = ["scheme", *(QUANTITIES[c].label for c in cols), "leaks (calibrated)"]
    rows = []
    for s in schemes:
        row = [f"{s} {labels[s]}" if s in labels else s]
        for c in cols:
            r = lookup(summary, s, c)
            row.append(fmt_stat(r, QUANTITIES[c].kind, ci=False) if r else MISSING)
        row.append(leak_verdicts(summary, s))
        rows.append(row)
    return Table(header, rows, caption="mean ± sd over clients (mean over seeds). 95% seed intervals are in the tables "
                                       "below. Leaks: the kinds of information an attack recovered significantly better "
                                       "than its null controls (see Leakage); none detected: no evidence at this budget.")


def _conclusions_table(run: RunData, summary: pd.DataFrame, labels: dict[str, str] | None = None) -> Table | None:
    """µ-FT against each other scheme: paired differences, adjusted intervals and verdicts (see conclusions.py).
    ``labels``: extra text after a scheme's name (its client failures: a verdict against a scheme that never ran
    must not read as a result)."""
    labels = labels or {}
    table = conclusions(run.results)
    if table.empty:
        return None
    kinds = {c.metric: ("bytes" if c.metric == "bytes_up" else "delta") for c in COMPARED}

    def cell(row: pd.Series, metric: str) -> str:
        kind = kinds[metric]
        text = f"{fmt_value(row['difference'], kind)}"
        if interval := fmt_interval(row.to_dict(), kind):
            text += f" [{interval}]"
        return f"{row['verdict']}: {text}"

    rows = []
    for scheme in [s for s in run_schemes(run) if s in set(table["scheme"])]:
        mine = table[table["scheme"] == scheme].set_index("metric")
        rows.append([f"{scheme} {labels[scheme]}" if scheme in labels else scheme,
                     *(cell(mine.loc[c.metric], c.metric) if c.metric in mine.index else MISSING for c in COMPARED),
                     leak_verdicts(summary, scheme)])
    first = table.iloc[0]
    return Table(["µ-FT vs", *(f"{c.label} (µ-FT − scheme)" for c in COMPARED), "that scheme leaks"], rows,
                 caption=f"Paired per patient (same seed and client), averaged per seed; interval {first['basis']}, "
                         f"Bonferroni-adjusted over the {len(rows)} schemes compared (each at "
                         f"{100 * float(first['level']):.1f}%). better / worse: the interval excludes 0 in µ-FT's "
                         "favour / against it (higher Δ macro-AUROC, lower forgetting and bytes are better); "
                         "otherwise no detectable difference. Leakage: the calibrated verdicts of the Leakage table; "
                         f"{REFERENCE} sends nothing a server could attack.")


def _leakage_table(summary: pd.DataFrame, schemes: list[str]) -> Table | None:
    if not summary["quantity"].isin([q.key for q in LEAKAGE]).any():
        return None
    rows = []
    for s in schemes:
        cells = [lookup(summary, s, q.key) for q in LEAKAGE]
        if all(c is None for c in cells):
            continue
        rows.append([s, *(fmt_leakage(c, with_source=False) for c in cells)])
    return Table(["scheme", *(q.label for q in LEAKAGE)], rows,
                 caption="Each cell: the verdict and the gain of the (attack, score) with the strongest evidence over the "
                         "best null control scored the same way, [its 95% bootstrap interval over clients and records "
                         "(clients nested in seeds when there are several), "
                         "Bonferroni-adjusted for the attacks and scores compared]. leaks: the interval is above 0; "
                         "n/a: the threat model has nothing to attack; —: not attacked.")


def _budget_note(run: RunData) -> Para | None:
    """Whether the schemes trained as long on each device (federation.budget in config.toml)."""
    import tomllib  # pylint: disable=import-outside-toplevel

    try:
        budget = tomllib.loads(run.config_text or "").get("federation", {}).get("budget")
    except tomllib.TOMLDecodeError:
        budget = None
    if budget == "matched":
        return Para("Budgets are matched (federation.budget = \"matched\"): every scheme trains finetune.epochs on each "
                    "device, so federated rounds x local epochs equal the on-device schemes' epochs. Local steps can still "
                    "differ a little (central trains on the pooled records; DP-SGD's Poisson batches).")
    return Para("Budgets are NOT matched (federation.budget = \"as-configured\", or a run made before budgets were "
                "matched): compare the schemes' local steps and training FLOPs before comparing their accuracy.")


_PHASE_MODELS = {"full": ("Full training", "full-training model"), "mu-train": ("µ-Training", "µ-Training model")}


def _pretraining_note(run: RunData) -> Para | None:
    """Pretraining phases that kept epoch 0 (manifest.json, studies.<seed>.pretrained.phases): they changed nothing,
    so the pretrained model is not what the phases' names promise."""
    def named(phase: str) -> tuple[str, str]:
        return _PHASE_MODELS.get(phase, (phase, f"{phase} model"))

    studies = {str(s): f for s, f in (run.manifest.get("studies") or {}).items() if isinstance(f, dict)}
    kept: dict[tuple[int, tuple[str, ...]], list[str]] = {}
    for seed in sorted(studies, key=lambda s: (len(s), s)):
        phases = [p for p in (studies[seed].get("pretrained") or {}).get("phases") or [] if isinstance(p, dict)]
        plan = tuple(str(p.get("phase")) for p in phases)
        for i, phase in enumerate(phases):
            if phase.get("best_epoch") == 0:
                kept.setdefault((i, plan), []).append(seed)
    sentences = []
    for (i, plan), seeds in sorted(kept.items()):
        before = named(plan[i - 1])[1] if i else "initial model"
        after = (f"the pretrained model is the {before}" if i == len(plan) - 1
                 else f"{named(plan[i + 1])[0]} started from the {before}")
        where = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(seeds)}"
        sentences.append(f"{named(plan[i])[0]} kept epoch 0 at {where} (of {len(studies)}): {after}. None of its "
                         f"epochs beat the model it started from on the server's validation records, so it changed nothing.")
    return Para(" ".join(sentences)) if sentences else None


def _source_scored_on(run: RunData) -> str:
    """Which of the server's records measured forgetting (manifest.json, studies.<seed>.source_scored_on)."""
    studies = [f for f in (run.manifest.get("studies") or {}).values() if isinstance(f, dict)]
    if studies and all(f.get("source_scored_on") == "holdout" for f in studies):
        return "measured on the server's holdout records, which no phase trained or selected on"
    return ("measured on the server's validation records, on which pretraining also picked its best epochs (the "
            "pretrained model's score there is a little optimistic, by the same amount for every scheme of a seed; "
            "data.source_holdout sets records aside that no phase sees)")


def _dp_noise_note(run: RunData) -> Para | None:
    """Whether dp-fedavg's device noise was secret or seeded from the run seed, as its cells' scheme.json say."""
    sources = set()
    for path in sorted((run.run_dir / "schemes" / "dp-fedavg").glob("seed-*/scheme.json")):
        try:
            dp = SchemeRecord.read(path).dp
        except MuprivError:
            continue
        if dp is not None and dp.mode == "dp-sgd":
            sources.add(dp.noise_source)  # runs made before the noise source was recorded seeded it from the run seed
    if not sources:
        return None
    if sources == {"secret"}:
        return Para("dp-fedavg's DP-SGD noise and batch sampling came from each device's OS randomness (noise = "
                    "\"secret\"): no one can replay them, and its numbers vary from run to run.")
    return Para("dp-fedavg's DP-SGD noise and batch sampling were seeded from the run seed (noise = \"seeded\") in "
                f"{'some' if len(sources) > 1 else 'every'} seed's run, so the run repeats exactly. This is for simulation "
                "only: a server that knows the seed can replay the noise and subtract it, and the accountant's ε then "
                "bounds nothing.")


def _audit_table(attacks: pd.DataFrame | None) -> Table | None:
    """The DP audit's empirical lower bounds on epsilon next to the accountant's (attacks/audit.py)."""
    if attacks is None or attacks.empty:
        return None
    audit = attacks[attacks["attack"].astype(str).str.startswith("dp-audit")]
    if audit.empty:
        return None
    rows = []
    for (scheme, attack, observation), grp in audit.groupby(["scheme", "attack", "threat_model"], sort=True):
        val = grp.groupby("metric")["value"]
        mean = val.mean()
        lo, hi = val.min(), val.max()

        def cell(metric: str, kind: str = "epsilon") -> str:
            if metric not in mean.index:
                return MISSING
            text = fmt_value(mean[metric], kind)
            return text if lo[metric] == hi[metric] else f"{text} ({fmt_value(lo[metric], kind)}–{fmt_value(hi[metric], kind)})"

        rows.append([scheme, attack.removeprefix("dp-audit-"), observation.removeprefix("auditor-"), cell("eps_lower_bound"),
                     cell("eps_lower_bound_ideal"), cell("eps_accountant"),
                     f"{cell('audit_correct', 'count')} / {cell('audit_guesses', 'count')}", cell("canaries", "count"),
                     str(grp["seed"].nunique())])
    return Table(["scheme", "canaries", "observation", "ε lower bound (95%)", "ideal mechanism", "accountant ε",
                  "correct / guesses", "canaries", "seeds"], rows,
                 caption="One-run audit (Steinke, Nasr & Jagielski 2023) of one device's DP-SGD: mean over seeds (range). "
                         "A valid mechanism is never audited above its accountant ε (except with probability 5%); the "
                         "ideal mechanism's bound is what the same audit gets on a perfect Gaussian mechanism, so the "
                         "distance to the accountant's ε is the one-run method's looseness, not extra safety.")


def _threat_table(run: RunData) -> Table | None:
    """The threat models this run's attacks assumed, on the literature's axes (attacks/threat.py)."""
    from attacks.threat import DEVICE_LOST, GLOBAL_MODEL, KNOWLEDGE_LEVELS, THREAT_MODELS  # pylint: disable=import-outside-toplevel

    names: set[str] = set()
    for frame in (run.attacks, run.leakage):
        if frame is not None and "threat_model" in frame.columns:
            names |= {n for v in frame["threat_model"].dropna() for n in str(v).split(",") if n}
    known = {t.name: t for t in (*THREAT_MODELS.values(), DEVICE_LOST, GLOBAL_MODEL)}
    rows = [[n, known[n].position, known[n].access, ", ".join(known[n].knowledge) or "—"]
            for n in sorted(names) if n in known and known[n].applicable]
    if not rows:
        return None
    levels = "; ".join(f"{k}: {v}" for k, v in KNOWLEDGE_LEVELS.items())
    return Table(["threat model", "adversary", "access", "knowledge granted"], rows,
                 caption=f"Knowledge levels, graded by how accessible they are to a real adversary: {levels}.")


def _leakage_detail_table(leakage: pd.DataFrame | None) -> Table | None:
    if leakage is None or leakage.empty:
        return None
    from attacks.calibrate import QUANTITIES as CALIBRATED  # pylint: disable=import-outside-toplevel

    rows = []
    for r in leakage.sort_values("scheme", key=lambda c: c.map(lambda v: scheme_key(v)), kind="stable").itertuples(index=False):
        interval = fmt_interval(r._asdict(), "delta")
        rows.append([r.scheme, CALIBRATED[r.quantity].label if r.quantity in CALIBRATED else r.quantity, r.attack,
                     fmt_value(r.estimate, "score"), fmt_value(r.null, "score"),
                     fmt_value(r.gain, "delta") + (f" [{interval}]" if interval else ""), r.verdict,
                     f"{int(r.n_units)} / {int(r.n_clients)}", r.note or ""])
    return Table(["scheme", "score", "attack", "attack's score", "best null", "gain [adjusted 95% CI]", "verdict",
                  "units / clients", "note"], rows,
                 caption="Every calibrated (scheme, score, attack): the attack's mean score (membership: AUC or TPR at "
                         "1% FPR), the best null control's on the same units (membership: chance), and the gain. "
                         "Units are reconstructed records, label guesses or membership candidates; clients are the "
                         "bootstrap's clusters (a patient in one seed's cohort). Per-observation scores are in attacks.csv.")


def _per_class_table(stats: pd.DataFrame, schemes: list[str], prefix: str, label: str) -> Table | None:
    names = [f"{prefix}{c}" for c in CLASSES]
    if not stats["metric"].isin(names).any():
        return None
    rows = []
    for s in schemes:
        sub = stats[stats["scheme"] == s].set_index("metric")
        rows.append([s, *(fmt_value(sub.loc[n, "mean"], "score") if n in sub.index else MISSING for n in names)])
    return Table(["scheme", *CLASSES], rows, caption=f"personal {label} per class, mean over clients and seeds")


def _attack_detail_table(attacks: pd.DataFrame | None) -> Table | None:
    detail = attack_stats(attacks)
    if detail.empty:
        return None
    rows = [[r.scheme, r.attack, r.threat_model, r.metric, fmt_stat(r._asdict(), "generic"), str(r.n_clients), str(r.n_seeds)]
            for r in detail.itertuples(index=False)]
    return Table(["scheme", "attack", "threat model", "metric", "mean ± sd [95% CI]", "clients", "seeds"], rows,
                 caption="each client's rounds averaged first; NaN (not applicable) rows show —")


def _ledger_table(ledger: pd.DataFrame | None) -> Table | None:
    totals = ledger_totals(ledger)
    if totals.empty:
        return None
    rows = [[r.scheme, r.direction, fmt_value(r.messages, "count"), fmt_bytes(float(r.bytes))]
            for r in totals.itertuples(index=False)]
    return Table(["scheme", "direction", "messages", "bytes"], rows,
                 caption="all messages of the run from ledger.csv (mean over seeds when the ledger has several)")


def _other_metrics_table(results: pd.DataFrame) -> Table | None:
    other = other_metrics(results)
    if other.empty:
        return None
    rows = [[r.scheme, r.metric, fmt_stat(r._asdict(), "generic"), str(r.n_clients), str(r.n_seeds)]
            for r in other.itertuples(index=False)]
    return Table(["scheme", "metric", "mean ± sd [95% CI]", "clients", "seeds"], rows)


# ---------------------------------------------------------------------------- the document
def build_report(run: RunData) -> tuple[str, list[Block], dict[str, bytes]]:
    """(title, blocks, figures): the figures by file name under figures/, to be written next to report.md."""
    summary = scheme_summary(run)
    stats = metric_stats(run.results)
    schemes = run_schemes(run)
    seeds = sorted(set(run.results["seed"]))
    clients = sorted(set(run.results["client"]) - {"all"})
    blocks: list[Block] = []
    figures: dict[str, bytes] = {}

    def add(block: Block | None) -> None:
        if block is not None:
            blocks.append(block)

    def figure(name: str, make: Callable[[], bytes | None], alt: str, caption: str, missing: str) -> None:
        png = make()
        if png is None:
            blocks.append(Para(missing))
            return
        figures[name] = png
        blocks.append(Image(f"{FIGURES_DIR}/{name}", png, alt, caption))

    blocks.append(Heading("Run"))
    blocks.append(Table(["field", "value"], [("run folder", run.name), ("schemes in results", ", ".join(schemes)),
                                              ("clients", str(len(clients))), ("seeds in results", ", ".join(map(str, seeds))),
                                              *manifest_essentials(run.manifest)]))
    add(_pretraining_note(run))

    failures = scheme_failures(run)
    blocks += failure_blocks(run, failures)

    blocks.append(Heading("Summary"))
    blocks.append(Para(f"Per scheme over {len(clients)} clients and {len(seeds)} seed(s): mean ± standard deviation "
                       "between clients; with two or more seeds, [the 95% Student-t interval of the per-seed client "
                       "means]. Δ vs pretrained is personal minus pretrained personal; forgetting is the drop on the "
                       f"source task, {_source_scored_on(run)}. Bytes are serialised Flower messages per client."))
    labels = {s: f.label for s, f in failures.items()}
    blocks.append(_summary_table(summary, schemes, labels))
    if (verdicts := _conclusions_table(run, summary, labels)) is not None:
        blocks += [Heading("Conclusions", 3), verdicts]

    for title, quantities in (("Accuracy", ACCURACY), ("Communication", COMMUNICATION),
                              ("On-device cost", DEVICE_COST), ("Differential privacy", PRIVACY)):
        table = _quantity_table(summary, schemes, quantities, labels)
        if table is not None:
            blocks += [Heading(title, 3), table]
            if quantities is DEVICE_COST:
                add(_budget_note(run))
            if quantities is PRIVACY:
                add(_dp_noise_note(run))
                add(_audit_table(run.attacks))
    leak = _leakage_table(summary, schemes)
    if leak is not None:
        blocks += [Heading("Leakage", 3), leak]
        add(_threat_table(run))
    elif run.attacks is not None:
        blocks += [Heading("Leakage", 3), Para("This run's attacks were scored before calibration (no leakage.csv or "
                                                "leakage_units.csv): re-attack it with `mupriv attack RUN_DIR` for "
                                                "calibrated gains, intervals and verdicts.")]

    blocks.append(Heading("Plots"))
    blocks.append(Heading("Accuracy vs bytes vs leakage", 3))
    figure("frontier.png", lambda: plots.frontier_png(summary), "accuracy vs bytes vs leakage frontier",
           "x: bytes up per client (symlog, 0 = nothing leaves the device); y: personal macro-AUROC ± sd over clients; "
           "colour: how many kinds of leakage the calibrated attacks detected; hollow grey: no leakage assessment.",
           "No scheme has both personal macro-AUROC and bytes up: no frontier to plot.")
    blocks.append(Heading("Personal macro-AUROC per client", 3))
    figure("per-client-auroc.png", lambda: plots.per_client_png(per_client_values(run.results, "personal_macro_auroc")),
           "personal macro-AUROC per client and scheme",
           "bars: mean over seeds; error bars: sd over seeds; dotted line: chance (0.5).",
           "No per-client personal macro-AUROC in results.csv.")
    blocks.append(Heading("ε vs accuracy (DP)", 3))
    figure("epsilon-vs-accuracy.png", lambda: plots.epsilon_png(run.results, summary), "epsilon vs personal macro-AUROC",
           "points: one per client and seed of each DP scheme; diamonds: scheme means; dashed: non-DP schemes' means.",
           "No DP scheme in this run (no epsilon in results.csv).")
    blocks.append(Heading("Bytes per round", 3))
    figure("bytes-per-round.png", lambda: plots.bytes_per_round_png(ledger_per_round(run.ledger)),
           "bytes per round from the ledger",
           "serialised bytes per round summed over clients, one panel per direction; lines are nudged sideways per scheme so equal ones stay visible.",
           "No ledger.csv with rounds in this run.")
    curves = curve_means(run.rounds)
    blocks.append(Heading("Personal macro-AUROC per round", 3))
    figure("auroc-per-round.png", lambda: plots.curves_round_png(curves), "personal macro-AUROC per round",
           "every device's model after every round (rounds.csv), scored on its test records like the final results: "
           "the mean over clients (and seeds) per scheme. On-device schemes and central are drawn per epoch; round 0 "
           "is the pretrained model; dotted line: chance (0.5).",
           "No rounds.csv in this run (report.curves = false, or a run made before per-round curves).")
    blocks.append(Heading("Personal macro-AUROC vs bytes sent", 3))
    figure("auroc-vs-bytes-up.png", lambda: plots.curves_bytes_png(curves), "personal macro-AUROC vs cumulative bytes up",
           "the same curves against the bytes each client had sent up by then (symlog, mean over clients): what "
           "accuracy each byte on the wire buys. The final delivery's bytes count at the last round.",
           "No rounds.csv in this run.")

    blocks.append(Heading("Example reconstructions"))
    if run.reconstruction_plots:
        blocks.append(Para("What the curious server rebuilt from the wire, as plotted by the attacks (plots/)."))
        for p in run.reconstruction_plots:
            blocks.append(Image(f"{PLOTS_DIR}/{p.name}", p.read_bytes(), p.stem, p.name))
    else:
        blocks.append(Para("No reconstruction plots (plots/*.png) in this run."))

    per_class = [_per_class_table(stats, schemes, "personal_auroc_", "AUROC"),
                 _per_class_table(stats, schemes, "personal_f1_", "F1")]
    if any(t is not None for t in per_class):
        blocks.append(Heading("Per class"))
        for t in per_class:
            add(t)
    leak_detail = _leakage_detail_table(run.leakage)
    if leak_detail is not None:
        blocks += [Heading("Leakage in detail"), leak_detail]
    attack_detail = _attack_detail_table(run.attacks)
    if attack_detail is not None:
        blocks += [Heading("Attacks in detail"), attack_detail]
    ledger = _ledger_table(run.ledger)
    if ledger is not None:
        blocks += [Heading("Ledger totals"), ledger]
    other = _other_metrics_table(run.results)
    if other is not None:
        blocks += [Heading("Appendix: other metrics"),
                   Para("Metrics of results.csv that no section above shows, including ones this report does not know."),
                   other]
    if run.config_text:
        blocks += [Heading("Appendix: configuration"), Code(run.config_text, summary="config.toml as resolved")]
    return f"mupriv report: {run.name}", blocks, figures


def render_report(run_dir: str | Path | RunData) -> tuple[Path, Path]:
    """Write report.md, report.html (self-contained) and figures/*.png into the run folder; return (md, html)."""
    run = run_dir if isinstance(run_dir, RunData) else load_run(run_dir)
    title, blocks, figures = build_report(run)
    fig_dir = run.run_dir / FIGURES_DIR
    for name, png in figures.items():
        write_atomic(fig_dir / name, png)
    for name in FIGURE_NAMES:  # a plot that no longer applies must not linger from an earlier render
        if name not in figures:
            (fig_dir / name).unlink(missing_ok=True)
    md = write_atomic(run.run_dir / REPORT_MD, to_markdown(title, blocks))
    page = write_atomic(run.run_dir / REPORT_HTML, to_html(title, blocks))
    return md, page
