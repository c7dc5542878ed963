"""Data-layer throughput measured in one run: synthetic generation, WFDB parsing, cached loading.

    .venv/bin/python bench/bench_data.py [--n 400]

Prints records per second for each path and the cache-vs-WFDB ratio (target: cached loading >= 20x faster)."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from simulator.data import RecordCache, load_records, synthesize, write_wfdb

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared/data/cinc2021-sample"


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="synthetic records to generate / write / read")
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
