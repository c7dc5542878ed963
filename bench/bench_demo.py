"""The demo's targets, measured in one run: `mupriv simulate configs/quickstart.toml` under 3 minutes
on 2 cores and under 3 GB peak memory, pretraining cached or not.

Runs the CLI in a child process (the way `make demo` does), reads the per-step timestamps it logs,
and prints wall time per stage (cohort + pretraining, each scheme, each scheme's attacks, the report),
peak resident memory of the child (getrusage), and the ratios to the targets.

    .venv/bin/python bench/bench_demo.py [--config configs/quickstart.toml] [--cold]

--cold uses an empty pretraining cache (what a fresh clone sees); the default reuses the cache.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 180.0
TARGET_BYTES = 3 * 1024**3
STEP = re.compile(r"^\[?(\d\d:\d\d:\d\d)?\]?\s*(seed \d+: .*|writing the report)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/quickstart.toml")
    ap.add_argument("--cold", action="store_true", help="empty pretraining cache (a fresh clone)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mupriv-bench-demo-") as tmp:
        env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", COLUMNS="200")
        if args.cold:
            env["MUPRIV_CACHE_DIR"] = str(Path(tmp) / "cache")
        mupriv = Path(sys.executable).with_name("mupriv")  # the console script `make demo` runs
        cmd = [str(mupriv), "simulate", args.config, "-o", str(Path(tmp) / "runs"), "--name", "bench"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stages: list[tuple[str, float]] = []
        for line in proc.stdout:  # type: ignore[union-attr]
            m = STEP.match(line.strip())
            if m:
                what = re.split(r"\s{2,}", m.group(2).strip())[0]  # drop rich's "file.py:NN" column
                stages.append((what, time.perf_counter() - start))
        code = proc.wait()
        total = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    if code != 0 or not stages:
        sys.exit(f"the simulation failed (exit {code}, {len(stages)} steps logged)")
    print(f"config {args.config}, {'cold' if args.cold else 'warm'} pretraining cache, {os.cpu_count()} CPUs")
    ends = [t for _, t in stages[1:]] + [total]
    for (what, t0), t1 in zip(stages, ends):
        print(f"  {t1 - t0:7.1f} s  {what}")
    print(f"wall time {total:.1f} s: {total / TARGET_S:.2f} x the 180 s target")
    print(f"peak memory {peak / 1024**3:.2f} GiB: {peak / TARGET_BYTES:.2f} x the 3 GiB target")


if __name__ == "__main__":
    main()
