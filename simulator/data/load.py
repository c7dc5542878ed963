"""One entry point: a WFDB folder, a CODE-15 .hdf5 or a records/tensors .npz -> ECGRecords, through the cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from simulator.core.labels import CLASSES, LEADS
from simulator.core.tensors import label_problems, read_npz_arrays
from simulator.data.cache import RecordCache
from simulator.data.code15 import find_exams_csv, read_code15
from simulator.data.npzio import is_records_npz, load_records_npz
from simulator.data.prepare import Settings, code15_parts, find_prepared, is_prepared, load_prepared_for
from simulator.data.preprocess import PreprocessConfig
from simulator.data.records import ECGRecords, META_COLUMNS
from simulator.data.wfdb_reader import BadRecords, list_headers, read_wfdb_folder
from simulator.errors import MuprivError

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def kind_of(path: Path) -> str:
    path = Path(path)
    if path.is_dir():
        if is_prepared(path):
            return "prepared"
        if code15_parts(path) and not any(path.rglob("*.hea")):
            return "code15-folder"
        return "wfdb"
    if not path.exists():
        raise MuprivError(f"{path}: no such file or folder; give a WFDB folder, a CODE-15 .hdf5 or an .npz")
    if path.suffix.lower() in HDF5_SUFFIXES:
        return "code15"
    if path.suffix.lower() == ".npz":
        return "npz"
    raise MuprivError(f"{path}: unknown data format '{path.suffix}'; give a WFDB folder, a CODE-15 .hdf5 or an .npz")


def _tensors_npz_as_records(path: Path, fs: float, skip_bad: bool) -> ECGRecords:
    """A tensor .npz as records, used as it is (no resampling, cropping or scaling). Its rate is the file's ``fs``
    array when it has one; else it is unknown (meta fs_original NaN) and taken to be ``fs``. Records with NaN or
    infinite samples or labels other than 0/1 are bad records: an error, or left out and counted with skip_bad."""
    arrays = read_npz_arrays(path)
    x, y, known = arrays["x"], arrays["y"], arrays["known"]
    if x.ndim != 3 or y.ndim != 2 or x.shape[2] != len(LEADS) or y.shape[1] != len(CLASSES):
        raise MuprivError(f"{path}: arrays are x {x.shape}, y {y.shape}; records need x (n, length, {len(LEADS)}) and "
                          f"y (n, {len(CLASSES)})")
    stated = float(arrays["fs"]) if "fs" in arrays else None
    bad = BadRecords(skip_bad)
    labels = label_problems(y, known)
    keep = []
    for i in range(len(x)):
        why = labels.get(i) or ("NaN or infinite samples" if not np.isfinite(x[i]).all() else None)
        if why is None:
            keep.append(i)
        else:
            bad.bad(f"{path}: record {i}: {why}")
    n = len(keep)
    meta = pd.DataFrame({c: pd.Series([None] * n, dtype=object) for c in META_COLUMNS})
    meta["record_id"] = [f"{path.stem}-{i}" for i in keep]
    meta["source"] = path.name
    meta["path"] = str(path)
    meta["fs_original"] = np.nan if stated is None else stated
    meta["n_original"] = x.shape[1]
    if stated is None:
        bad.note(f"{path}: the file does not state its sampling rate (no fs array): the configured rate (data.fs, or "
                 f"--fs) is assumed")
    return ECGRecords(x[keep], np.where(known[keep], y[keep], 0.0), known[keep], meta, fs=fs if stated is None else stated,
                      units="unknown", problems=tuple(bad.problems))


def load_records(path: Path | str, *, preprocess: PreprocessConfig = PreprocessConfig(), skip_bad: bool = False,
                 cache: RecordCache | bool | None = True, exams_csv: Path | str | None = None,
                 drop_other: bool = False, max_records: int | None = None, progress=None) -> ECGRecords:
    """Read `path` (WFDB folder / folder of CODE-15 parts / CODE-15 .hdf5 / .npz / a `mupriv data prepare` folder).
    A folder that `mupriv data prepare` prepared with these settings, unchanged since, is read from its shards.
    cache=True uses RecordCache() (.mupriv-cache in the cwd), a RecordCache uses that one, False/None reads the
    files every time. .npz files and prepared folders are never cached (already fast)."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "npz":
        return load_records_npz(path) if is_records_npz(path) else _tensors_npz_as_records(path, preprocess.fs, skip_bad)
    prepared = Settings(preprocess, skip_bad, drop_other)
    if kind == "prepared":
        return load_prepared_for(path, prepared)
    if kind in ("wfdb", "code15-folder") and max_records is None:
        hit = find_prepared(path, prepared)
        if hit is not None:
            return hit
    store = RecordCache() if cache is True else cache if isinstance(cache, RecordCache) else RecordCache(enabled=False)
    settings = {"preprocess": preprocess.as_dict(), "skip_bad": skip_bad}
    if kind == "wfdb":
        heads = list_headers(path)
        files = heads + sorted(path.rglob("*.mat"))
        settings["drop_other"] = drop_other
        return store.load("wfdb", path, files, settings,
                          lambda: read_wfdb_folder(path, preprocess=preprocess, skip_bad=skip_bad, drop_other=drop_other, progress=progress))
    if kind == "code15-folder":
        parts = code15_parts(path)
        csv = Path(exams_csv) if exams_csv is not None else find_exams_csv(parts[0])
        files = parts + ([csv] if csv is not None and csv.is_file() else [])
        settings.update(exams_csv=str(csv.resolve()) if csv is not None else None)
        return store.load("code15-folder", path, files, settings, lambda: ECGRecords.concat(
            [read_code15(p, csv, preprocess=preprocess, skip_bad=skip_bad, progress=progress) for p in parts]))
    csv = Path(exams_csv) if exams_csv is not None else find_exams_csv(path)
    files = [path] + ([csv] if csv is not None and csv.is_file() else [])
    settings.update(exams_csv=str(csv.resolve()) if csv is not None else None, max_records=max_records)
    return store.load("code15", path, files, settings,
                      lambda: read_code15(path, csv, preprocess=preprocess, skip_bad=skip_bad, max_records=max_records, progress=progress))
