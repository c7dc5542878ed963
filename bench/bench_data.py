"""Data-layer throughput measured in one run: synthetic generation, WFDB parsing, cached loading,
`mupriv data prepare` (records prepared per second with 1 and 2 workers; prepared shards read against parsing), and
synthetic cohorts of 16, 64 and 256 patients (built, built on one thread, built by the generator before it was made
faster, and read back from the cohort cache).

    .venv/bin/python bench/bench_data.py [--n 400] [--copies 4] [--length 4096] [--shard 40]
                                         [--cohorts 16,64,256] [--cohort-length 1024] [--old-rev REV] [--cohorts-only]

Prints records per second for each path and the ratios: cache vs WFDB (target: cached loading >= 20x faster),
2 prepare workers vs 1, prepared read vs WFDB parse. The prepare input is the 110-record CinC 2021 sample
(../shared/data/cinc2021-sample), copied --copies times under new record names into a Challenge-style folder
(training/<db>/g1/), so a run has enough shards to keep two workers busy."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import simulator.data.prepare as prep
from simulator.data import PreprocessConfig, RecordCache, load_records, synthesize, write_wfdb
from simulator.data.prepare import Settings, prepare

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared/data/cinc2021-sample"
# The last commit with the patient-by-patient generator: the "old" side of the cohort ratio.
OLD_REV = "603761f"


def timed(fn, repeat: int = 1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def wfdb_vs_cache(folder: Path, cache_root: Path, label: str) -> float:
    cache = RecordCache(cache_root)
    recs, t_wfdb = timed(lambda: load_records(folder, cache=RecordCache(enabled=False)), repeat=2)
    load_records(folder, cache=cache)  # fill
    hit, t_cache = timed(lambda: load_records(folder, cache=cache), repeat=3)
    assert cache.hits >= 3 and hit.equals(recs)
    n = len(recs)
    print(f"{label}: {n} records")
    print(f"  WFDB parse + preprocess : {n / t_wfdb:9.0f} records/s  ({t_wfdb * 1e3:7.1f} ms)")
    print(f"  cache hit               : {n / t_cache:9.0f} records/s  ({t_cache * 1e3:7.1f} ms)")
    ratio = t_wfdb / t_cache
    print(f"  cache vs WFDB           : {ratio:9.1f}x  (target >= 20x: {'met' if ratio >= 20 else 'NOT met'})")
    return ratio


def copy_sample(dest: Path, copies: int) -> int:
    """`copies` renamed copies of every sample record (the header's record name renamed too)."""
    n = 0
    for c in range(copies):
        for hea in sorted(SAMPLE.glob("*.hea")):
            name = hea.stem
            new = f"{re.match(r'[A-Z]+', name).group(0)}{c}{name[len(re.match(r'[A-Z]+', name).group(0)):]}"
            folder = dest / "training" / f"copy{c}" / "g1"
            folder.mkdir(parents=True, exist_ok=True)
            text = hea.read_text().replace(name, new)
            (folder / f"{new}.hea").write_text(text)
            (folder / f"{new}.mat").write_bytes(hea.with_suffix(".mat").read_bytes())
            n += 1
    return n


def bench_prepare(copies: int, length: int, shard: int) -> None:
    """`mupriv data prepare` with 1 and 2 workers, then its shards read against parsing the same WFDB files."""
    prep.SHARD_RECORDS = shard
    settings = Settings(PreprocessConfig(fs=400.0, length=length))
    load = os.getloadavg()[0]
    print(f"mupriv data prepare: {os.cpu_count()} cores (load average {load:.1f} at the start: above 0.5 the worker ratio measures the "
          f"other work too); shards of {shard} records; {length} samples at 400 Hz")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = copy_sample(tmp / "cinc", copies)
        rates = {}
        for workers in (1, 2):
            out = tmp / f"prepared-{workers}"
            res, t = timed(lambda: prepare(tmp / "cinc", settings=settings, out=out, workers=workers))
            assert res.records == n
            rates[workers] = n / t
            print(f"prepare, {workers} worker(s)      : {rates[workers]:8.0f} records/s  ({n} records in {t:.2f} s)")
        print(f"  2 workers vs 1            : {rates[2] / rates[1]:8.2f}x")
        parsed, t_parse = timed(lambda: load_records(tmp / "cinc", preprocess=settings.preprocess,
                                                     cache=RecordCache(enabled=False)))
        prepare(tmp / "cinc", settings=settings, workers=2)  # into the folder, where --data FOLDER finds it
        fast, t_fast = min((timed(lambda: load_records(tmp / "cinc", preprocess=settings.preprocess,
                                                       cache=RecordCache(enabled=False))) for _ in range(3)),
                           key=lambda r: r[1])
        assert fast.equals(parsed)
        print(f"WFDB parse + preprocess     : {n / t_parse:8.0f} records/s  ({t_parse:.2f} s)")
        print(f"prepared shards (--data DIR): {n / t_fast:8.0f} records/s  ({t_fast:.2f} s, files checked unchanged)")
        print(f"  prepared vs WFDB parse    : {t_parse / t_fast:8.1f}x")


# One cohort built (or read from the cache) and fingerprinted in a child process, by whichever `simulator` package
# PYTHONPATH names: this one, or the old generator's checked out of git. A child per measurement also frees the
# cohort's memory (about 1.8 GB at 256 patients of 1024 samples) before the next one.
COHORT_SCRIPT = """
import hashlib, json, sys, time
from simulator.data.cohort import SyntheticCohortSpec, synthetic_cohort
from simulator.data.preprocess import PreprocessConfig
n, length, how = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
spec = SyntheticCohortSpec(n_source=640, n_clients=n, records_per_client=48, test_records=100, shift=1.0,
                           preprocess=PreprocessConfig(length=length))
build = lambda: synthetic_cohort(spec, seed=0)
if how == "one-thread":
    build = lambda: synthetic_cohort(spec, seed=0, workers=1)
elif how == "cache-hit":
    from simulator.data.cache import RecordCache
    from simulator.data.cohort import cached_synthetic_cohort
    cache = RecordCache(sys.argv[4])
    cached_synthetic_cohort(spec, 0, cache)
    build = lambda: cached_synthetic_cohort(spec, 0, cache)
synthetic_cohort(SyntheticCohortSpec(n_source=8, source_patients=2, n_clients=1, records_per_client=4), seed=0)  # warm-up
t, cpu = time.perf_counter(), time.process_time()
cohort = build()
seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
if how == "cache-hit":
    assert cache.hits == 1
h = hashlib.sha256()
for r in [cohort.source] + [r for c in cohort.clients for r in (c.train, c.test)]:
    for a in (r.signals, r.labels, r.known):
        h.update(a.tobytes())
    h.update(json.dumps(r.record_ids).encode())
print(json.dumps({"seconds": seconds, "cpu": cpu, "digest": h.hexdigest()}))
"""


def run_cohort(package_root: Path, n: int, length: int, how: str, *extra: str) -> dict:
    """COHORT_SCRIPT's {"seconds", "cpu", "digest"} for `how` in build (default threads), one-thread, cache-hit:
    wall seconds, and CPU seconds of all the child's threads (what other work on the machine disturbs least)."""
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    out = subprocess.run([sys.executable, "-c", COHORT_SCRIPT, str(n), str(length), how, *extra], env=env,
                         cwd=package_root, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _secs(m: dict) -> str:
    return f"{m['seconds']:6.1f} s ({m['cpu']:6.1f} s CPU)"


def old_generator(rev: str, dest: Path) -> Path | None:
    """The `simulator` package as it was at `rev`, extracted under dest (None when git cannot give it)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "simulator"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return dest


def bench_cohorts(sizes: list[int], length: int, old_rev: str) -> None:
    """Each cohort built by this generator (default threads, then one thread), by the old one when git has it (the
    same fingerprint is required), and read back from the cohort cache after one build filled it."""
    print(f"synthetic cohorts: 640 source records + n patients x (48 + 100) records, shift 1, {length} samples at 400 Hz; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old_root = old_generator(old_rev, tmp / "old")
        if old_root is None:
            print(f"  (the old generator at {old_rev} is not in this git: old-vs-new skipped)")
        for n in sizes:
            new = run_cohort(ROOT, n, length, "build")
            one = run_cohort(ROOT, n, length, "one-thread")
            hit = run_cohort(ROOT, n, length, "cache-hit", str(tmp / f"cache-{n}"))
            assert new["digest"] == one["digest"] == hit["digest"], f"{n} patients: threads or the cache changed the records"
            size = sum(p.stat().st_size for p in (tmp / f"cache-{n}").iterdir()) / 2**20
            print(f"  {n:3d} patients: new {_secs(new)}, 1 thread {_secs(one)}; cache hit {hit['seconds']:5.2f} s "
                  f"({new['seconds'] / hit['seconds']:.0f}x faster than new, {size:.0f} MiB on disk)", flush=True)
            if old_root is not None:
                old = run_cohort(old_root, n, length, "build")
                assert old["digest"] == new["digest"], f"{n} patients: the new generator's records differ from {old_rev}'s"
                print(f"       old {_secs(old)}, same records: new {old['seconds'] / new['seconds']:.2f}x faster in wall time, "
                      f"1 thread {old['seconds'] / one['seconds']:.2f}x in wall time and {old['cpu'] / one['cpu']:.2f}x in CPU time",
                      flush=True)
            for p in (tmp / f"cache-{n}").iterdir():
                p.unlink()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="synthetic records to generate / write / read")
    ap.add_argument("--copies", type=int, default=4, help="copies of the 110-record sample to prepare")
    ap.add_argument("--length", type=int, default=4096, help="samples per prepared record (the paper: 4096 at 400 Hz)")
    ap.add_argument("--shard", type=int, default=40, help="records per prepared shard (prepare's default is 400)")
    ap.add_argument("--cohorts", default="16,64,256", help="patients per benchmarked cohort, comma-separated ('' = none)")
    ap.add_argument("--cohort-length", type=int, default=1024,
                    help="samples per cohort record (a run's input: 1024; 4096 holds 7 GB at 256 patients)")
    ap.add_argument("--old-rev", default=OLD_REV, help="git revision of the generator to compare against")
    ap.add_argument("--cohorts-only", action="store_true", help="only the cohort benchmark")
    args = ap.parse_args()
    if not args.cohorts_only:
        bench_io(args)
    sizes = [int(n) for n in args.cohorts.split(",") if n.strip()]
    if sizes:
        bench_cohorts(sizes, args.cohort_length, args.old_rev)


def bench_io(args: argparse.Namespace) -> None:
    """Synthetic generation, WFDB write / parse / cache, and prepare."""
    synthesize(32, seed=0)  # warm-up (imports, FFT plans)
    recs, t_gen = timed(lambda: synthesize(args.n, seed=1))
    print(f"synthetic generation     : {args.n / t_gen:9.0f} records/s  ({args.n} records of 4096 x 12 in {t_gen:.2f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, t_write = timed(lambda: write_wfdb(recs, tmp / "wfdb"))
        print(f"WFDB write               : {args.n / t_write:9.0f} records/s")
        wfdb_vs_cache(tmp / "wfdb", tmp / "cache", "synthetic WFDB folder")
        if SAMPLE.is_dir():
            wfdb_vs_cache(SAMPLE, tmp / "cache", f"CinC 2021 sample ({SAMPLE})")
        else:
            print(f"(CinC sample not found at {SAMPLE}; skipped)")
    if SAMPLE.is_dir():
        bench_prepare(args.copies, args.length, args.shard)


if __name__ == "__main__":
    main()
