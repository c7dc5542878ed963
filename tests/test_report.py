"""The report layer: aggregation by hand, report.md/html, determinism, the browser check, compare, bad input."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from simulator.cli_report import compare_command, report_command
from simulator.core.labels import CLASSES
from simulator.errors import MuprivError
from simulator.report import (compare_markdown, compare_runs, compare_table, comparison_table, load_run,
                              render_report, scheme_summary)
from simulator.report.fmt import fmt_bytes, fmt_stat
from simulator.report.load import RunData
from simulator.report.tables import best_leakage, ledger_per_round, metric_stats, t_interval

T_975_1 = 12.706204736174707  # Student t, 0.975 quantile, 1 degree of freedom
NA_DEVICE = "not applicable: nothing leaves the device"


# ---------------------------------------------------------------------------- a synthetic run folder
def make_run(root: Path, name: str = "quick-20250101-120000", seeds: tuple[int, ...] = (0, 1), n_clients: int = 4,
             rng_seed: int = 0, reconstructions: bool = True) -> Path:
    """A run folder like `mupriv simulate` writes, with plausible random numbers.

    Schemes: mu-ft (nothing up, attacks not applicable), fedavg (full updates, attacked),
    dp-fedavg (epsilon, weaker leakage), fedrep (NaN metrics, an unknown metric, scheme-level rows).
    """
    rng = np.random.default_rng(rng_seed)
    run = root / name
    run.mkdir(parents=True)
    clients = [f"client-{i:03d}" for i in range(n_clients)]
    rounds = 3
    up = {"mu-ft": 0, "fedavg": 240_000, "dp-fedavg": 240_000, "fedrep": 40_000}
    res, att, led, units = [], [], [], []
    for seed in seeds:
        for scheme in ("mu-ft", "fedavg", "dp-fedavg", "fedrep"):
            for client in clients:
                pre = rng.uniform(0.55, 0.65)
                gain = {"mu-ft": 0.12, "fedavg": 0.08, "dp-fedavg": 0.03, "fedrep": 0.1}[scheme]
                vals = {
                    "pretrained_personal_macro_auroc": pre,
                    "personal_macro_auroc": pre + gain + rng.normal(0, 0.02),
                    "pretrained_personal_macro_f1": pre - 0.2,
                    "personal_macro_f1": pre - 0.2 + gain + rng.normal(0, 0.02),
                    "source_macro_auroc": 0.8 + rng.normal(0, 0.01),
                    "forgetting_macro_auroc": rng.uniform(0.0, 0.05),
                    "bytes_up": up[scheme] * (0 if scheme == "mu-ft" else rounds),
                    "bytes_down": 240_000 * (1 if scheme == "mu-ft" else rounds),
                    "trainable_params": 8589 if scheme == "mu-ft" else 58509,
                    "flops_per_step": 2.24e10 if scheme == "mu-ft" else 3.12e10,
                    "peak_memory_bytes": 610 * 2**20 if scheme == "mu-ft" else 882 * 2**20,
                    "wall_s": rng.uniform(1, 3),
                }
                for c in CLASSES:
                    vals[f"personal_auroc_{c}"] = rng.uniform(0.5, 0.9)
                if scheme == "dp-fedavg":
                    vals["epsilon"] = rng.uniform(2.0, 4.0)
                if scheme == "fedrep":
                    vals["custom_metric"] = rng.uniform()  # unknown to the report: the appendix shows it
                    if client == clients[0]:
                        vals["personal_macro_f1"] = math.nan  # undefined
                        vals["personal_auroc_LBBB"] = math.nan
                for metric, value in vals.items():
                    res.append((seed, scheme, client, metric, value))
            if scheme != "mu-ft":
                res.append((seed, scheme, "all", "rounds", rounds))
        # attacks: mu-ft has nothing to attack; the others are attacked every round
        for client in clients:  # as attacks.run writes it: one "applicable = 0" row with the reason
            att.append((seed, "mu-ft", client, "", "none", "none", "applicable", 0.0, "{}", NA_DEVICE))
        strength = {"fedavg": 0.9, "dp-fedavg": 0.3, "fedrep": 0.6}
        for scheme, s in strength.items():
            for client in clients:
                for r in range(1, rounds + 1):
                    att.append((seed, scheme, client, r, "labels", "curious-server", "label_exact",
                                min(1.0, s + rng.normal(0, 0.03)), '{"steps": 1}', ""))
                    for attack, k in (("dlg", 1.0), ("ig", 0.7)):
                        for metric, v in (("r", s * 0.8), ("r_gain", s * 0.5), ("prd", 100 - 60 * s)):
                            att.append((seed, scheme, client, r, attack, "curious-server", metric,
                                        k * v + rng.normal(0, 0.02), '{"steps": 200}', ""))
                        for u in range(2):  # two reconstructed records per round, against a null of 0.3
                            units.append((seed, scheme, client, r, attack, "curious-server", "waveform_r", f"{r}:{u}",
                                          k * s * 0.8 + rng.normal(0, 0.05), 0.3, math.nan))
        # ledger: one row per message, down then up
        row = 0
        for scheme in ("mu-ft", "fedavg", "dp-fedavg", "fedrep"):
            for r in range(1, (1 if scheme == "mu-ft" else rounds) + 1):
                for i, _ in enumerate(clients):
                    for direction, nbytes in (("down", 240_000), ("up", up[scheme])):
                        if nbytes == 0:
                            continue
                        led.append((seed, scheme, r, direction, 100 + i, i, "train", nbytes, nbytes - 200, nbytes // 4, row))
                        row += 1
    pd.DataFrame(res, columns=["seed", "scheme", "client", "metric", "value"]).to_csv(run / "results.csv", index=False)
    pd.DataFrame(att, columns=["seed", "scheme", "client", "round", "attack", "threat_model", "metric", "value",
                               "settings", "note"]).to_csv(run / "attacks.csv", index=False)
    pd.DataFrame(units, columns=["seed", "scheme", "client", "round", "attack", "threat_model", "quantity", "unit", "value",
                                 "null", "label"]).to_csv(run / "leakage_units.csv", index=False)
    pd.DataFrame(led, columns=["seed", "scheme", "round", "direction", "node_id", "partition_id", "message_type", "bytes",
                               "content_bytes", "n_params", "row"]).to_csv(run / "ledger.csv", index=False)
    curves = []  # rounds.csv: each scheme climbs from the pretrained model, bytes up accumulate
    for seed in seeds:
        for scheme in ("mu-ft", "fedavg", "dp-fedavg", "fedrep"):
            for client in clients:
                for r in range(rounds + 1):
                    curves += [(seed, scheme, r, client, "personal_macro_auroc", 0.6 + 0.03 * r + rng.normal(0, 0.01)),
                               (seed, scheme, r, client, "bytes_up", up[scheme] * r)]
    pd.DataFrame(curves, columns=["seed", "scheme", "round", "client", "metric", "value"]).to_csv(run / "rounds.csv", index=False)
    (run / "config.toml").write_text('seed = 0\n\n[data]\nsynthetic_records = 256\n')
    (run / "manifest.json").write_text(json.dumps({
        "config_hash": "abc123", "seeds": list(seeds), "git_commit": "deadbeef", "created": "2025-01-01T12:00:00Z",
        "packages": {"torch": "2.13.0", "flwr": "1.41.0"}, "machine": {"cpus": 2, "platform": "Linux"},
    }))
    if reconstructions:
        from PIL import Image

        (run / "plots").mkdir()
        for tag, shade in (("best", 40), ("median", 160)):
            Image.new("RGB", (48, 24), (shade, 90, 200)).save(run / "plots" / f"fedavg-{tag}.png")
    return run


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, Path, Path]:
    """One run folder rendered once for the tests that only read the output."""
    run = make_run(tmp_path_factory.mktemp("runs"))
    md, html = render_report(run)
    return run, md, html


# ---------------------------------------------------------------------------- aggregation by hand
def _tiny() -> RunData:
    rows = [
        # seed 0: clients 0.6 0.7 0.8 (mean 0.7, sd 0.1); seed 1: 0.5 0.7 NaN (mean 0.6, sd sqrt(0.02))
        (0, "fedavg", "client-000", "personal_macro_auroc", 0.6), (0, "fedavg", "client-001", "personal_macro_auroc", 0.7),
        (0, "fedavg", "client-002", "personal_macro_auroc", 0.8), (1, "fedavg", "client-000", "personal_macro_auroc", 0.5),
        (1, "fedavg", "client-001", "personal_macro_auroc", 0.7), (1, "fedavg", "client-002", "personal_macro_auroc", math.nan),
        *((s, "fedavg", c, "pretrained_personal_macro_auroc", 0.5) for s in (0, 1) for c in ("client-000", "client-001", "client-002")),
        # only scheme-level: used; client rows exist for bytes_down, so its "all" row is ignored
        (0, "fedavg", "all", "bytes_up", 100.0), (1, "fedavg", "all", "bytes_up", 200.0),
        (0, "fedavg", "client-000", "bytes_down", 10.0), (0, "fedavg", "all", "bytes_down", 999.0),
    ]
    return RunData(Path("tiny"), pd.DataFrame(rows, columns=["seed", "scheme", "client", "metric", "value"]))


def test_aggregation_matches_hand_computation():
    stats = metric_stats(_tiny().results).set_index("metric")
    auc = stats.loc["personal_macro_auroc"]
    assert auc["mean"] == pytest.approx(0.65)
    assert auc["sd"] == pytest.approx((0.1 + math.sqrt(0.02)) / 2)
    half = T_975_1 * math.sqrt(0.005) / math.sqrt(2)  # sd of the seed means (0.7, 0.6) is sqrt(0.005)
    assert auc["ci_low"] == pytest.approx(0.65 - half) and auc["ci_high"] == pytest.approx(0.65 + half)
    assert (auc["n_clients"], auc["n_seeds"]) == (3, 2)
    # improvement: seed 0 -> 0.1 0.2 0.3 (mean 0.2), seed 1 -> 0.0 0.2 NaN (mean 0.1)
    assert stats.loc["improvement_macro_auroc", "mean"] == pytest.approx(0.15)
    up = stats.loc["bytes_up"]
    assert up["mean"] == pytest.approx(150.0) and math.isnan(up["sd"]) and up["n_clients"] == 1
    assert up["ci_high"] - up["mean"] == pytest.approx(T_975_1 * 50.0)
    assert stats.loc["bytes_down", "mean"] == 10.0  # the "all" row (999) is not mixed in
    assert all(math.isnan(v) for v in t_interval([1.0]))  # no interval from one seed


def test_single_seed_has_no_interval_and_formats_are_fixed():
    one = _tiny().results.query("seed == 0")
    auc = metric_stats(one).set_index("metric").loc["personal_macro_auroc"]
    assert math.isnan(auc["ci_low"]) and auc["n_seeds"] == 1
    assert fmt_stat(auc.to_dict(), "score") == "0.700 ± 0.100"
    assert fmt_stat({"mean": 0.65, "sd": 0.12, "ci_low": 0.01469, "ci_high": 1.28531}, "score") == "0.650 ± 0.120 [0.015, 1.285]"
    assert fmt_stat({"mean": -0.0001, "sd": math.nan}, "delta") == "+0.000"  # no negative zero
    assert (fmt_bytes(0), fmt_bytes(1536), fmt_bytes(720_000)) == ("0 B", "1.5 KiB", "703.1 KiB")


def test_best_leakage_picks_the_strongest_evidence_and_names_not_applicable():
    attacks = pd.DataFrame([
        (0, "fed-mu", "client-000", 1, "labels", "curious-server", "applicable", 0.0, "",
         "not applicable: decoder.layers.1.ff.bias is not shared"),
        (0, "mu-ft", "client-000", math.nan, "none", "none", "applicable", 0.0, "", NA_DEVICE),
    ], columns=["seed", "scheme", "client", "round", "attack", "threat_model", "metric", "value", "settings", "note"])
    cols = ["scheme", "quantity", "attack", "threat_model", "estimate", "null", "gain", "ci_low", "ci_high", "level",
            "compared", "n_units", "n_clients", "verdict", "note"]
    leakage = pd.DataFrame([
        ("fedavg", "waveform_r", "dlg", "curious-server", 0.6, 0.3, 0.3, 0.1, 0.5, 0.9875, 4, 16, 4, "leaks", ""),
        ("fedavg", "waveform_r", "ig", "curious-server", 0.7, 0.3, 0.4, -0.1, 0.9, 0.9875, 4, 16, 4, "no evidence", ""),
        ("fedavg", "waveform_lag_r", "dlg", "curious-server", 0.5, 0.4, 0.1, 0.05, 0.15, 0.9875, 4, 16, 4, "leaks", ""),
        ("fed-mu", "waveform_r", "dlg", "curious-server", 0.3, 0.3, 0.0, -0.1, 0.1, 0.975, 2, 16, 4, "no evidence", ""),
    ], columns=cols)
    results = pd.DataFrame([(0, "fedavg", "client-000", "personal_macro_auroc", 0.6)],
                           columns=["seed", "scheme", "client", "metric", "value"])
    best = best_leakage(RunData(Path("x"), results, attacks=attacks, leakage=leakage)).set_index(["scheme", "quantity"])
    fed = best.loc[("fedavg", "leak_waveform")]
    # the strongest evidence is the highest adjusted lower bound (dlg's r, 0.1), not the largest gain (ig's 0.4)
    assert fed["mean"] == pytest.approx(0.3) and fed["attack"].startswith("dlg,") and fed["note"] == "leaks"
    assert (fed["ci_low"], fed["ci_high"]) == (0.1, 0.5) and fed["threat_model"] == "curious-server"
    mu = best.loc[("mu-ft", "leak_labels")]
    assert math.isnan(mu["mean"]) and mu["note"] == "not applicable" and mu["threat_model"] == NA_DEVICE
    assert best.loc[("fed-mu", "leak_labels")]["threat_model"].endswith("is not shared")
    assert best.loc[("fed-mu", "leak_waveform")]["note"] == "no evidence"
    assert ("fedavg", "leak_labels") not in best.index  # no label attack ran: no row, shown as —


def test_summary_of_a_full_run(tmp_path):
    run = load_run(make_run(tmp_path))
    summary = scheme_summary(run)
    assert list(dict.fromkeys(summary["scheme"])) == ["mu-ft", "fedavg", "dp-fedavg", "fedrep"]  # the DESIGN's order
    eps = summary[summary["quantity"] == "epsilon"]
    assert list(eps["scheme"]) == ["dp-fedavg"] and 2.0 <= eps["mean"].iloc[0] <= 4.0
    up = summary.set_index(["scheme", "quantity"])["mean"]
    assert up[("mu-ft", "bytes_up")] == 0 and up[("fedavg", "bytes_up")] == 720_000
    assert up[("fedavg", "rounds")] == 3  # from the scheme-level "all" rows
    assert up[("fedavg", "leak_waveform")] > up[("dp-fedavg", "leak_waveform")]
    verdict = summary.set_index(["scheme", "quantity"])["note"]
    assert verdict[("fedavg", "leak_waveform")] == "leaks" and verdict[("dp-fedavg", "leak_waveform")] == "no evidence"
    per_round = ledger_per_round(run.ledger)
    fed_up = per_round[(per_round["scheme"] == "fedavg") & (per_round["direction"] == "up")]
    assert list(fed_up["bytes"]) == [4 * 240_000] * 3  # summed over 4 clients, mean over 2 seeds


def test_curve_means_average_clients_then_seeds(tmp_path):
    from simulator.report.tables import curve_means

    run = load_run(make_run(tmp_path))
    means = curve_means(run.rounds).set_index(["scheme", "round"])
    raw = pd.read_csv(run.run_dir / "rounds.csv")
    auroc = raw[(raw["scheme"] == "fedavg") & (raw["round"] == 2) & (raw["metric"] == "personal_macro_auroc")]
    assert means.loc[("fedavg", 2), "personal_macro_auroc"] == pytest.approx(auroc.groupby("seed")["value"].mean().mean())
    assert means.loc[("fedavg", 3), "bytes_up"] == 3 * 240_000 and means.loc[("mu-ft", 3), "bytes_up"] == 0
    assert list(means.index.get_level_values("scheme").unique()) == ["mu-ft", "fedavg", "dp-fedavg", "fedrep"]


# ---------------------------------------------------------------------------- report.md / report.html
def test_report_files_are_written_and_self_contained(rendered):
    run, md, html = rendered
    assert md == run / "report.md" and html == run / "report.html"
    text, page = md.read_text(), html.read_text()
    for section in ("## Run", "## Summary", "## Plots", "## Example reconstructions", "## Per class",
                    "## Leakage in detail", "## Attacks in detail", "## Ledger totals", "## Appendix: other metrics", "## Appendix: configuration"):
        assert section in text
    for figure in ("frontier", "per-client-auroc", "epsilon-vs-accuracy", "bytes-per-round", "auroc-per-round",
                   "auroc-vs-bytes-up"):
        assert f"](figures/{figure}.png)" in text and (run / "figures" / f"{figure}.png").is_file()
    assert "](plots/fedavg-best.png)" in text and "](plots/fedavg-median.png)" in text
    imgs = re.findall(r"<img [^>]*>", page)
    assert len(imgs) == 8 and all('src="data:image/png;base64,' in i for i in imgs)
    assert "http://" not in page and "https://" not in page and "<script" not in page and "<link" not in page
    assert "abc123" in text and "deadbeef" in text  # manifest essentials in the header
    assert "custom_metric" in text  # unknown metric in the appendix
    assert "n/a (nothing leaves the device)" in text
    assert "curious-server" in text
    # the threat models used, on the literature's axes (position, access, knowledge levels)
    assert "honest-but-curious server" in text and "K0, K1" in text and "client-private side information" in text
    assert not list(run.glob(".*.tmp"))  # no temporary files left behind


def test_rerendering_gives_identical_files(rendered):
    run, md, html = rendered
    before = {p: p.read_bytes() for p in (md, html, *sorted((run / "figures").glob("*.png")))}
    render_report(run)
    after = {p: p.read_bytes() for p in before}
    assert before[md] == after[md]
    assert before == after  # HTML and PNGs too (same matplotlib)


def test_a_run_without_dp_ledger_attacks_or_plots_still_renders(tmp_path):
    run = make_run(tmp_path, reconstructions=False)
    for name in ("attacks.csv", "ledger.csv", "manifest.json", "config.toml", "rounds.csv"):
        (run / name).unlink()
    results = pd.read_csv(run / "results.csv")
    results[results["scheme"] != "dp-fedavg"].to_csv(run / "results.csv", index=False)
    md, html = render_report(run)
    text = md.read_text()
    assert "No DP scheme in this run" in text and "No reconstruction plots" in text and "No ledger.csv" in text
    assert "No rounds.csv in this run" in text and not (run / "figures" / "auroc-per-round.png").exists()
    assert not (run / "figures" / "epsilon-vs-accuracy.png").exists()
    assert html.read_text().count("data:image/png;base64,") == 2  # frontier + per-client


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Put first in <head>: records errors (scripts and failed resources, in the capture phase) and
# console.error calls, then on load writes the images' status into the DOM for --dump-dom.
_PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(e.message || ('resource failed: ' + ((e.target && e.target.tagName) || '?')));
}, true);
var __consoleError = console.error;
console.error = function () { window.__errors.push(Array.prototype.join.call(arguments, ' ')); __consoleError.apply(console, arguments); };
window.addEventListener('load', function () {
  var imgs = Array.prototype.map.call(document.images, function (i) { return {w: i.naturalWidth, ok: i.complete}; });
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify({images: imgs, errors: window.__errors});
  document.body.appendChild(pre);
});
</script>"""


def test_html_opens_in_a_headless_browser(rendered, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed: apt-get install chromium to run the browser check")
    _, _, html = rendered
    page = tmp_path / "probe.html"  # the report itself has no script; the probe goes into a copy
    page.write_text(html.read_text().replace("<head>", "<head>\n" + _PROBE, 1))
    proc = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
         "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
         "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"probe did not run; stderr: {proc.stderr[-2000:]}"
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["errors"] == []
    assert len(probe["images"]) == 8 and all(i["ok"] and i["w"] > 0 for i in probe["images"]), probe
    console_errors = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln and "ERROR" in ln.upper()]
    assert console_errors == []


# ---------------------------------------------------------------------------- terminal and compare
def test_terminal_comparison_table(rendered):
    run, _, _ = rendered
    console = Console(record=True, width=320, color_system=None)
    console.print(comparison_table(run))
    out = console.export_text()
    for scheme in ("mu-ft", "fedavg", "dp-fedavg", "fedrep"):
        assert scheme in out
    assert "n/a (nothing leaves the device)" in out and "95%" in out and "0 B" in out
    assert "95% 0 B" not in out  # no zero-width intervals


def test_compare_runs_side_by_side(tmp_path):
    a = make_run(tmp_path / "a", name="quick-1", rng_seed=1, reconstructions=False)
    b = make_run(tmp_path / "b", name="quick-2", rng_seed=2, seeds=(0,), reconstructions=False)
    wide = compare_runs([a, b])
    assert list(wide.columns) == ["quick-1", "quick-2"] and wide.index.names == ["scheme", "quantity"]
    assert wide.index[0] == ("mu-ft", "personal_macro_f1")
    assert wide.loc[("fedavg", "bytes_up")].tolist() == [720_000, 720_000]
    assert np.isnan(wide.loc[("mu-ft", "epsilon")]).all() if ("mu-ft", "epsilon") in wide.index else True
    md = compare_markdown([a, b])
    assert "| scheme | quantity | quick-1 | quick-2 |" in md
    console = Console(record=True, width=200, color_system=None)
    console.print(compare_table([a, b]))
    assert "quick-2" in console.export_text()
    # the same folder name under two parents: the paths tell them apart
    c = make_run(tmp_path / "c", name="quick-1", reconstructions=False)
    assert list(compare_runs([a, c]).columns) == [str(a), str(c)]


def test_commands(tmp_path, capsys):
    a = make_run(tmp_path / "a", name="r1", reconstructions=False)
    b = make_run(tmp_path / "b", name="r2", reconstructions=False)
    report_command(a)
    assert (a / "report.md").is_file() and (a / "report.html").is_file()
    compare_command([a, b], tmp_path / "cmp.md")
    compare_command([a, b], tmp_path / "cmp.csv")
    assert "| scheme | quantity | r1 | r2 |" in (tmp_path / "cmp.md").read_text()
    csv = pd.read_csv(tmp_path / "cmp.csv")
    assert list(csv.columns) == ["scheme", "quantity", "r1", "r2"]
    assert "mu-ft" in capsys.readouterr().out


# ---------------------------------------------------------------------------- bad input
def _expect(fn, *patterns: str) -> None:
    with pytest.raises(MuprivError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg, msg
    for p in patterns:
        assert p in msg, msg


def test_bad_input_is_one_clear_line(tmp_path):
    _expect(lambda: report_command(tmp_path / "nope"), "nope", "does not exist", "mupriv simulate")
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect(lambda: report_command(empty), "results.csv", "is missing", "--resume")
    run = make_run(tmp_path, name="bad", reconstructions=False)
    results = run / "results.csv"
    good = results.read_text()
    results.write_text(good.replace("metric", "measure", 1))
    _expect(lambda: report_command(run), "results.csv", "lacks column(s) metric", "re-run")
    results.write_text(good.replace("\n0,mu-ft,client-000,pretrained_personal_macro_auroc,", "\n0,mu-ft,client-000,pretrained_personal_macro_auroc,x", 1))
    _expect(lambda: report_command(run), "results.csv line 2", "value", "not a number")
    results.write_text(good.replace("\n0,", "\nzero,", 1))
    _expect(lambda: report_command(run), "results.csv line 2", "seed 'zero' is not an integer")
    results.write_text("")
    _expect(lambda: report_command(run), "results.csv", "is empty")
    results.write_text("seed,scheme,client,metric,value\n")
    _expect(lambda: report_command(run), "results.csv", "has no rows")
    results.write_text(good)
    (run / "attacks.csv").write_text("seed,scheme\n0,fedavg\n")
    _expect(lambda: report_command(run), "attacks.csv", "lacks column(s)")
    (run / "attacks.csv").unlink()
    (run / "manifest.json").write_text("{not json")
    _expect(lambda: report_command(run), "manifest.json", "not valid JSON")
    (run / "manifest.json").unlink()
    _expect(lambda: compare_command([run, run], None), "given twice")
    (tmp_path / "outdir").mkdir()
    _expect(lambda: compare_command([run], tmp_path / "outdir"), "is a folder")
    report_command(run)  # and after the fixes it renders


def test_scheme_level_epsilon_applies_to_every_client():
    from simulator.report.plots import epsilon_png

    results = pd.DataFrame([
        (0, "dp-central", "client-000", "personal_macro_auroc", 0.6), (0, "dp-central", "client-001", "personal_macro_auroc", 0.7),
        (0, "dp-central", "all", "epsilon", 8.0), (0, "fedavg", "client-000", "personal_macro_auroc", 0.8),
    ], columns=["seed", "scheme", "client", "metric", "value"])
    summary = scheme_summary(RunData(Path("x"), results))
    assert summary.set_index(["scheme", "quantity"]).loc[("dp-central", "epsilon"), "mean"] == 8.0
    png = epsilon_png(results, summary)
    assert png is not None and png.startswith(b"\x89PNG")
    assert epsilon_png(results[results["metric"] != "epsilon"], summary) is None
