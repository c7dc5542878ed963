"""`mupriv data fetch`: download a public ECG database, check every file against the publisher's checksum, and
write a manifest, the licence and the citation next to the data.

Why a small downloader of our own (the standard library's urllib) and not pooch or wfdb's: a CODE-15% part is
1.7 GB and a CinC 2021 subset tens of thousands of files, so an interrupted download must continue where it
stopped (an HTTP Range request on the kept `NAME.part` file) rather than start again, which pooch does not do;
and each failure must end as one line naming the URL and the fix.

Guarantees:
- nothing half-written under a final name: bytes go to `NAME.part`, which is renamed once its checksum matches;
- an interrupted transfer (connection cut, timeout) resumes from the `.part` file, up to RESUME_ATTEMPTS times
  per file; a command that is stopped (Ctrl-C) resumes the same way when it is run again;
- a file whose checksum does not match is fetched once more from scratch, then it is an error;
- files already fetched (in the manifest with their size, or present with the published checksum) are skipped.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable

from simulator.atomic import atomic_write, publish
from simulator.data.sources import Source
from simulator.errors import MuprivError

MANIFEST = "manifest.json"
LICENCE_FILE = "LICENSE.txt"
FORMAT = "mupriv-fetch-1"
RESUME_ATTEMPTS = 5        # transfers per file that may be cut before giving up (each resumes from the .part file)
CHECKSUM_ATTEMPTS = 2      # whole downloads per file when the checksum does not match (the first and one refetch)
CHUNK = 1 << 20
RETRY_PAUSE_S = 0.5        # first pause before resuming a cut transfer; doubles each time, at most 10 s
TIMEOUT_S = 60.0
USER_AGENT = "mupriv-data-fetch"


@dataclass(frozen=True)
class Entry:
    """One file to get: `path` relative to the output folder (and to the base URL), the published checksum
    (`algo`, `digest`), its size when the index says, and whether it is a zip to unpack (CODE-15% parts)."""

    path: str
    url: str
    algo: str
    digest: str
    size: int | None = None
    unzip: bool = False


class Interrupted(Exception):
    """A transfer that stopped before its end (connection cut, timeout, short body): resume it."""


# ----------------------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------------------
def _hand_fetch_hint(src: Source, base: str, out: Path) -> str:
    if src.index_kind == "zenodo":
        return (f"fetch by hand: download exams.csv and exams_partN.zip from {base}/ into {out} and unzip them, "
                f"or use a mirror (--mirror URL or $MUPRIV_DATA_MIRROR)")
    return (f"fetch by hand: wget -r -N -c -np {base}/training/<database>/ into {out}, "
            f"or use a mirror (--mirror URL or $MUPRIV_DATA_MIRROR)")


def _open(url: str, headers: dict[str, str] | None = None, timeout: float = TIMEOUT_S):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310  (http(s) URLs from the catalogue or --mirror)


def _reason(e: BaseException) -> str:
    r = getattr(e, "reason", None) or e
    return str(r).strip() or type(r).__name__


def get_index(src: Source, base: str, index_url: str, out: Path, timeout: float = TIMEOUT_S) -> bytes:
    """The publisher's checksum list; being the first request, its failure is the "no network" error."""
    if not index_url.startswith(("http://", "https://", "file://")):
        raise MuprivError(f"--mirror {base}: not a URL; give http://, https:// or file:// (or unset $MUPRIV_DATA_MIRROR)")
    try:
        with _open(index_url, timeout=timeout) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        raise MuprivError(f"{index_url}: HTTP {e.code} {e.reason}; the checksum list is not there: "
                          f"{_hand_fetch_hint(src, base, out)}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise MuprivError(f"cannot reach {index_url} ({_reason(e)}); check the network connection, or "
                          f"{_hand_fetch_hint(src, base, out)}") from None


def parse_index(src: Source, blob: bytes, base: str, selection: list[str]) -> list[Entry]:
    """The files of the selected subsets, with their published checksums. Paths that would leave the output
    folder (absolute, or with ..) are refused: the index comes from the network."""
    prefixes = [src.subsets[s] for s in selection]
    entries: list[Entry] = []
    if src.index_kind == "sha256sums":
        for line in blob.decode("utf-8", "replace").splitlines():
            parts = line.strip().split(maxsplit=1)
            if len(parts) != 2:
                continue
            digest, name = parts[0].lower(), parts[1].lstrip("*")
            if any(name.startswith(p) for p in prefixes):
                entries.append(Entry(name, f"{base}/{name}", "sha256", digest))
    else:
        try:
            files = json.loads(blob)["files"]
        except (ValueError, KeyError, TypeError) as e:
            raise MuprivError(f"{src.index_url}: not a Zenodo record JSON ({type(e).__name__}: {e}); "
                              f"a mirror must serve the record JSON as {src.mirror_index}") from None
        for f in files:
            key = str(f.get("key", ""))
            if key == "exams.csv" or any(key.startswith(p) for p in prefixes):
                algo, _, digest = str(f.get("checksum", "")).partition(":")
                if algo not in ("md5", "sha256") or not digest:
                    raise MuprivError(f"{src.index_url}: file {key} has checksum {f.get('checksum')!r}; expected "
                                      f"md5:... or sha256:...")
                entries.append(Entry(key, f"{base}/{key}", algo, digest.lower(), int(f["size"]) if "size" in f else None,
                                     unzip=key.endswith(".zip")))
    for e in entries:
        p = PurePosixPath(e.path)
        if p.is_absolute() or ".." in p.parts:
            raise MuprivError(f"the checksum list names an unsafe path {e.path!r}; refusing to write outside the folder")
    missing = [s for s in selection if not any(e.path.startswith(src.subsets[s]) for e in entries)]
    if missing:
        raise MuprivError(f"the checksum list has no files for {', '.join(missing)}; the release may have changed: "
                          f"check {src.homepage}")
    return sorted(entries, key=lambda e: e.path)


def _transfer(url: str, part: Path, size: int | None, on_bytes: Callable[[int], None], timeout: float) -> None:
    """Bring `part` to the whole file: ask for the rest with a Range request when part of it is there (a server
    that ignores Range sends everything, and the file starts again). Raise Interrupted when the body stops short."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if size is not None and offset == size and size > 0:
        return
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with _open(url, headers, timeout) as r:
            if offset and r.status != 206:
                offset = 0
            expected = r.headers.get("Content-Length")
            got = 0
            with open(part, "ab" if offset else "wb") as fh:
                while True:
                    block = r.read(CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    got += len(block)
                    on_bytes(len(block))
            if expected is not None and got < int(expected):
                raise Interrupted(f"{got} of {expected} bytes")
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the .part is already whole (or longer): let the checksum decide
            return
        if e.code >= 500 or e.code == 429:  # the server is busy or failing: try again, as for a cut transfer
            raise Interrupted(f"HTTP {e.code} {e.reason}") from None
        raise MuprivError(f"{url}: HTTP {e.code} {e.reason}; the file is not on the server: check --mirror, or "
                          f"the release at its home page") from None
    except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as e:
        raise Interrupted(_reason(e)) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        if isinstance(e, OSError) and e.filename is not None:
            raise  # a local write error (disk full, read-only): the CLI reports it
        raise Interrupted(_reason(e)) from None


def file_digests(path: Path, algos: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    hs = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            for h in hs.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hs.items()}


def download(entry: Entry, final: Path, on_bytes: Callable[[int], None] = lambda n: None,
             timeout: float = TIMEOUT_S) -> dict:
    """Fetch one file to `final` through `final.part`; returns its manifest record (sha256, size, url).
    MuprivError when it stays interrupted or its checksum stays wrong."""
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    for check in range(CHECKSUM_ATTEMPTS):
        why = ""
        for attempt in range(RESUME_ATTEMPTS):
            try:
                _transfer(entry.url, part, entry.size, on_bytes, timeout)
                break
            except Interrupted as e:
                why = str(e)
                time.sleep(min(RETRY_PAUSE_S * 2 ** attempt, 10.0))
        else:
            raise MuprivError(f"{entry.url}: the download was interrupted {RESUME_ATTEMPTS} times ({why}); run the "
                              f"same command again to resume it (the part fetched so far is kept as {part})")
        algos = tuple(dict.fromkeys((entry.algo, "sha256")))
        got = file_digests(part, algos)
        size = part.stat().st_size
        if got[entry.algo] == entry.digest and (entry.size is None or size == entry.size):
            publish(part, final)
            return {"sha256": got["sha256"], "size": size, "url": entry.url, "published": f"{entry.algo}:{entry.digest}"}
        part.unlink(missing_ok=True)  # a whole file with the wrong bytes cannot be resumed: start again
    raise MuprivError(f"{entry.url}: checksum mismatch after {CHECKSUM_ATTEMPTS} downloads ({entry.algo} expected "
                      f"{entry.digest}, got {got[entry.algo]}, {size} bytes); the server or a proxy sends altered "
                      f"bytes: try later, use --mirror, or fetch the file by hand and check it against the index")


def unpack_zip(zip_path: Path, out: Path, source: dict) -> dict[str, dict]:
    """Extract the HDF5 members of a verified CODE-15% zip next to it, each atomically, hashing as it goes;
    returns their manifest records. Members are placed by their base name only (never outside `out`)."""
    records = {}
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise MuprivError(f"{zip_path}: not a zip file ({e}) although its checksum matched the index; delete it "
                          f"and fetch again") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir() and m.filename.lower().endswith((".hdf5", ".h5", ".csv"))]
        if not members:
            raise MuprivError(f"{zip_path}: holds no .hdf5 file; expected exams_partN.hdf5 inside")
        for m in members:
            name = PurePosixPath(m.filename).name
            target = out / name
            h = hashlib.sha256()

            def copy(tmp: str, member=m, digest=h) -> None:
                with open(tmp, "wb") as dst, zf.open(member) as src:
                    while block := src.read(CHUNK):
                        dst.write(block)
                        digest.update(block)

            atomic_write(target, copy)
            records[name] = {"sha256": h.hexdigest(), "size": target.stat().st_size, "url": source["url"],
                             "published": source["published"], "unpacked_from": zip_path.name}
    return records


# ----------------------------------------------------------------------------------------------------------
# The command's work
# ----------------------------------------------------------------------------------------------------------
def read_manifest(out: Path) -> dict:
    path = out / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return {}  # a foreign or damaged file: the files on disk are checked again instead
    return data if data.get("format") == FORMAT else {}


def _done(out: Path, entry: Entry, manifest: dict) -> dict[str, dict] | None:
    """Manifest records that show `entry` already fetched (and, for a zip, unpacked), or None."""
    files = manifest.get("files", {})
    if entry.unzip:
        outs = {k: v for k, v in files.items() if v.get("unpacked_from") == PurePosixPath(entry.path).name
                and v.get("published") == f"{entry.algo}:{entry.digest}"}
        if outs and all((out / k).is_file() and (out / k).stat().st_size == v["size"] for k, v in outs.items()):
            return outs
        return None
    rec = files.get(entry.path)
    final = out / entry.path
    if rec and rec.get("published") == f"{entry.algo}:{entry.digest}" and final.is_file() \
            and final.stat().st_size == rec["size"]:
        return {entry.path: rec}
    if final.is_file():  # on disk but not in the manifest (e.g. stopped before it was saved): check it
        got = file_digests(final, tuple(dict.fromkeys((entry.algo, "sha256"))))
        if got[entry.algo] == entry.digest:
            return {entry.path: {"sha256": got["sha256"], "size": final.stat().st_size, "url": entry.url,
                                 "published": f"{entry.algo}:{entry.digest}"}}
    return None


@dataclass
class FetchResult:
    out: Path
    files: int            # files in the manifest for this selection
    fetched: int          # of which downloaded by this run
    bytes: int            # bytes received by this run
    manifest: Path
    licence: Path


def fetch(src: Source, out: Path, selection: list[str], *, mirror: str | None = None, jobs: int = 4,
          keep_zip: bool = False, progress: Callable[[int, int, int], None] | None = None,
          timeout: float = TIMEOUT_S) -> FetchResult:
    """Download the selected subsets of `src` into `out` (see the module docstring). `progress(done, total,
    bytes)` is called as files finish and bytes arrive."""
    out = Path(out)
    base, index_url = src.urls(mirror)
    out.mkdir(parents=True, exist_ok=True)
    with _folder_lock(out):
        return _fetch(src, out, selection, base, index_url, jobs, keep_zip, progress, timeout)


@contextlib.contextmanager
def _folder_lock(out: Path):
    """One fetch per folder at a time: two would append to the same NAME.part files."""
    fh = open(out / ".fetch.lock", "w")  # noqa: SIM115 - held for the whole fetch
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MuprivError(f"{out}: another `mupriv data fetch` is writing to this folder; wait for it to end "
                              f"or choose another --out") from None
        yield
    finally:
        fh.close()


def _fetch(src: Source, out: Path, selection: list[str], base: str, index_url: str, jobs: int, keep_zip: bool,
           progress: Callable[[int, int, int], None] | None, timeout: float) -> FetchResult:
    blob = get_index(src, base, index_url, out, timeout)
    entries = parse_index(src, blob, base, selection)
    atomic_write(out / src.mirror_index, blob)  # the publisher's own list, kept as the provenance of the checksums
    licence = atomic_write(out / LICENCE_FILE, src.about())
    manifest = read_manifest(out)
    files: dict[str, dict] = dict(manifest.get("files", {}))
    lock = threading.Lock()
    state = {"done": 0, "bytes": 0, "fetched": 0, "saved": time.monotonic()}
    total = len(entries)

    def save() -> None:
        doc = {"format": FORMAT, "database": src.name, "title": src.title, "homepage": src.homepage,
               "base_url": base, "index_url": index_url,
               "selection": sorted(set(manifest.get("selection", [])) | set(selection)),
               "licence": src.licence, "licence_url": src.licence_url, "citation": src.citation,
               "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "files": dict(sorted(files.items()))}
        atomic_write(out / MANIFEST, json.dumps(doc, indent=1) + "\n")

    def tick(n_bytes: int = 0, finished: bool = False) -> None:
        with lock:
            state["bytes"] += n_bytes
            state["done"] += int(finished)
            if progress:
                progress(state["done"], total, state["bytes"])

    def one(entry: Entry) -> None:
        recs = _done(out, entry, manifest)
        if recs is None:
            rec = download(entry, out / entry.path, on_bytes=lambda n: tick(n), timeout=timeout)
            recs = {entry.path: rec}
            if entry.unzip:
                recs = unpack_zip(out / entry.path, out, rec)
                if keep_zip:
                    recs[entry.path] = rec
                else:
                    (out / entry.path).unlink()
            with lock:
                state["fetched"] += 1
        with lock:
            files.update(recs)
            if time.monotonic() - state["saved"] > 5.0:  # a stopped run keeps what it had finished
                save()
                state["saved"] = time.monotonic()
        tick(finished=True)

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        futures = [pool.submit(one, e) for e in entries]
        for f in futures:
            f.result()  # the first failure stops the rest: the files not started are not fetched
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        with lock:
            save()
    return FetchResult(out, len(entries), state["fetched"], state["bytes"], out / MANIFEST, licence)
