"""SNOMED-CT diagnosis codes (PhysioNet/CinC 2020/2021 `#Dx`) <-> the six classes."""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from simulator.core.labels import CLASSES

# Default mapping. Complete RBBB/LBBB count as RBBB/LBBB (QRS >= 120 ms, like the class definition);
# incomplete RBBB (713426002, QRS < 120 ms) does NOT, matching the sample's MANIFEST.csv.
CLASS_CODES: dict[str, tuple[str, ...]] = {
    "1dAVb": ("270492004",),
    "RBBB": ("59118001", "713427006"),
    "LBBB": ("164909002", "733534002"),
    "SB": ("426177001",),
    "AF": ("164889003",),
    "ST": ("427084000",),
}
NSR_CODE = "426783006"  # normal sinus rhythm

# The first code of each class is the one the WFDB writer emits.
def class_code(name: str) -> str:
    return CLASS_CODES[name][0]


def parse_codes(text: str) -> list[str]:
    """'164889003,59118001' -> ['164889003', '59118001']; raises ValueError on a non-numeric entry."""
    out = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise ValueError(f"'{part}' is not a SNOMED-CT code")
        out.append(part)
    return out


def codes_to_labels(codes: Iterable[str], mapping: Mapping[str, Iterable[str]] = CLASS_CODES) -> tuple[np.ndarray, list[str]]:
    """Multi-hot (6,) over CLASSES and the codes that map to none of them (kept as metadata)."""
    lookup = {str(code): CLASSES.index(cls) for cls, cs in mapping.items() for code in cs}
    y = np.zeros(len(CLASSES), np.float32)
    other = []
    for c in codes:
        if c in lookup:
            y[lookup[c]] = 1.0
        else:
            other.append(c)
    return y, other


def labels_to_codes(y: np.ndarray, normal_rhythm: bool) -> list[str]:
    """Inverse for writing: one code per positive class, plus NSR for a normal-rate sinus rhythm."""
    codes = [class_code(c) for c, v in zip(CLASSES, y) if v > 0.5]
    if normal_rhythm:
        codes.append(NSR_CODE)
    return codes
