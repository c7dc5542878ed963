"""A local stand-in for PhysioNet and Zenodo: an HTTP server on 127.0.0.1 in a thread that serves files from memory,
answers Range requests, and can misbehave on purpose (corrupt a file, cut a transfer halfway). The tests of
`mupriv data fetch` and `prepare` reach it through --mirror, so they never touch the network."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

SAMPLE = Path(__file__).parents[1].parent / "shared/data/cinc2021-sample"
# a handful of real records from two databases (CPSC 2018 and Georgia) in the Challenge's training/<db>/gN layout
CINC_PICK = {"training/cpsc_2018/g1": ("A0001", "A0002", "A0003"), "training/georgia/g1": ("E00001", "E00004", "E00005")}


class FileServer:
    """`files` maps a URL path (no leading slash) to its bytes. `corrupt`: paths always served with a byte flipped;
    `corrupt_once`: the first GET only; `cut`: path -> bytes after which the first GET closes the connection
    (announcing the whole Content-Length); `cut_always`: every GET of the path closes after that many bytes;
    `busy_once`: the first GET is answered 503.
    `requests` records (path, Range header) of every GET."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.corrupt: set[str] = set()
        self.corrupt_once: set[str] = set()
        self.cut: dict[str, int] = {}
        self.cut_always: dict[str, int] = {}
        self.busy_once: set[str] = set()   # answered 503 the first time
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_GET(self):  # noqa: N802
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((path, rng))
                if path not in server.files:
                    self.send_error(404)
                    return
                if path in server.busy_once:
                    server.busy_once.discard(path)
                    self.send_error(503)
                    return
                body = server.files[path]
                if path in server.corrupt or path in server.corrupt_once:
                    server.corrupt_once.discard(path)
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(body) and start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                cut = server.cut.pop(path, None) if path in server.cut else server.cut_always.get(path)
                if cut is not None:
                    chunk = chunk[:cut]
                self.wfile.write(chunk)
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def gets(self, path: str) -> list[str | None]:
        """The Range headers of every GET of `path` (None = from the start)."""
        return [r for p, r in self.requests if p == path]

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def cinc_files() -> dict[str, bytes]:
    """Six real CinC records under training/<db>/g1/ plus the SHA256SUMS.txt that lists them (PhysioNet's layout)."""
    files: dict[str, bytes] = {}
    for folder, names in CINC_PICK.items():
        for n in names:
            for ext in (".hea", ".mat"):
                files[f"{folder}/{n}{ext}"] = (SAMPLE / f"{n}{ext}").read_bytes()
    files["SHA256SUMS.txt"] = "".join(f"{hashlib.sha256(b).hexdigest()}  {p}\n"
                                      for p, b in sorted(files.items())).encode()
    return files


def copy_cinc_sample(dest: Path) -> Path:
    """The same six records copied into `dest` in the Challenge layout (what a finished fetch leaves)."""
    for folder, names in CINC_PICK.items():
        (dest / folder).mkdir(parents=True, exist_ok=True)
        for n in names:
            for ext in (".hea", ".mat"):
                shutil.copy(SAMPLE / f"{n}{ext}", dest / folder / f"{n}{ext}")
    return dest


def code15_part(n: int = 12, patients: int = 4, seed: int = 0, first_exam: int = 1) -> tuple[bytes, pd.DataFrame]:
    """A synthetic CODE-15% part: HDF5 bytes (`tracings` (n + 1, 4096, 12) with a zero padding row, `exam_id`) and
    its exams.csv rows, `patients` patients with several exams each."""
    from simulator.data import synthesize
    rec = synthesize(n, seed=seed)
    x = np.zeros((n + 1, 4096, 12), np.float32)
    m = min(rec.length, 4096)
    x[:n, :m] = rec.signals[:, :m]
    eids = np.arange(first_exam, first_exam + n)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f["tracings"] = x
        f["exam_id"] = np.concatenate([eids, [0]])
    cls = ["1dAVb", "RBBB", "LBBB", "SB", "ST", "AF"]
    from simulator.core.labels import CLASSES
    y = rec.labels > 0.5
    rows = pd.DataFrame({"exam_id": eids, "age": 60, "is_male": True, "nn_predicted_age": 60.0,
                         **{c: y[:, CLASSES.index(c)] for c in cls},
                         "patient_id": 1000 + first_exam + np.arange(n) % patients, "normal_ecg": ~y.any(axis=1),
                         "death": False, "timey": 1.0, "trace_file": "exams_part0.hdf5"})
    return buf.getvalue(), rows


def code15_files(n: int = 12, patients: int = 4) -> dict[str, bytes]:
    """Zenodo's layout for part 0: exams_part0.zip (holding exams_part0.hdf5), exams.csv and the record JSON with
    md5 checksums, served as record.json (the mirror's name for Zenodo's API answer)."""
    h5, rows = code15_part(n, patients)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("exams_part0.hdf5", h5)
    files = {"exams_part0.zip": zbuf.getvalue(), "exams.csv": rows.to_csv(index=False).encode()}
    record = {"id": 4916206, "files": [{"key": k, "size": len(b), "checksum": f"md5:{hashlib.md5(b).hexdigest()}"}
                                       for k, b in files.items()]}
    files["record.json"] = json.dumps(record).encode()
    return files
