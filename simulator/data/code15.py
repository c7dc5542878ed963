"""CODE-15% HDF5 (`tracings` (n, 4096, 12) float32 at 400 Hz in mV, `exam_id` (n,)) + `exams.csv` -> ECGRecords.

exams.csv columns used: exam_id, 1dAVb, RBBB, LBBB, SB, ST, AF (note: ST before AF, unlike CLASSES; matched by
name), patient_id, age, is_male, normal_ecg, trace_file. The CSV labels all six classes (known all True).
Without a CSV every label is unknown (known all False) and a problem is noted. Rows whose exam_id is 0 are the
file's zero padding and are dropped silently. Leads are stored as DI, DII, DIII, AVR, AVL, AVF, V1-V6 = canonical."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from simulator.core.labels import CLASSES, LEADS
from simulator.data.preprocess import PreprocessConfig, check_signal, preprocess_batch
from simulator.data.records import ECGRecords, META_COLUMNS
from simulator.data.wfdb_reader import BadRecords
from simulator.errors import MuprivError

FS = 400.0
CHUNK = 512


def _truthy(col: pd.Series) -> np.ndarray:
    if col.dtype == bool:
        return col.to_numpy()
    s = col.astype(str).str.strip().str.lower()
    return s.isin(["true", "1", "1.0", "yes", "t"]).to_numpy()


def find_exams_csv(h5: Path) -> Path | None:
    cand = h5.parent / "exams.csv"
    return cand if cand.is_file() else None


def read_exams_csv(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except Exception as e:
        raise MuprivError(f"{path}: cannot read as CSV ({type(e).__name__}: {e})") from None
    missing = [c for c in ("exam_id", *CLASSES) if c not in df.columns]
    if missing:
        raise MuprivError(f"{path}: missing column(s) {missing}; CODE-15 exams.csv needs exam_id and {', '.join(CLASSES)}")
    return df


def read_code15(h5_path: Path | str, exams_csv: Path | str | None = None, *, preprocess: PreprocessConfig = PreprocessConfig(),
                skip_bad: bool = False, max_records: int | None = None, rows: tuple[int, int] | None = None,
                progress=None) -> ECGRecords:
    """`rows` = (start, stop) reads only those tracings (a shard for `mupriv data prepare`); a range with no usable
    tracing then gives no records instead of an error, as the part as a whole may still have some."""
    import h5py

    h5_path = Path(h5_path)
    if not h5_path.is_file():
        raise MuprivError(f"{h5_path}: no such file; give a CODE-15 exams_partN.hdf5")
    bad = BadRecords(skip_bad)
    csv_path = Path(exams_csv) if exams_csv is not None else find_exams_csv(h5_path)
    exams = None
    if csv_path is not None:
        if not csv_path.is_file():
            raise MuprivError(f"{csv_path}: no such file; give the CODE-15 exams.csv")
        exams = read_exams_csv(csv_path).drop_duplicates("exam_id").set_index("exam_id")
    else:
        bad.note(f"{h5_path}: no exams.csv next to it, labels unknown (known=False); pass exams_csv to label the records")
    try:
        f = h5py.File(h5_path, "r")
    except Exception as e:
        raise MuprivError(f"{h5_path}: cannot open as HDF5 ({type(e).__name__}); give a CODE-15 exams_partN.hdf5") from None
    with f:
        if "tracings" not in f:
            raise MuprivError(f"{h5_path}: no 'tracings' dataset (found: {', '.join(f.keys()) or 'nothing'}); a CODE-15 file holds tracings (n, 4096, 12) and exam_id (n,)")
        tr = f["tracings"]
        if tr.ndim != 3 or tr.shape[2] != len(LEADS):
            raise MuprivError(f"{h5_path}: 'tracings' has shape {tr.shape}, expected (n, samples, {len(LEADS)})")
        n, n_samples = tr.shape[0], int(tr.shape[1])
        if "exam_id" in f:
            exam_ids = np.asarray(f["exam_id"][:]).astype(np.int64).reshape(-1)
            if exam_ids.shape[0] != n:
                raise MuprivError(f"{h5_path}: exam_id has {exam_ids.shape[0]} entries for {n} tracings")
        else:
            if exams is not None:
                raise MuprivError(f"{h5_path}: no 'exam_id' dataset, so exams.csv rows cannot be matched to tracings")
            exam_ids = np.arange(1, n + 1, dtype=np.int64)
            bad.note(f"{h5_path}: no 'exam_id' dataset; records numbered 1..{n}")
        keep = np.flatnonzero(exam_ids != 0)
        if rows is not None:
            keep = keep[(keep >= rows[0]) & (keep < rows[1])]
        if max_records is not None:
            keep = keep[:max_records]
        xs, found = [], []
        for start in range(0, len(keep), CHUNK):
            idx = keep[start:start + CHUNK]
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            block = np.asarray(tr[lo:hi], dtype=np.float32)[idx - lo]
            ok = []
            for j, i in enumerate(idx):
                eid = int(exam_ids[i])
                why = check_signal(block[j])
                if why is None and exams is not None and eid not in exams.index:
                    why = f"exam_id {eid} not in {csv_path.name}"
                if why:
                    bad.bad(f"{h5_path}: tracing {i} (exam_id {eid}): {why}")
                    continue
                ok.append(j)
                found.append((i, eid))
            if ok:
                xs.append(preprocess_batch(block[ok], FS, preprocess))
            if progress:
                progress(min(start + CHUNK, len(keep)), len(keep))
    if not found and rows is not None:
        return ECGRecords.empty(preprocess.length, preprocess.fs, preprocess.units, problems=tuple(bad.problems))
    if not found:
        raise MuprivError(f"{h5_path}: no usable tracings" + (f" (first problem: {bad.problems[-1]})" if bad.problems else ""))
    x = np.concatenate(xs)
    eids = np.array([e for _, e in found])
    meta = pd.DataFrame({c: pd.Series([None] * len(found), dtype=object) for c in META_COLUMNS})
    meta["record_id"] = [f"code15-{e}" for e in eids]
    meta["source"] = "CODE-15"
    meta["fs_original"] = FS
    meta["n_original"] = n_samples
    meta["snomed"] = ""
    meta["other_codes"] = ""
    meta["path"] = str(h5_path)
    if exams is not None:
        ex = exams.loc[eids]
        y = np.stack([_truthy(ex[c]) for c in CLASSES], axis=1).astype(np.float32)
        known = np.ones_like(y, dtype=bool)
        if "patient_id" in ex.columns:
            meta["patient_id"] = [None if pd.isna(p) else str(int(p)) if isinstance(p, (int, float, np.number)) else str(p) for p in ex["patient_id"]]
        if "age" in ex.columns:
            meta["age"] = pd.to_numeric(ex["age"], errors="coerce").to_numpy()
        if "is_male" in ex.columns:
            male = _truthy(ex["is_male"])
            meta["sex"] = np.where(male, "M", "F").astype(object)
        if "normal_ecg" in ex.columns:
            meta["normal"] = _truthy(ex["normal_ecg"])
    else:
        y = np.zeros((len(found), len(CLASSES)), np.float32)
        known = np.zeros_like(y, dtype=bool)
    return ECGRecords(x, y, known, meta, fs=preprocess.fs, units=preprocess.units, problems=tuple(bad.problems))
