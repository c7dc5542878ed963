"""Data-layer throughput measured in one run: synthetic generation, WFDB parsing, cached loading, and
`mupriv data prepare` (records prepared per second with 1 and 2 workers; prepared shards read against parsing).

    .venv/bin/python bench/bench_data.py [--n 400] [--copies 4] [--length 4096] [--shard 40]

Prints records per second for each path and the ratios: cache vs WFDB (target: cached loading >= 20x faster),
2 prepare workers vs 1, prepared read vs WFDB parse. The prepare input is the 110-record CinC 2021 sample
(../shared/data/cinc2021-sample), copied --copies times under new record names into a Challenge-style folder
(training/<db>/g1/), so a run has enough shards to keep two workers busy."""
from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import simulator.data.prepare as prep
from simulator.data import PreprocessConfig, RecordCache, load_records, synthesize, write_wfdb
from simulator.data.prepare import Settings, prepare

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="synthetic records to generate / write / read")
    ap.add_argument("--copies", type=int, default=4, help="copies of the 110-record sample to prepare")
    ap.add_argument("--length", type=int, default=4096, help="samples per prepared record (the paper: 4096 at 400 Hz)")
    ap.add_argument("--shard", type=int, default=40, help="records per prepared shard (prepare's default is 400)")
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
    if SAMPLE.is_dir():
        bench_prepare(args.copies, args.length, args.shard)


if __name__ == "__main__":
    main()
