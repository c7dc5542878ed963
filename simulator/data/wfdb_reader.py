"""PhysioNet/CinC 2020/2021 WFDB folders (`.hea` + MAT v4 `.mat`) -> ECGRecords.

Labels: the Challenge annotators list every diagnosis, so all six classes are known (True) for every record;
a record without any of the six codes is a negative for all of them ("none"): normal sinus rhythm records
(metadata `normal`=True) and records with only other diagnoses are kept alike, and their codes go to
metadata `other_codes`. Pass `drop_other=True` to leave out records that are neither a class nor normal."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Mapping, Iterable

import numpy as np
import pandas as pd

from simulator.core.labels import CLASSES, LEADS
from simulator.data.preprocess import PreprocessConfig, check_signal, lead_order, preprocess_signal
from simulator.data.records import ECGRecords, META_COLUMNS
from simulator.data.snomed import CLASS_CODES, NSR_CODE, codes_to_labels, parse_codes
from simulator.errors import MuprivError

SKIP_HINT = "or pass --skip-bad (data.skip_bad = true in a config) to leave the record out"

# Record-name prefix -> source database inside the Challenge data.
_DATABASES = (("HR", "PTB-XL"), ("JS", "Chapman-Ningbo"), ("A", "CPSC2018"), ("Q", "CPSC-Extra"),
              ("E", "Georgia"), ("S", "PTB"), ("I", "INCART"))

# Folder of each source database in the Challenge 2021 training set (training/<folder>/gN/): the folder names
# the database where the record name cannot (Chapman-Shaoxing and Ningbo both name their records JSnnnnn).
_FOLDERS = {"cpsc_2018": "CPSC2018", "cpsc_2018_extra": "CPSC-Extra", "georgia": "Georgia", "ptb-xl": "PTB-XL",
            "chapman_shaoxing": "Chapman-Shaoxing", "ningbo": "Ningbo", "ptb": "PTB", "st_petersburg_incart": "INCART"}

_COMMENT = re.compile(r"^\s*#?\s*([A-Za-z]+)\s*:\s*(.*?)\s*$")


def database_of_path(hea: Path) -> str | None:
    """The source database named by a Challenge training folder above the header, else None."""
    for part in reversed(Path(hea).parts[:-1]):
        if part in _FOLDERS:
            return _FOLDERS[part]
    return None


def database_of(record_name: str) -> str:
    for prefix, name in _DATABASES:
        if record_name.startswith(prefix) and record_name[len(prefix):][:1].isdigit():
            return name
    return "unknown"


class BadRecords:
    """Raise on the first bad record, or (skip_bad) collect one-line messages and go on."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.problems: list[str] = []

    def bad(self, msg: str) -> None:
        if not self.skip_bad:
            raise MuprivError(f"{msg}; fix it {SKIP_HINT}")
        self.problems.append(f"skipped {msg}")

    def note(self, msg: str) -> None:
        self.problems.append(msg)


def _parse_comments(comments: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in comments:
        m = _COMMENT.match(c)
        if m:
            out.setdefault(m.group(1).lower(), m.group(2))
    return out


def _age(text: str | None) -> float:
    try:
        a = float(text) if text is not None else float("nan")
    except ValueError:
        return float("nan")
    return a if 0 <= a < 150 else float("nan")


def _sex(text: str | None) -> str | None:
    t = (text or "").strip().lower()
    return "M" if t in ("male", "m") else "F" if t in ("female", "f") else None


def list_headers(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.exists():
        raise MuprivError(f"{folder}: no such folder; give a folder of WFDB .hea/.mat records")
    if not folder.is_dir():
        raise MuprivError(f"{folder}: not a folder; give a folder of WFDB .hea/.mat records")
    heads = sorted(folder.rglob("*.hea"))
    if not heads:
        raise MuprivError(f"{folder}: no .hea header files found; give a folder of WFDB records (PhysioNet/CinC layout: NAME.hea + NAME.mat)")
    return heads


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__


def _diagnose(hea: Path, rec_path: str, err: Exception) -> None:
    """wfdb could not read the record: say precisely why (slow path, bad records only)."""
    import wfdb

    try:
        header = wfdb.rdheader(rec_path)
    except Exception as e:
        raise MuprivError(f"{hea}: malformed header ({_first_line(e)})") from None
    if header.n_sig != len(LEADS):
        raise MuprivError(f"{hea}: {header.n_sig} leads, expected {len(LEADS)} ({', '.join(LEADS)})")
    for fname in sorted(set(header.file_name or [])):
        if not (hea.parent / fname).is_file():
            raise MuprivError(f"{hea}: signal file {fname} is missing next to the header")
    raise MuprivError(f"{hea}: cannot read the signal ({_first_line(err)})")


def read_one(hea: Path, cfg: PreprocessConfig, mapping: Mapping[str, Iterable[str]] = CLASS_CODES):
    """(signal (length, 12), labels (6,), meta dict, notes) for one record; MuprivError naming the file if it is bad."""
    import wfdb

    rec_path = str(hea.with_suffix(""))
    try:  # fast path: one header parse (wfdb's header parser is the slow part)
        record = wfdb.rdrecord(rec_path)
    except Exception as e:
        _diagnose(hea, rec_path, e)  # always raises a MuprivError naming the file
    header = record
    if header.n_sig != len(LEADS):
        raise MuprivError(f"{hea}: {header.n_sig} leads, expected {len(LEADS)} ({', '.join(LEADS)})")
    try:
        order = lead_order(header.sig_name)
    except MuprivError as e:
        raise MuprivError(f"{hea}: {e}") from None
    info = _parse_comments(header.comments or [])
    if "dx" not in info:
        raise MuprivError(f"{hea}: malformed header (no '#Dx:' diagnosis line)")
    try:
        codes = parse_codes(info["dx"])
    except ValueError as e:
        raise MuprivError(f"{hea}: malformed '#Dx:' line ({e})") from None
    sig = record.p_signal
    if sig is None or sig.ndim != 2 or sig.shape[1] != len(LEADS):
        raise MuprivError(f"{hea}: signal has shape {None if sig is None else sig.shape}, expected (samples, {len(LEADS)})")
    sig = sig[:, order]
    why = check_signal(sig)
    if why:
        raise MuprivError(f"{hea}: {why}")
    y, other = codes_to_labels(codes, mapping)
    notes: list[str] = []
    meta = {
        "record_id": header.record_name, "patient_id": info.get("patient"),
        "source": info.get("source") or database_of_path(hea) or database_of(header.record_name),
        "fs_original": float(header.fs), "n_original": int(sig.shape[0]),
        "age": _age(info.get("age")), "sex": _sex(info.get("sex")),
        "snomed": ";".join(codes), "other_codes": ";".join(c for c in other if c != NSR_CODE),
        "normal": bool(NSR_CODE in codes and y.sum() == 0), "path": str(hea),
    }
    return preprocess_signal(sig, float(header.fs), cfg), y, meta, notes


def read_wfdb_folder(folder: Path | str, *, preprocess: PreprocessConfig = PreprocessConfig(), skip_bad: bool = False,
                     drop_other: bool = False, mapping: Mapping[str, Iterable[str]] = CLASS_CODES,
                     progress: Callable[[int, int], None] | None = None) -> ECGRecords:
    """Every `*.hea` under `folder` (recursive, sorted). Bad records raise MuprivError unless skip_bad."""
    folder = Path(folder)
    heads = list_headers(folder)
    rec = read_headers(heads, preprocess=preprocess, skip_bad=skip_bad, drop_other=drop_other, mapping=mapping,
                       progress=progress)
    if not len(rec):
        raise MuprivError(f"{folder}: none of the {len(heads)} record(s) could be used"
                          + (f" (first problem: {rec.problems[0]})" if rec.problems else ""))
    check_unique_ids(folder, rec)
    return rec


def check_unique_ids(folder: Path, rec: ECGRecords) -> None:
    ids = rec.meta["record_id"]
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].iloc[0]
        raise MuprivError(f"{folder}: record name {dup} occurs in two sub-folders; record names must be unique")


def read_headers(heads: list[Path], *, preprocess: PreprocessConfig = PreprocessConfig(), skip_bad: bool = False,
                 drop_other: bool = False, mapping: Mapping[str, Iterable[str]] = CLASS_CODES,
                 progress: Callable[[int, int], None] | None = None) -> ECGRecords:
    """The records of these headers, in this order (possibly none, with skip_bad): one shard of a folder, which
    `mupriv data prepare` reads in a worker process."""
    bad = BadRecords(skip_bad)
    xs, ys, metas = [], [], []
    for i, hea in enumerate(heads):
        try:
            x, y, meta, notes = read_one(hea, preprocess, mapping)
        except MuprivError as e:
            bad.bad(str(e))
            continue
        finally:
            if progress:
                progress(i + 1, len(heads))
        if drop_other and y.sum() == 0 and not meta["normal"]:
            continue
        for n in notes:
            bad.note(n)
        xs.append(x); ys.append(y); metas.append(meta)
    if not xs:
        return ECGRecords.empty(preprocess.length, preprocess.fs, preprocess.units, problems=bad.problems)
    meta_df = pd.DataFrame(metas, columns=list(META_COLUMNS))
    return ECGRecords(np.stack(xs), np.stack(ys), np.ones((len(xs), len(CLASSES)), bool), meta_df,
                      fs=preprocess.fs, units=preprocess.units, problems=tuple(bad.problems))
