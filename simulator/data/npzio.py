"""ECGRecords <-> one uncompressed .npz (signals, labels, known, metadata as JSON), written atomically."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.atomic import atomic_write
from simulator.data.records import ECGRecords
from simulator.errors import MuprivError

FORMAT = "mupriv-records-1"
_NUMERIC = ("fs_original", "n_original", "age")


def _meta_to_json(meta: pd.DataFrame) -> str:
    cols = {}
    for c in meta.columns:
        vals = []
        for v in meta[c].tolist():
            if v is None or (isinstance(v, float) and np.isnan(v)):
                vals.append(None)
            elif isinstance(v, (np.generic,)):
                vals.append(v.item())
            else:
                vals.append(v)
        cols[str(c)] = vals
    return json.dumps(cols)


def _meta_from_json(text: str) -> pd.DataFrame:
    df = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in json.loads(text).items()})
    for c in _NUMERIC:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def save_records(records: ECGRecords, path: Path | str) -> Path:
    path = Path(path)
    return atomic_write(path, lambda tmp: np.savez(
        tmp, format=np.array(FORMAT), signals=records.signals, labels=records.labels, known=records.known,
        meta=np.array(_meta_to_json(records.meta)), problems=np.array(json.dumps(list(records.problems))),
        fs=np.array(records.fs, dtype=np.float64), units=np.array(records.units)))


def is_records_npz(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as f:
            return "format" in f.files and str(f["format"]) == FORMAT
    except Exception:
        return False


def load_records_npz(path: Path | str) -> ECGRecords:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "format" not in f.files or str(f["format"]) != FORMAT:
                raise MuprivError(f"{path}: not a mupriv records file (no '{FORMAT}' marker); write it with save_records")
            return ECGRecords(f["signals"], f["labels"], f["known"], _meta_from_json(str(f["meta"])),
                              fs=float(f["fs"]), units=str(f["units"]), problems=tuple(json.loads(str(f["problems"]))))
    except MuprivError:
        raise
    except Exception as e:
        raise MuprivError(f"{path}: cannot read as a records .npz ({type(e).__name__}: {e}); delete it and re-create it") from None
