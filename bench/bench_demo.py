"""The demo's targets, measured in one run: `mupriv simulate configs/quickstart.toml` under 3 minutes
on 2 cores and under 3 GB peak memory; with --fresh-clone also `make demo`'s set-up plus run under 5.

Runs the CLI in a child process (the way `make demo` does), reads the per-step timestamps it logs,
and prints wall time per stage (cohort + pretraining, each scheme, each scheme's attacks, the report),
peak resident memory of the child (getrusage), and the ratios to the targets.

    .venv/bin/python bench/bench_demo.py [--config configs/quickstart.toml] [--cold | --fresh-clone]

--cold uses an empty pretraining cache; --fresh-clone clones the repository's HEAD into a temporary
folder and runs `make setup` there first (a new .venv, the pinned install), then the simulation with
that venv and its empty cache: what a new user's `make demo` does.
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
TARGET_MAKE_DEMO_S = 300.0
TARGET_BYTES = 3 * 1024**3
STEP = re.compile(r"^\[?(\d\d:\d\d:\d\d)?\]?\s*(seed \d+: .*|writing the report)")


def fresh_setup(tmp: Path) -> tuple[Path, float]:
    """Clone HEAD into tmp/clone and run `make setup` there; returns the clone and the set-up time."""
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    shared = ROOT.parent / "shared"
    if shared.is_dir():  # configs that read ../shared/data resolve the same way as in the checkout
        (tmp / "shared").symlink_to(shared)
    start = time.perf_counter()
    done = subprocess.run(["make", "setup"], cwd=clone, capture_output=True, text=True)
    if done.returncode != 0:  # pip's own warnings are noise on success; show them only on failure
        sys.exit(f"make setup failed in the fresh clone (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return clone, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/quickstart.toml")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--cold", action="store_true", help="empty pretraining cache")
    group.add_argument("--fresh-clone", action="store_true", help="time `make setup` in a fresh clone, then the run there")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mupriv-bench-demo-") as tmp:
        env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", COLUMNS="200")
        cwd, mupriv, setup_s = ROOT, Path(sys.executable).with_name("mupriv"), None  # the console script `make demo` runs
        if args.fresh_clone:
            cwd, setup_s = fresh_setup(Path(tmp))
            mupriv = cwd / ".venv" / "bin" / "mupriv"
            env.pop("MUPRIV_CACHE_DIR", None)
        elif args.cold:
            env["MUPRIV_CACHE_DIR"] = str(Path(tmp) / "cache")
        cmd = [str(mupriv), "simulate", args.config, "-o", str(Path(tmp) / "runs"), "--name", "bench"]
        cache = "fresh clone" if args.fresh_clone else "cold" if args.cold else "warm"
        print(f"config {args.config}, {cache} pretraining cache, {os.cpu_count()} CPUs", flush=True)
        if setup_s is not None:
            print(f"  {setup_s:7.1f} s  make setup (new .venv, pinned install)", flush=True)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stage, t0, steps = None, start, 0
        for line in proc.stdout:  # type: ignore[union-attr]
            m = STEP.match(line.strip())
            if m:  # a stage ends where the next one starts: print as we go, so a killed run still shows its stages
                now = time.perf_counter()
                print(f"  {now - t0:7.1f} s  {stage or 'start-up (imports, config)'}", flush=True)
                stage, t0, steps = re.split(r"\s{2,}", m.group(2).strip())[0], now, steps + 1  # drop rich's "file.py:NN"
        code = proc.wait()
        total = time.perf_counter() - start
        if stage:
            print(f"  {total - (t0 - start):7.1f} s  {stage}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB, max over children
    if code != 0 or not steps:
        sys.exit(f"the simulation failed (exit {code}, {steps} steps logged)")
    print(f"simulation wall time {total:.1f} s: {total / TARGET_S:.2f} x the 180 s target")
    if setup_s is not None:
        both = setup_s + total
        print(f"set-up + simulation {both:.1f} s: {both / TARGET_MAKE_DEMO_S:.2f} x the 300 s target for `make demo`")
    print(f"peak memory {peak / 1024**3:.2f} GiB: {peak / TARGET_BYTES:.2f} x the 3 GiB target")


if __name__ == "__main__":
    main()
