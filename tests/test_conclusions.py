"""The conclusions table's paired differences, against a hand computation."""
import math

import pandas as pd
import pytest

from simulator.report.conclusions import conclusions, paired_difference, points_compared, verdict


def _results(values: dict[tuple[str, int, str], tuple[float, float]]) -> pd.DataFrame:
    """(scheme, seed, client) -> (pretrained, personal) macro-AUROC, as results.csv rows."""
    rows = []
    for (scheme, seed, client), (before, after) in values.items():
        rows += [{"seed": seed, "scheme": scheme, "client": client, "metric": "pretrained_personal_macro_auroc",
                  "value": before},
                 {"seed": seed, "scheme": scheme, "client": client, "metric": "personal_macro_auroc", "value": after}]
    return pd.DataFrame(rows)


def test_several_seeds_give_an_interval_over_seed_means():
    # gains (after - before): mu-ft 0.10/0.20 (seed 0), 0.30/0.10 (seed 1), 0.20/0.20 (seed 2);
    # fedavg 0.05/0.05, 0.10/0.10, 0.00/0.10 -> paired differences per seed: mean(0.05, 0.15) = 0.10,
    # mean(0.20, 0.00) = 0.10, mean(0.20, 0.10) = 0.15
    gains = {("mu-ft", 0): (0.10, 0.20), ("mu-ft", 1): (0.30, 0.10), ("mu-ft", 2): (0.20, 0.20),
             ("fedavg", 0): (0.05, 0.05), ("fedavg", 1): (0.10, 0.10), ("fedavg", 2): (0.00, 0.10)}
    values = {(s, seed, f"c{i}"): (0.5, 0.5 + g[i]) for (s, seed), g in gains.items() for i in range(2)}
    table = conclusions(_results(values))
    row = table[table["metric"] == "improvement_macro_auroc"].iloc[0]
    seed_means = [0.10, 0.10, 0.15]
    mean = sum(seed_means) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in seed_means) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2 df), one scheme compared: no adjustment
    assert row["scheme"] == "fedavg" and row["n_seeds"] == 3 and row["n_pairs"] == 6
    assert row["difference"] == pytest.approx(mean) and row["level"] == pytest.approx(0.95)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((mean - half, mean + half))
    assert row["verdict"] == "better"  # 0.117 +- 0.072: above 0


def test_one_seed_uses_its_patients_and_says_so_and_the_family_is_adjusted():
    values = {}
    for i, (mu, fed, loc) in enumerate([(0.20, 0.10, 0.25), (0.10, 0.15, 0.05), (0.15, 0.05, 0.20)]):
        values[("mu-ft", 0, f"c{i}")] = (0.5, 0.5 + mu)
        values[("fedavg", 0, f"c{i}")] = (0.5, 0.5 + fed)
        values[("local-ft", 0, f"c{i}")] = (0.5, 0.5 + loc)
    table = conclusions(_results(values))
    row = table[(table["metric"] == "improvement_macro_auroc") & (table["scheme"] == "fedavg")].iloc[0]
    diffs = [0.10, -0.05, 0.10]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    half = 6.205346816 * sd / math.sqrt(3)  # t(1 - 0.025/2, 2 df): two schemes compared
    assert row["level"] == pytest.approx(0.975)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((mean - half, mean + half), rel=1e-6)
    assert "one seed" in row["basis"] and row["verdict"] == "no detectable difference"


def test_verdicts_follow_the_direction_that_is_better():
    above = {"ci_low": 0.1, "ci_high": 0.3}
    assert verdict(above, higher_is_better=True) == "better"
    assert verdict(above, higher_is_better=False) == "worse"  # e.g. more forgetting
    assert verdict({"ci_low": -0.1, "ci_high": 0.3}, True) == "no detectable difference"
    assert verdict({"ci_low": math.nan, "ci_high": math.nan}, True) == "too few patients to tell"


def test_unpaired_patients_are_not_compared():
    values = {("mu-ft", 0, "a"): (0.5, 0.6), ("fedavg", 0, "b"): (0.5, 0.7)}
    assert paired_difference(_results(values), "personal_macro_auroc", "mu-ft", "fedavg") is None
    assert conclusions(_results({("fedavg", 0, "a"): (0.5, 0.7)})).empty  # no mu-ft: nothing to conclude


def test_sweep_points_are_compared_with_the_first_point_by_hand():
    """A sweep's results.csv (a point column): p01 and p02 against p00, per scheme, paired per (seed, client)."""
    # mu-ft's gains per (point, seed) for clients c0/c1; p01 - p00 per seed: 0.10, 0.12, 0.14; p02 - p00: 0, 0, 0.
    gains = {("p00", 0): (0.10, 0.10), ("p00", 1): (0.20, 0.00), ("p00", 2): (0.10, 0.10),
             ("p01", 0): (0.20, 0.20), ("p01", 1): (0.30, 0.14), ("p01", 2): (0.24, 0.24),
             ("p02", 0): (0.10, 0.10), ("p02", 1): (0.20, 0.00), ("p02", 2): (0.10, 0.10)}
    parts = [_results({("mu-ft", seed, f"c{i}"): (0.5, 0.5 + g[i]) for i in range(2)}).assign(point=p)
             for (p, seed), g in gains.items()]
    # each seed's pretrained model scored 0.80/0.82/0.84 (p00) and 0.85/0.86/0.87 (p01) on the source before the
    # device trained: results.csv holds it as the score after plus the forgetting (0.1 and 0.05 per client)
    before = {"p00": (0.80, 0.82, 0.84), "p01": (0.85, 0.86, 0.87), "p02": (0.80, 0.82, 0.84)}
    for p, scores in before.items():
        for seed, score in enumerate(scores):
            for i, drop in enumerate((0.1, 0.05)):
                parts.append(pd.DataFrame([
                    {"seed": seed, "scheme": "mu-ft", "client": f"c{i}", "metric": "source_macro_auroc", "value": score - drop, "point": p},
                    {"seed": seed, "scheme": "mu-ft", "client": f"c{i}", "metric": "forgetting_macro_auroc", "value": drop, "point": p}]))
    table = points_compared(pd.concat(parts, ignore_index=True), reference="p00")
    source = table[table["metric"] == "pretrained_source_macro_auroc"].set_index("point").loc["p01"]
    half = 6.205346816 * 0.01 / math.sqrt(3)  # differences 0.05, 0.04, 0.03: mean 0.04, sd 0.01
    assert (source["difference"], source["ci_low"], source["ci_high"]) == pytest.approx((0.04, 0.04 - half, 0.04 + half))
    assert source["verdict"] == "better"
    gain = table[table["metric"] == "improvement_macro_auroc"].set_index("point")
    assert list(gain.index) == ["p01", "p02"] and set(gain["scheme"]) == {"mu-ft"}
    seed_means = [0.10, 0.12, 0.14]
    mean = sum(seed_means) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in seed_means) / 2)
    half = 6.205346816 * sd / math.sqrt(3)  # t(1 - 0.025/2, 2 df): two points compared with the reference
    row = gain.loc["p01"]
    assert row["difference"] == pytest.approx(mean) and row["level"] == pytest.approx(0.975)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((mean - half, mean + half), rel=1e-6)
    assert row["verdict"] == "better" and row["n_seeds"] == 3 and row["n_pairs"] == 6  # 0.12 +- 0.072
    assert gain.loc["p02", "difference"] == pytest.approx(0.0) and gain.loc["p02", "verdict"] == "no detectable difference"
