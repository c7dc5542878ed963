"""ECGRecords (in mV) -> WFDB records in the PhysioNet/CinC layout: NAME.hea + NAME.mat (MAT v4, int16, 1000/mV).

The .mat holds one int16 matrix `val` (12 x n); MAT v4 stores it column-major, i.e. interleaved per sample,
which is WFDB format 16 after a 24-byte header - hence the `16+24` format field, as in the Challenge files."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from simulator.atomic import atomic_write
from simulator.core.labels import LEADS
from simulator.data.records import ECGRecords
from simulator.data.snomed import labels_to_codes
from simulator.errors import MuprivError

GAIN = 1000.0  # adc units per mV: 1 µV resolution, range +-32.767 mV
_MAT_HEADER = struct.Struct("<5i")  # type (MOPT=0030: little-endian int16 full matrix), rows, cols, imag, name length


def _write_mat(path: Path, digital: np.ndarray) -> None:
    """digital: (n, 12) int16 -> MAT v4 file with variable `val` of shape (12, n)."""
    n = digital.shape[0]
    # row-major (n,12) == column-major (12,n)
    atomic_write(path, _MAT_HEADER.pack(30, len(LEADS), n, 0, 4) + b"val\x00"
                 + np.ascontiguousarray(digital, dtype="<i2").tobytes())


def write_record(folder: Path, name: str, signal_mv: np.ndarray, fs: float, codes: list[str],
                 age: float | None = None, sex: str | None = None, extra: dict[str, str] | None = None) -> Path:
    if not name.replace("_", "").isalnum():
        raise MuprivError(f"record name {name!r}: WFDB names may only hold letters, digits and underscores")
    sig = np.asarray(signal_mv, dtype=np.float64)
    if sig.ndim != 2 or sig.shape[1] != len(LEADS):
        raise MuprivError(f"record {name}: signal shape {sig.shape}, expected (samples, {len(LEADS)})")
    digital = np.clip(np.round(sig * GAIN), -32767, 32767).astype(np.int16)
    folder.mkdir(parents=True, exist_ok=True)
    _write_mat(folder / f"{name}.mat", digital)
    n = digital.shape[0]
    fs_txt = f"{fs:g}"
    lines = [f"{name} {len(LEADS)} {fs_txt} {n}"]
    for j, lead in enumerate(LEADS):
        col = digital[:, j].astype(np.int64)
        checksum = int(col.sum()) & 0xFFFF
        checksum = checksum - 0x10000 if checksum >= 0x8000 else checksum
        lines.append(f"{name}.mat 16+24 {GAIN:g}/mV 16 0 {int(col[0]) if n else 0} {checksum} 0 {lead}")
    age_txt = "NaN" if age is None or not np.isfinite(age) else f"{int(round(age))}"
    sex_txt = {"M": "Male", "F": "Female"}.get(sex or "", "Unknown")
    lines += [f"#Age: {age_txt}", f"#Sex: {sex_txt}", f"#Dx: {','.join(codes)}",
              "#Rx: Unknown", "#Hx: Unknown", "#Sx: Unknown"]
    for k, v in (extra or {}).items():
        lines.append(f"#{k}: {v}")
    hea = folder / f"{name}.hea"
    atomic_write(hea, "\n".join(lines) + "\n")
    return hea


def write_wfdb(records: ECGRecords, folder: Path | str, progress=None) -> list[Path]:
    """Write every record (must be in mV). Header comments carry Age/Sex/Dx plus `#Patient:` and `#Source:`."""
    if records.units != "mV":
        raise MuprivError(f"records are scaled ({records.units}); write WFDB from unscaled (mV) records")
    folder = Path(folder)
    out = []
    for i in range(len(records)):
        m = records.meta.iloc[i]
        codes = labels_to_codes(records.labels[i], bool(m.get("normal") or False))
        extra = {}
        if m.get("patient_id") is not None:
            extra["Patient"] = str(m["patient_id"])
        if m.get("source") is not None:
            extra["Source"] = str(m["source"])
        age = m.get("age")
        out.append(write_record(folder, str(m["record_id"]), records.signals[i], records.fs, codes,
                                age=float(age) if age is not None else None, sex=m.get("sex"), extra=extra))
        if progress:
            progress(i + 1, len(records))
    return out
