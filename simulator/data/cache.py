"""A read cache for parsed + preprocessed record sets, so a second load does not re-parse the files.

Key = sha256 of (reader, absolute source path, every source file's relative path, size and mtime_ns,
reader settings, cache format). Any edited, added or removed file, or a different setting, gives a new key.
Entries are records .npz files written atomically (temp file + rename) under the cache dir;
default `.mupriv-cache/` in the current directory, or $MUPRIV_CACHE_DIR, or the `root` you pass.

`fetch` caches anything built from settings alone (no source files), in a file format of the caller's:
synthetic cohorts use it (simulator.data.cohort.cached_synthetic_cohort), keyed by their spec, seed and code."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from simulator.data.npzio import FORMAT, load_records_npz, save_records
from simulator.data.records import ECGRecords
from simulator.errors import MuprivError

DEFAULT_DIR = ".mupriv-cache"
T = TypeVar("T")


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

    def settings_key(self, kind: str, settings: dict) -> str:
        """The key of an entry built from `settings` alone (fetch)."""
        blob = json.dumps({"kind": kind, "settings": settings}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def load(self, kind: str, source: Path, files: Iterable[Path], settings: dict,
             build: Callable[[], ECGRecords]) -> ECGRecords:
        if not self.enabled:
            self.misses += 1
            return build()
        path = self.path_for(kind, self.key(kind, source, files, settings))
        return self._get_or_build(path, build, load_records_npz, save_records)

    def fetch(self, kind: str, settings: dict, build: Callable[[], T], read: Callable[[Path], T],
              write: Callable[[T, Path], object], suffix: str = ".npz") -> T:
        """What `build()` returns for `settings`, from the cache when an entry is there: `read(path)` loads an entry
        and raises MuprivError when it cannot (the entry is then rebuilt and overwritten, never trusted);
        `write(obj, path)` stores one and must write atomically (simulator.atomic)."""
        if not self.enabled:
            self.misses += 1
            return build()
        key = self.settings_key(kind, settings)
        return self._get_or_build(self.root / f"{kind}-{key[:24]}{suffix}", build, read, write)

    def _get_or_build(self, path: Path, build: Callable[[], T], read: Callable[[Path], T],
                      write: Callable[[T, Path], object]) -> T:
        if path.is_file():
            try:
                obj = read(path)
                self.hits += 1
                return obj
            except MuprivError:
                pass  # corrupt or foreign entry: rebuild and overwrite it
        self.misses += 1
        obj = build()
        try:
            write(obj, path)
        except OSError as e:
            raise MuprivError(f"{self.root}: cannot write the data cache ({e.strerror}); pass another cache dir or disable the cache") from None
        return obj
