"""A read cache for parsed + preprocessed record sets, so a second load does not re-parse the files.

Key = sha256 of (reader, absolute source path, every source file's relative path, size and mtime_ns,
reader settings, cache format). Any edited, added or removed file, or a different setting, gives a new key.
Entries are records .npz files written atomically (temp file + rename) under the cache dir;
default `.mupriv-cache/` in the current directory, or $MUPRIV_CACHE_DIR, or the `root` you pass."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

from simulator.data.npzio import FORMAT, load_records_npz, save_records
from simulator.data.records import ECGRecords
from simulator.errors import MuprivError

DEFAULT_DIR = ".mupriv-cache"


def default_cache_dir() -> Path:
    return Path(os.environ.get("MUPRIV_CACHE_DIR") or (Path.cwd() / DEFAULT_DIR))


def file_fingerprint(root: Path, files: Iterable[Path]) -> list[tuple[str, int, int]]:
    out = []
    for f in files:
        st = f.stat()
        rel = str(f.relative_to(root)) if f.is_relative_to(root) and f != root else str(f)
        out.append((rel, st.st_size, st.st_mtime_ns))
    return sorted(out)


class RecordCache:
    """`load(kind, source, files, settings, build)` returns cached records or builds, stores and returns them.
    `hits` / `misses` count what happened (tests and the benchmark read them)."""

    def __init__(self, root: Path | str | None = None, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def key(self, kind: str, source: Path, files: Iterable[Path], settings: dict) -> str:
        source = Path(source).resolve()
        root = source if source.is_dir() else source.parent
        blob = json.dumps({"format": FORMAT, "kind": kind, "source": str(source),
                           "files": file_fingerprint(root, [Path(f).resolve() for f in files]),
                           "settings": settings}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path_for(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key[:24]}.npz"

    def load(self, kind: str, source: Path, files: Iterable[Path], settings: dict,
             build: Callable[[], ECGRecords]) -> ECGRecords:
        if not self.enabled:
            self.misses += 1
            return build()
        path = self.path_for(kind, self.key(kind, source, files, settings))
        if path.is_file():
            try:
                rec = load_records_npz(path)
                self.hits += 1
                return rec
            except MuprivError:
                pass  # corrupt or foreign entry: rebuild and overwrite it
        self.misses += 1
        rec = build()
        try:
            save_records(rec, path)
        except OSError as e:
            raise MuprivError(f"{self.root}: cannot write the data cache ({e.strerror}); pass another cache dir or disable the cache") from None
        return rec
