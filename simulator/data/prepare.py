"""`mupriv data prepare`: a fetched folder -> the preprocessed records the simulator trains on, written once, in
shards, in parallel, so that every later run reads arrays instead of parsing tens of thousands of WFDB files.

The prepared form is not a second format to learn: it is the records `.npz` of `save_records`, one per shard,
plus `prepared.json`, under `DIR/.mupriv-prepared/<settings>/` (or `--out`). `load_records(DIR)` (so
`--data DIR` everywhere) looks there first and uses it when it was prepared with the same preprocessing and the
folder's files are unchanged (same names, sizes and modification times); otherwise it parses DIR as before. A
prepared folder given directly (`--data CACHE`) is self-contained: the raw files may be gone.

Shards: WFDB headers in sorted order, SHARD_RECORDS per shard; CODE-15% parts (`exams_partN.hdf5` + `exams.csv`)
in row ranges of SHARD_TRACINGS. A shard's file name is a hash of its source files and the settings, so an
interrupted prepare keeps its finished shards and a second run does only the rest; every write is atomic.
Bad records follow the readers' rule: the first one stops the command (naming it), or with skip_bad it is left
out and listed."""
from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from simulator.atomic import atomic_write
from simulator.data.code15 import read_code15
from simulator.data.npzio import FORMAT as RECORDS_FORMAT, load_records_npz, save_records
from simulator.data.preprocess import PreprocessConfig
from simulator.data.records import ECGRecords
from simulator.data.wfdb_reader import check_unique_ids, read_headers
from simulator.errors import MuprivError

PREPARED_DIR = ".mupriv-prepared"
INDEX = "prepared.json"
FORMAT = "mupriv-prepared-1"
SHARD_RECORDS = 400      # WFDB records per shard: ~1 s of work, small enough to lose little when stopped
SHARD_TRACINGS = 2000    # CODE-15% tracings per shard (one HDF5 read per shard)
_PART = re.compile(r"(\d+)")


@dataclass(frozen=True)
class Settings:
    """What the prepared records depend on besides the files: the reader's settings."""

    preprocess: PreprocessConfig
    skip_bad: bool = False
    drop_other: bool = False

    def as_dict(self) -> dict:
        return {"preprocess": self.preprocess.as_dict(), "skip_bad": self.skip_bad, "drop_other": self.drop_other,
                "records_format": RECORDS_FORMAT}

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        p = self.preprocess
        return (f"fs {p.fs:g} Hz, length {p.length}, scale {p.scale}, align {p.align}"
                + (", skip_bad" if self.skip_bad else "") + (", drop_other" if self.drop_other else ""))


@dataclass(frozen=True)
class Unit:
    """One shard's work: WFDB headers (`files`), or rows [lo, hi) of a CODE-15% part (`files` = (hdf5, csv or ""))."""

    kind: str
    files: tuple[str, ...]
    lo: int = 0
    hi: int = 0
    fingerprint: str = ""

    def shard_name(self, settings: Settings) -> str:
        h = hashlib.sha256(f"{self.fingerprint}|{settings.key()}".encode()).hexdigest()[:20]
        return f"shard-{h}.npz"


def _stamp(root: Path, rel: str) -> str:
    st = (root / rel).stat()
    return f"{rel}:{st.st_size}:{st.st_mtime_ns}"


def code15_parts(folder: Path) -> list[Path]:
    """The CODE-15% parts at the top of a folder, in part-number order."""
    parts = [p for p in folder.glob("*.hdf5") if not p.name.startswith(".")]
    return sorted(parts, key=lambda p: (int(m.group(1)) if (m := _PART.search(p.stem)) else -1, p.name))


def plan(folder: Path) -> list[Unit]:
    """The shards of a fetched folder: its WFDB records (recursive) and its CODE-15% parts (top level)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MuprivError(f"{folder}: not a folder; give the folder `mupriv data fetch --out` wrote")
    units: list[Unit] = []
    heads = sorted(p for p in folder.rglob("*.hea") if PREPARED_DIR not in p.parts)
    for i in range(0, len(heads), SHARD_RECORDS):
        rels = tuple(str(h.relative_to(folder)) for h in heads[i:i + SHARD_RECORDS])
        stamps = [_stamp(folder, r) for r in rels]
        stamps += [_stamp(folder, r[:-4] + ".mat") for r in rels if (folder / (r[:-4] + ".mat")).is_file()]
        units.append(Unit("wfdb", rels, fingerprint=hashlib.sha256("\n".join(stamps).encode()).hexdigest()))
    parts = [] if heads else code15_parts(folder)  # as load_records reads a folder: WFDB if it has any
    csv = "exams.csv" if (folder / "exams.csv").is_file() else ""
    for part in parts:
        import h5py
        try:
            with h5py.File(part, "r") as f:
                n = int(f["tracings"].shape[0]) if "tracings" in f else 0
        except OSError as e:
            raise MuprivError(f"{part}: cannot open as HDF5 ({e}); delete it and fetch it again") from None
        if n == 0:
            raise MuprivError(f"{part}: no 'tracings' dataset; a CODE-15 part holds tracings (n, 4096, 12) and exam_id")
        stamps = _stamp(folder, part.name) + ("|" + _stamp(folder, csv) if csv else "")
        for lo in range(0, n, SHARD_TRACINGS):
            hi = min(n, lo + SHARD_TRACINGS)
            units.append(Unit("code15", (part.name, csv), lo, hi,
                              hashlib.sha256(f"{stamps}|{lo}|{hi}".encode()).hexdigest()))
    if not units:
        raise MuprivError(f"{folder}: no WFDB records (.hea) and no CODE-15 parts (.hdf5) found; give the folder "
                          f"`mupriv data fetch --out` wrote")
    return units


def folder_fingerprint(units: list[Unit]) -> str:
    return hashlib.sha256("\n".join(u.fingerprint for u in units).encode()).hexdigest()


def read_unit(folder: Path, unit: Unit, settings: Settings) -> ECGRecords:
    if unit.kind == "wfdb":
        return read_headers([folder / r for r in unit.files], preprocess=settings.preprocess,
                            skip_bad=settings.skip_bad, drop_other=settings.drop_other)
    h5, csv = unit.files
    return read_code15(folder / h5, folder / csv if csv else None, preprocess=settings.preprocess,
                       skip_bad=settings.skip_bad, rows=(unit.lo, unit.hi))


def _prepare_unit(folder: str, unit: Unit, settings: Settings, target: str) -> tuple[int, int]:
    """Worker: read one shard and write it atomically. Returns (records, inputs) for the progress bar."""
    rec = read_unit(Path(folder), unit, settings)
    save_records(rec, target)
    return len(rec), _inputs(unit)


def shard_summary(path: Path) -> tuple[int, list[str]]:
    """(records, problems) of a shard without reading its signals (an .npz member is read only when asked for)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return int(f["labels"].shape[0]), list(json.loads(str(f["problems"])))
    except Exception as e:  # noqa: BLE001 - a damaged shard: say which and how to redo it
        raise MuprivError(f"{path}: unreadable shard ({type(e).__name__}); delete it and run `mupriv data prepare` "
                          f"again") from None


def _inputs(unit: Unit) -> int:
    return len(unit.files) if unit.kind == "wfdb" else unit.hi - unit.lo


def prepared_dir(folder: Path, out: Path | None, settings: Settings) -> Path:
    return (Path(out) if out is not None else Path(folder) / PREPARED_DIR) / settings.key()


@dataclass
class PrepareResult:
    path: Path            # the prepared folder (prepared.json and its shards)
    records: int
    inputs: int           # WFDB records or CODE-15 tracings read
    shards: int
    reused: int           # shards an earlier run had finished
    problems: list[str]


def prepare(folder: Path | str, *, settings: Settings, out: Path | None = None, workers: int | None = None,
            progress: Callable[[int, int], None] | None = None) -> PrepareResult:
    """Prepare `folder` (see the module docstring). `progress(inputs done, inputs total)`; `workers` processes
    (default os.cpu_count(); 1 = in this process)."""
    folder = Path(folder)
    units = plan(folder)
    dest = prepared_dir(folder, out, settings)
    dest.mkdir(parents=True, exist_ok=True)
    names = [u.shard_name(settings) for u in units]
    todo = [(u, n) for u, n in zip(units, names) if not (dest / n).is_file()]
    total = sum(_inputs(u) for u in units)
    done = total - sum(_inputs(u) for u, _ in todo)
    if progress:
        progress(done, total)
    workers = max(1, workers or os.cpu_count() or 1)
    if workers == 1 or len(todo) <= 1:
        for u, n in todo:
            done += _prepare_unit(str(folder), u, settings, str(dest / n))[1]
            if progress:
                progress(done, total)
    elif todo:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            pending = {pool.submit(_prepare_unit, str(folder), u, settings, str(dest / n)) for u, n in todo}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in finished:
                    if f.exception() is not None:
                        for p in pending:
                            p.cancel()
                        raise f.exception()  # the first bad record (or a write error); finished shards are kept
                    done += f.result()[1]
                if progress:
                    progress(done, total)
    # the index last: a folder without it (or with a stale one) is never read as prepared
    for stale in set(p.name for p in dest.glob("shard-*.npz")) - set(names):
        (dest / stale).unlink()
    n_records, problems, shards = 0, [], []
    for n in names:
        count, notes = shard_summary(dest / n)
        n_records += count
        problems.extend(notes)
        shards.append({"file": n, "records": count})
    if n_records == 0:
        raise MuprivError(f"{folder}: none of the {total} record(s) could be used"
                          + (f" (first problem: {problems[0]})" if problems else ""))
    index = {"format": FORMAT, "settings": settings.as_dict(), "source": str(folder.resolve()),
             "fingerprint": folder_fingerprint(units), "records": n_records, "inputs": total,
             "skipped": sum(p.startswith("skipped") for p in problems), "shards": shards}
    atomic_write(dest / INDEX, json.dumps(index, indent=1) + "\n")
    return PrepareResult(dest, n_records, total, len(units), len(units) - len(todo), problems)


# ----------------------------------------------------------------------------------------------------------
# Reading it back (load_records' fast path)
# ----------------------------------------------------------------------------------------------------------
def _read_index(path: Path) -> dict | None:
    try:
        doc = json.loads((path / INDEX).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None


def load_prepared(path: Path) -> ECGRecords:
    """The records of a prepared folder (one with prepared.json), shards in order."""
    doc = _read_index(path)
    if doc is None:
        raise MuprivError(f"{path}: no readable {INDEX}; run `mupriv data prepare` again")
    parts = []
    for s in doc["shards"]:
        f = path / s["file"]
        if not f.is_file():
            raise MuprivError(f"{f}: a shard of this prepared folder is missing; run `mupriv data prepare` again")
        parts.append(load_records_npz(f))
    rec = ECGRecords.concat(parts)
    check_unique_ids(path, rec)
    return rec


def _candidates(settings: Settings) -> list[tuple[Settings, bool]]:
    """Prepared settings that give the records `settings` asks for: the same; and, for a lenient read (skip_bad),
    also a strict preparation (it had no bad record); for a strict read, a lenient one only if it skipped none."""
    other = Settings(settings.preprocess, not settings.skip_bad, settings.drop_other)
    return [(settings, False), (other, not settings.skip_bad)]


def find_prepared(folder: Path, settings: Settings) -> ECGRecords | None:
    """The records prepared from `folder` under `folder/.mupriv-prepared` with these settings, if its files are
    the ones prepared (names, sizes, modification times); else None (the caller parses the folder)."""
    root = Path(folder) / PREPARED_DIR
    if not root.is_dir():
        return None
    fingerprint = None
    for cand, must_have_no_skips in _candidates(settings):
        path = root / cand.key()
        doc = _read_index(path)
        if doc is None or (must_have_no_skips and doc.get("skipped")):
            continue
        if fingerprint is None:
            try:
                fingerprint = folder_fingerprint(plan(folder))
            except MuprivError:
                return None
        if doc.get("fingerprint") == fingerprint:
            return load_prepared(path)
    return None


def is_prepared(path: Path) -> bool:
    """A folder `mupriv data prepare --out` wrote (prepared.json in it or in its settings subfolders)."""
    path = Path(path)
    return path.is_dir() and ((path / INDEX).is_file() or any(path.glob(f"*/{INDEX}")))


def load_prepared_for(path: Path, settings: Settings) -> ECGRecords:
    """A prepared folder given directly: the preparation with these settings, or an error naming what is there."""
    path = Path(path)
    dirs = [path] if (path / INDEX).is_file() else sorted(p.parent for p in path.glob(f"*/{INDEX}"))
    found = []
    for d in dirs:
        doc = _read_index(d)
        if doc is None:
            continue
        for cand, must_have_no_skips in _candidates(settings):
            if doc["settings"] == cand.as_dict() and not (must_have_no_skips and doc.get("skipped")):
                return load_prepared(d)
        p = doc["settings"]["preprocess"]
        found.append(Settings(PreprocessConfig(**p), doc["settings"]["skip_bad"], doc["settings"]["drop_other"]).describe())
    have = "; ".join(found) or "nothing readable"
    raise MuprivError(f"{path}: prepared with {have}, but this run asks for {settings.describe()}; set [data] to "
                      f"match or run `mupriv data prepare SOURCE --out {path}` with these settings")
