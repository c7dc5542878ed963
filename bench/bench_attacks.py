"""Attack benchmark: leakage numbers and attack speed, measured in one run (CPU, shared machine).

Sections (each prints one JSON line, then a summary table):
  labels      sign-rule exact-match of batch-1 updates on random TDSSMs (one SGD step; 3 epochs of the
              project's AdamW train_phase with dropout on), and calibrated per-class counts of SGD batches
  fc          DLG and Inverting Gradients on a small fully connected model, one record (Pearson r)
  tdssm       attack_run on real Flower FedAvg runs of a d_model-16, 256-sample TDSSM on synthetic ECGs:
              batch-1 SGD, batch-8 SGD, batch-1 AdamW (3 local epochs); budget --budget (default standard)
  speed       matching iterations per second on TDSSM at d_model 128, 4,096 samples (one record)
  quickstart  wall time of `attack_run` (quick budget) on one FedAvg run shaped like configs/quickstart.toml
              (d_model 128, 1,024 samples at 100 Hz, 4 clients x 34 records, batch 16, 2 rounds)
  suite       the whole attack suite at --budget (default standard) on a real `mupriv simulate
              configs/quickstart.toml` run folder (--run DIR, or one made here with attacks off): wall time
              per scheme cell, where it goes per attack (the attacks' own `seconds`), scoring, the DP audit,
              and the ratio to the 5-minute target

Usage: python bench/bench_attacks.py [--sections labels,fc,tdssm,speed,quickstart,suite] [--budget standard]
                                     [--threads 1] [--run RUN_DIR]
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attacks.inversion import InversionConfig, invert, match_residual  # noqa: E402
from attacks.labels import calibrate_counts, estimate_labels, gradient_like, motor_bias_name  # noqa: E402
from attacks.metrics import pearson_per_lead  # noqa: E402
from attacks.model import attacker_model, bce_loss, kernel_param_names  # noqa: E402
from attacks.observe import LocalTraining  # noqa: E402
from attacks.run import attack_run  # noqa: E402
from attacks.replay import MatchProblem, one_step_update  # noqa: E402
from simulator.core.model import ModelConfig, TDSSM  # noqa: E402
from simulator.core.phases import Phase, masked_bce, train_phase  # noqa: E402
from simulator.core.tensors import ECGTensors  # noqa: E402

LABEL_SETS = [np.array(v) for v in itertools.product([0, 1], repeat=6)]  # all 64 diagnosis combinations


def _emit(name: str, result: dict) -> dict:
    print(json.dumps({"section": name, **result}, default=float), flush=True)
    return result


def bench_labels(seeds: int = 4) -> dict:
    sgd_hits = adam_hits = total = 0
    for seed in range(seeds):
        torch.manual_seed(seed)
        base = TDSSM(ModelConfig(d_model=16))
        with torch.no_grad():
            for p in base.parameters():
                p.add_(0.3 * torch.randn_like(p))
        start = {n: p.detach().clone() for n, p in base.named_parameters()}
        for k, y in enumerate(LABEL_SETS):
            x = torch.rand(1, 128, 12, generator=torch.Generator().manual_seed(seed * 100 + k))
            data = ECGTensors.from_arrays(x.numpy(), y[None].astype(np.float32))
            name = motor_bias_name()
            model = TDSSM(ModelConfig(d_model=16))
            model.load_state_dict(base.state_dict())
            model.eval()
            loss = masked_bce(model(x), data.y, data.known, 6.0)
            (g,) = torch.autograd.grad(loss, [dict(model.named_parameters())[name]])
            sgd_hits += int(np.array_equal(estimate_labels(g.numpy(), 6, 1, None).record_labels[0], y))
            model.load_state_dict(base.state_dict())
            steps = train_phase(model, Phase("device", ("encoder", "middle", "decoder"), 3, data="personal"), data, None,
                                seed=k).steps
            tr = LocalTraining(optimizer="adamw", lr=3e-3, weight_decay=0.01, local_epochs=3, batch_size=32)
            delta = dict(model.named_parameters())[name].detach().numpy() - start[name].numpy()
            est = estimate_labels(gradient_like(delta, start[name].numpy(), tr, steps), 6, 1, None)
            adam_hits += int(np.array_equal(est.record_labels[0], y))
            total += 1
    # Batches: calibrated counts from one SGD gradient of 8 records.
    maes, exact = [], []
    gen = torch.Generator().manual_seed(0)
    model = TDSSM(ModelConfig(d_model=16, dropout=0.0)).eval()
    for _ in range(16):
        x = 0.5 + 0.2 * torch.randn(8, 128, 12, generator=gen)
        y = (torch.rand(8, 6, generator=gen) < 0.3).float()
        loss = masked_bce(model(x), y, torch.ones_like(y, dtype=torch.bool), 6.0)
        (g,) = torch.autograd.grad(loss, [dict(model.named_parameters())[motor_bias_name()]])
        est = estimate_labels(g.numpy(), 6, 8, calibrate_counts(model, 0.5 + 0.2 * torch.randn(64, 128, 12, generator=gen), 6.0))
        maes.append(float(np.abs(est.counts - y.sum(0).numpy()).mean()))
        exact.append(bool(np.array_equal(est.presence, (y.sum(0) > 0).numpy().astype(int))))
    return _emit("labels", {"records": total, "batch1_sgd_exact": sgd_hits / total, "batch1_adamw_3epochs_exact": adam_hits / total,
                            "batch8_sgd_count_mae": float(np.mean(maes)), "batch8_sgd_presence_exact": float(np.mean(exact))})


def bench_fc(seeds: int = 5) -> dict:
    L, leads = 64, 2
    tr = LocalTraining(optimizer="sgd", lr=0.1, weight_decay=0.0, local_epochs=1, batch_size=1, schedule="constant")
    rs: dict[str, list[float]] = {"dlg": [], "ig": []}
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(L * leads, 32), torch.nn.Sigmoid(), torch.nn.Linear(32, 6)).eval()
        t = torch.linspace(0, 1, L)
        x = torch.stack([0.5 + 0.3 * torch.sin(2 * np.pi * (3 + seed) * t), 0.5 + 0.3 * torch.cos(2 * np.pi * 5 * t)], 1)[None]
        y = (torch.rand(1, 6) > 0.5).float()
        base = {n: p.detach().clone() for n, p in model.named_parameters()}
        prob = MatchProblem(model, base, tuple(base), {}, tr, bce_loss(6.0), (L, leads), 6, 1)
        prob.target = {k: v.detach() for k, v in one_step_update(prob, x, y, create_graph=False).items()}
        for method, kw in (("dlg", dict(iters=20, inner=20, labels="joint")), ("ig", dict(iters=500, labels="known"))):
            rec = invert(prob, InversionConfig(method=method, value_range=(0.0, 1.0), seed=seed, **kw), known_labels=y.numpy())
            rs[method].append(float(np.nanmean(pearson_per_lead(rec.x[0], x[0].numpy()))))
    return _emit("fc", {f"{m}_r_mean": float(np.mean(v)) for m, v in rs.items()} | {f"{m}_r_min": float(np.min(v)) for m, v in rs.items()})


def bench_tdssm(budget: str, workdir: Path) -> dict:
    from tests.attack_fixtures import fedavg_run_dir

    out = {}
    cases = {"sgd-batch1": dict(per_client=1, optimizer="sgd", lr=0.05, epochs=1),
             "sgd-batch8": dict(per_client=8, optimizer="sgd", lr=0.05, epochs=1, batch_size=8),
             "adamw-batch1-3epochs": dict(per_client=1, optimizer="adamw", lr=3e-3, epochs=3)}
    metrics = ["residual", "label_exact", "presence_exact", "count_mae", "feat_ccos_best", "r", "lag_r", "r_gain", "mse_skill",
               "reid_top1", "reid_rank", "cohort_size", "seconds"]
    for name, kw in cases.items():
        run_dir = fedavg_run_dir(workdir / name, n_clients=4, rounds=1, **kw)
        frame = attack_run(run_dir, budget, seed=0)
        table = frame[frame["metric"].isin(metrics)].pivot_table(index="attack", columns="metric", values="value", aggfunc="mean")
        out[name] = {a: {m: float(v) for m, v in row.items() if np.isfinite(v)} for a, row in table.iterrows()}
        _emit(f"tdssm/{name}", out[name])
    return out


def bench_speed(repeats: int = 3) -> dict:
    cfg = ModelConfig(d_model=128)
    model = attacker_model(cfg)
    base = {k: v.detach().clone() for k, v in model.named_parameters()}
    tr = LocalTraining(batch_size=32, local_epochs=1)
    out = {}
    for dtype in (torch.float32, torch.float64):
        prob = MatchProblem(model, base, tuple(base), {k: torch.randn_like(v) for k, v in base.items()}, tr, bce_loss(6.0),
                            (4096, 12), 6, 1, kernel_names=kernel_param_names(model)).to(dtype)
        x = torch.rand(1, 4096, 12, dtype=dtype, requires_grad=True)
        y = torch.rand(1, 6, dtype=dtype)
        res, _ = match_residual(prob, x, y, "ig", False, 1)
        res.backward()  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            res, _ = match_residual(prob, x, y, "ig", False, 1)
            res.backward()
        out[f"iters_per_s_{str(dtype).split('.')[-1]}"] = repeats / (time.perf_counter() - start)
    model.to(torch.float32)
    return _emit("speed", {"d_model": 128, "length": 4096, "records": 1, **out})


def bench_quickstart(workdir: Path) -> dict:
    from tests.attack_fixtures import client_data, fedavg_apps, write_run_dir
    from simulator.engine.api import run_federation

    cfg = ModelConfig(d_model=128, dropout=0.0)
    data = client_data(4, 34, length=1024)
    start = time.perf_counter()
    server, client = fedavg_apps(data, rounds=2, lr=3e-3, epochs=1, batch_size=16, optimizer="adamw", cfg=cfg)
    result = run_federation(server, client, 4, scheme="fedavg")
    fed_s = time.perf_counter() - start
    run_dir = write_run_dir(workdir / "quickstart", scheme="fedavg", ledger=result.ledger, data=data, optimizer="adamw", lr=3e-3,
                            epochs=1, batch_size=16, observable="per-client updates", cfg=cfg, length=1024)
    start = time.perf_counter()
    frame = attack_run(run_dir, "quick", seed=0)
    attack_s = time.perf_counter() - start
    lab = frame[(frame["attack"] == "labels") & (frame["metric"] == "presence_f1")]["value"]
    return _emit("quickstart", {"federation_s": fed_s, "attack_run_quick_s": attack_s, "observations": 8,
                                "labels_presence_f1": float(lab.mean()), "note": "fs 400 Hz here (the generator's rate)"})


SUITE_TARGET_S = 300.0  # the privacy issue's target for the standard suite on the quickstart, 2 cores


def _quickstart_run(workdir: Path) -> Path:
    """A quickstart run folder without attacks (cohort, pretraining, every scheme), for the suite to attack."""
    from simulator.config import load_config
    from simulator.simulate import simulate

    cfg = load_config(ROOT / "configs" / "quickstart.toml")
    return simulate(cfg, runs_root=workdir, name="bench", attack=False).run_dir


def bench_suite(budget: str, run_dir: Path | None, workdir: Path) -> dict:
    """The attack suite on every cell of a quickstart run folder, timed per cell and split per attack."""
    import pandas as pd

    from attacks.run import attack_run_report
    from simulator.config import load_config

    made = run_dir is None
    start = time.perf_counter()
    run = _quickstart_run(workdir) if made else Path(run_dir)
    setup_s = time.perf_counter() - start
    cfg = load_config(run / "config.toml")
    per_cell, per_attack = {}, {}
    total = 0.0
    for cell in sorted(p.parent for p in (run / "schemes").glob("*/seed-*/scheme.json")):
        t0 = time.perf_counter()
        report = attack_run_report(cell, budget, seed=0)
        wall = time.perf_counter() - t0
        total += wall
        per_cell[cell.parent.name] = round(wall, 1)
        secs = report.frame[report.frame["metric"] == "seconds"]
        mine = secs.groupby(secs["attack"].str.split("@").str[0])["value"].sum()
        for attack, v in mine.items():
            per_attack[attack] = per_attack.get(attack, 0.0) + float(v)
        print(json.dumps({"cell": cell.parent.name, "wall_s": round(wall, 1),  # progress: a long budget shows where
                          "per_attack_s": {k: round(float(v), 1) for k, v in mine.items()}}), flush=True)  # time goes
        audit = cell / "audit.csv"
        if audit.is_file():
            a = pd.read_csv(audit)
            per_attack["dp-audit (run by simulate)"] = float(a[a["metric"] == "seconds"]["value"].max())
    attacked = sum(per_attack.get(a, 0.0) for a in per_attack if not a.startswith("dp-audit"))
    return _emit("suite", {"budget": budget, "run": str(run), "made_here_s": round(setup_s, 1) if made else None,
                           "attack_wall_s": round(total, 1), "target_s": SUITE_TARGET_S,
                           "ratio_to_target": round(total / SUITE_TARGET_S, 2), "per_scheme_s": per_cell,
                           "per_attack_s": {k: round(v, 1) for k, v in sorted(per_attack.items(), key=lambda kv: -kv[1])},
                           "scoring_shadows_and_overhead_s": round(total - attacked, 1), "engine": cfg.federation.engine})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sections", default="labels,fc,tdssm,speed,quickstart")
    ap.add_argument("--budget", default="standard")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--run", type=Path, default=None, help="a quickstart run folder for the suite section")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sections = args.sections.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="bench-attacks-"))
    try:
        if "labels" in sections:
            bench_labels()
        if "fc" in sections:
            bench_fc()
        if "tdssm" in sections:
            bench_tdssm(args.budget, workdir)
        if "speed" in sections:
            bench_speed()
        if "quickstart" in sections:
            bench_quickstart(workdir)
        if "suite" in sections:
            bench_suite(args.budget, args.run, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
