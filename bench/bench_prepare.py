"""`mupriv data prepare` measured in one run: records prepared per second with 1 and with 2 worker processes,
and reading the prepared shards against parsing the WFDB files.

    .venv/bin/python bench/bench_prepare.py [--copies 4] [--length 4096]

The input is the 110-record CinC 2021 sample (../shared/data/cinc2021-sample), copied --copies times under new
record names into a Challenge-style folder (training/<db>/g1/), so a run has enough shards to keep two workers
busy. Prints records per second and the ratios (2 workers vs 1; prepared read vs WFDB parse)."""
from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import simulator.data.prepare as prep
from simulator.data import PreprocessConfig, RecordCache, load_records
from simulator.data.prepare import Settings, prepare

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared/data/cinc2021-sample"


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


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=4, help="copies of the 110-record sample to prepare")
    ap.add_argument("--length", type=int, default=4096, help="samples per record (the paper: 4096 at 400 Hz)")
    ap.add_argument("--shard", type=int, default=40, help="records per shard (prepare's default is 400)")
    args = ap.parse_args()
    if not SAMPLE.is_dir():
        raise SystemExit(f"the CinC 2021 sample is not at {SAMPLE}")
    prep.SHARD_RECORDS = args.shard
    settings = Settings(PreprocessConfig(fs=400.0, length=args.length))
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores (load average {load:.1f} at the start: above 0.5 the worker ratio measures the "
          f"other work too); shards of {args.shard} records; {args.length} samples at 400 Hz")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = copy_sample(tmp / "cinc", args.copies)
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


if __name__ == "__main__":
    main()
