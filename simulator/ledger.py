"""The WireLedger: every Flower message between the server and a client, as the server sees it.

One entry per message. The honest-but-curious server of `attacks` reads only this ledger, so an
entry holds exactly what crossed the wire: the message's metadata (type, node, group), the arrays
it carried (as numpy, the payload), its config and metric records, and -- for a client's error
reply -- the error. Sizes are measured on Flower's own protobuf serialisation of the message
(`flwr.common.serde.message_to_proto`), never estimated from `numel * 4`:

- ``bytes``: the whole serialised ``Message`` protobuf (metadata + RecordDict content or error);
- ``content_bytes``: the serialised ``RecordDict`` alone; ``sha256`` is taken over these bytes
  (deterministic serialisation), so a model broadcast identically to every client hashes the same;
- ``object_bytes``: the sum of the deflated objects (Message, RecordDict, records, Arrays,
  ArrayChunks, each with its object header) that Flower 1.41's object-store transport pushes for
  this message before any de-duplication across messages;
- ``payload_bytes``: the raw tensor data (``ndarray.nbytes``), for comparison only.

``partition_id`` is simulation bookkeeping that the real server would not know (it only sees node
ids); it is there so evaluation code can join ground truth afterwards.
"""

from __future__ import annotations

import hashlib
import json
import threading
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.common.serde import message_to_proto
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, no_object_id_recompute

from simulator.atomic import atomic_write
from simulator.errors import MuprivError

DOWN = "down"  # server -> client
UP = "up"  # client -> server
SERVER = "server"  # not a message: what the server derives itself, e.g. the unmasked SecAgg+ sum

CSV_NAME = "ledger.csv"
NPZ_NAME = "payloads.npz"

# Columns whose values are lists/dicts: stored as JSON strings in the CSV.
_JSON_COLUMNS = ("tensor_names", "shapes", "dtypes", "records")


@dataclass
class LedgerEntry:
    """One message on the wire, in the server's view."""

    row: int
    scheme: str
    round: int | None  # FL round: the message's group_id, else its config's "server-round"
    exchange: int  # index of the grid push this message belongs to (replies: their request's)
    direction: str  # "down" (server -> client) or "up" (client -> server)
    node_id: int  # the client's node id (the peer, whatever the direction)
    partition_id: int | None  # simulation bookkeeping, unknown to a real server
    message_type: str
    group_id: str
    message_id: str
    reply_to: str
    tensor_names: list[str]  # "<record key>/<array key>", in message order
    shapes: list[list[int]]
    dtypes: list[str]
    n_params: int
    payload_bytes: int  # sum of ndarray.nbytes (reference only)
    bytes: int  # serialised Message protobuf
    content_bytes: int  # serialised RecordDict protobuf (0 for an error reply)
    object_bytes: int  # deflated object tree as pushed by Flower 1.41's object store
    sha256: str  # of the deterministic serialised content (or of the error, for an error reply)
    error_code: int | None = None
    error_reason: str | None = None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # config/metric records
    payload: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def is_error(self) -> bool:
        """True for a client's error reply."""
        return self.error_code is not None


def _array_to_numpy(arr: Array) -> np.ndarray:
    """The array the server holds: parsed straight from Flower's .npy bytes when possible."""
    data = arr.data
    if arr.stype == "numpy.ndarray" and bytes(data[:8]) == b"\x93NUMPY\x01\x00":
        try:
            dtype = np.dtype(arr.dtype)
            hlen = int.from_bytes(bytes(data[8:10]), "little")
            header = bytes(data[10 : 10 + hlen])
            if f"'descr': '{dtype.str}'".encode() in header and b"'fortran_order': False" in header:
                count = int(np.prod(arr.shape, dtype=np.int64))
                if len(data) - 10 - hlen == count * dtype.itemsize:
                    flat = np.frombuffer(data, dtype=dtype, count=count, offset=10 + hlen)
                    return flat.reshape(tuple(arr.shape)).copy()
        except (TypeError, ValueError):
            pass
    try:
        return np.array(arr.numpy(), copy=True)
    except Exception:  # non-numpy stype: keep the raw bytes the server received
        return np.frombuffer(bytes(data), dtype=np.uint8).copy()


def _plain(value: Any) -> Any:
    """A config/metric value as plain Python (bytes kept as bytes)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def _to_json(value: Any, blobs: dict[str, np.ndarray] | None = None, prefix: str = "") -> Any:
    """A record value as JSON. Bytes (SecAgg+ carries each masked vector as bytes in a config record, about
    1.5 MB per message as hex) go to `blobs` as uint8 arrays, saved next to the payloads, and the JSON names
    them; without `blobs` only their length is kept (the run-level ledger.csv, a table without payloads)."""
    if isinstance(value, bytes):
        if blobs is None:
            return {"__bytes_len__": len(value)}
        key = f"{prefix}_b{len(blobs)}"
        blobs[key] = np.frombuffer(value, dtype=np.uint8)
        return {"__blob__": key, "len": len(value)}
    if isinstance(value, list):
        return [_to_json(v, blobs, prefix) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v, blobs, prefix) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return {"__float__": repr(value)}
    return value


def _from_json(value: Any, blobs: Mapping[str, np.ndarray] | None = None) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:  # ledgers written before bytes moved to payloads.npz
            return bytes.fromhex(value["__bytes__"])
        if set(value) == {"__blob__", "len"} and blobs is not None:
            return blobs[value["__blob__"]].tobytes()
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _from_json(v, blobs) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v, blobs) for v in value]
    return value


def summary_json(value: Any) -> str:
    """A record column's value for a table without payloads: JSON with each bytes value replaced by its length."""
    return json.dumps(_to_json(value), sort_keys=True)


def round_of(message: Message) -> int | None:
    """The FL round a message belongs to, as the server can read it from the message."""
    gid = message.metadata.group_id
    if gid and gid.lstrip("-").isdigit():
        return int(gid)
    if message.has_content():
        for rec in message.content.config_records.values():
            rnd = rec.get("server-round")
            if isinstance(rnd, int) and not isinstance(rnd, bool):
                return rnd
    return None


def _content_object_bytes(content: RecordDict) -> int:
    """Bytes of the deflated object tree under a RecordDict (itself, records, arrays, chunks)."""
    with no_object_id_recompute():  # hash each object once, as Flower's own grids do
        return sum(len(obj.deflate()) for obj in get_all_nested_objects(content).values())


def measure_message(message: Message, _cache: dict[str, int] | None = None) -> dict[str, Any]:
    """Serialise ``message`` the way Flower does and return its sizes and content hash.

    ``object_bytes`` = the Message object's own deflated size + its content's object tree. The
    Message object's header names its child by a fixed-length sha256 id, so its size does not
    depend on the content; the content tree is cached by content hash (a broadcast is measured
    once, not once per client).
    """
    proto = message_to_proto(message)
    if message.has_content():
        content = proto.content.SerializeToString(deterministic=True)
        digest = hashlib.sha256(content).hexdigest()
        content_bytes = len(content)
        tree = None if _cache is None else _cache.get(digest)
        if tree is None:
            tree = _content_object_bytes(message.content)
            if _cache is not None:
                _cache[digest] = tree
        shell = make_message(metadata=message.metadata, content=RecordDict())
        object_bytes = len(shell.deflate()) + tree
    else:
        digest = hashlib.sha256(proto.error.SerializeToString(deterministic=True)).hexdigest()
        content_bytes = 0
        object_bytes = len(message.deflate())
    return {
        "bytes": proto.ByteSize(),
        "content_bytes": content_bytes,
        "object_bytes": object_bytes,
        "sha256": digest,
    }


class WireLedger:
    """Append-only record of the messages a Flower server exchanged with its clients.

    Thread-safe: legacy Flower strategies send to clients from a thread pool.
    """

    def __init__(self, scheme: str = "") -> None:
        self.scheme = scheme
        self._entries: list[LedgerEntry] = []
        self._lock = threading.Lock()
        self._tree_bytes: dict[str, int] = {}  # content sha256 -> deflated object-tree bytes

    # ------------------------------------------------------------------ recording
    def record(
        self,
        message: Message,
        *,
        direction: str,
        node_id: int,
        exchange: int,
        partition_id: int | None = None,
        round: int | None = None,  # noqa: A002 - the FL round
    ) -> LedgerEntry:
        """Serialise and record one message. ``round`` defaults to what the message says."""
        if direction not in (DOWN, UP):
            raise ValueError(f"direction must be {DOWN!r} or {UP!r}, got {direction!r}")
        sizes = measure_message(message, self._tree_bytes)
        names: list[str] = []
        shapes: list[list[int]] = []
        dtypes: list[str] = []
        payload: dict[str, np.ndarray] = {}
        records: dict[str, dict[str, Any]] = {}
        error_code = error_reason = None
        if message.has_content():
            for key, rec in message.content.items():
                if isinstance(rec, ArrayRecord):
                    for name, arr in rec.items():
                        full = f"{key}/{name}"
                        names.append(full)
                        shapes.append([int(s) for s in arr.shape])
                        dtypes.append(str(arr.dtype))
                        payload[full] = _array_to_numpy(arr)
                elif isinstance(rec, (ConfigRecord, MetricRecord)):
                    kind = "config" if isinstance(rec, ConfigRecord) else "metrics"
                    records[key] = {"__kind__": kind, **{k: _plain(v) for k, v in rec.items()}}
        else:
            error_code = int(message.error.code)
            error_reason = str(message.error.reason)
        md = message.metadata
        with self._lock:
            entry = LedgerEntry(
                row=len(self._entries),
                scheme=self.scheme,
                round=round_of(message) if round is None else round,
                exchange=exchange,
                direction=direction,
                node_id=int(node_id),
                partition_id=partition_id,
                message_type=md.message_type,
                group_id=md.group_id,
                message_id=md.message_id,
                reply_to=md.reply_to_message_id,
                tensor_names=names,
                shapes=shapes,
                dtypes=dtypes,
                n_params=int(sum(int(np.prod(s)) for s in shapes)),
                payload_bytes=int(sum(a.nbytes for a in payload.values())),
                error_code=error_code,
                error_reason=error_reason,
                records=records,
                payload=payload,
                **sizes,
            )
            self._entries.append(entry)
        return entry

    def observe(self, *, round: int | None, exchange: int, arrays: Mapping[str, np.ndarray],  # noqa: A002
                metrics: Mapping[str, Any] | None = None, message_type: str = "aggregate") -> LedgerEntry:
        """Record what the server learns without a message crossing the wire (direction "server",
        zero bytes): e.g. the aggregate SecAgg+ unmasks, with ``metrics["num-clients"]`` summands."""
        payload = {f"arrays/{k}": np.asarray(v) for k, v in arrays.items()}
        with self._lock:
            entry = LedgerEntry(
                row=len(self._entries), scheme=self.scheme, round=round, exchange=exchange, direction=SERVER,
                node_id=0, partition_id=None, message_type=message_type, group_id="" if round is None else str(round),
                message_id="", reply_to="", tensor_names=list(payload), shapes=[list(a.shape) for a in payload.values()],
                dtypes=[str(a.dtype) for a in payload.values()], n_params=int(sum(a.size for a in payload.values())),
                payload_bytes=int(sum(a.nbytes for a in payload.values())), bytes=0, content_bytes=0, object_bytes=0,
                sha256=hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in payload.values())).hexdigest(),
                records={"metrics": {"__kind__": "metrics", **{k: _plain(v) for k, v in (metrics or {}).items()}}},
                payload=payload,
            )
            self._entries.append(entry)
        return entry

    def set_partition_ids(self, node_to_partition: Mapping[int, int]) -> None:
        """Fill ``partition_id`` from a node-id -> partition-id map (simulation bookkeeping)."""
        with self._lock:
            for e in self._entries:
                if e.node_id in node_to_partition:
                    e.partition_id = int(node_to_partition[e.node_id])

    def extend(self, entries: list[LedgerEntry]) -> None:
        """Append entries recorded elsewhere (e.g. in an engine's worker process), renumbered."""
        with self._lock:
            for e in entries:
                e.row = len(self._entries)
                e.scheme = self.scheme or e.scheme
                self._entries.append(e)

    # ------------------------------------------------------------------ reading
    @property
    def entries(self) -> list[LedgerEntry]:
        """The entries, oldest first (a copy of the list; the entries themselves are shared)."""
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(self.entries)

    def __getitem__(self, row: int) -> LedgerEntry:
        return self._entries[row]

    def payload(self, row: int) -> dict[str, np.ndarray]:
        """The arrays message ``row`` carried, by ``"<record key>/<array key>"``."""
        return self._entries[row].payload

    def to_frame(self) -> pd.DataFrame:
        """One row per message, without payloads (list columns hold Python lists)."""
        cols = [f.name for f in fields(LedgerEntry) if f.name != "payload"]
        rows = [{c: getattr(e, c) for c in cols} for e in self.entries]
        frame = pd.DataFrame(rows, columns=cols)
        for c in ("round", "partition_id", "error_code"):
            frame[c] = frame[c].astype("Int64")
        return frame

    def tensor_frame(self) -> pd.DataFrame:
        """One row per tensor per message: row, direction, round, node, name, shape, dtype, nbytes."""
        out = []
        for e in self.entries:
            for name, shape, dtype in zip(e.tensor_names, e.shapes, e.dtypes):
                out.append(
                    {
                        "row": e.row,
                        "scheme": e.scheme,
                        "round": e.round,
                        "direction": e.direction,
                        "node_id": e.node_id,
                        "partition_id": e.partition_id,
                        "tensor": name,
                        "shape": tuple(shape),
                        "dtype": dtype,
                        "nbytes": int(e.payload[name].nbytes) if name in e.payload else 0,
                    }
                )
        return pd.DataFrame(out)

    def bytes_per_round(self) -> pd.DataFrame:
        """Serialised bytes summed per (round, direction)."""
        frame = self.to_frame()
        if frame.empty:
            return pd.DataFrame(columns=["round", "direction", "messages", "bytes"])
        return (
            frame.groupby(["round", "direction"], dropna=False)
            .agg(messages=("row", "size"), bytes=("bytes", "sum"))
            .reset_index()
        )

    def errors(self) -> pd.DataFrame:
        """The error replies: which client failed in which round, and why."""
        frame = self.to_frame()
        return frame[frame["error_code"].notna()][
            ["row", "round", "node_id", "partition_id", "message_type", "error_code", "error_reason"]
        ].reset_index(drop=True)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``ledger.csv`` (rows) and ``payloads.npz`` (arrays) into ``directory``, atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        entries = self.entries
        frame = self.to_frame()
        blobs: dict[str, np.ndarray] = {}
        for c in _JSON_COLUMNS:
            frame[c] = [json.dumps(_to_json(v, blobs, f"r{row}"), sort_keys=True) for row, v in zip(frame["row"], frame[c])]
        arrays = {
            f"r{e.row}_t{j}": e.payload[name]
            for e in entries
            for j, name in enumerate(e.tensor_names)
            if name in e.payload
        }
        arrays.update(blobs)
        _atomic_write(directory / NPZ_NAME, lambda p: np.savez(p, **arrays))
        _atomic_write(directory / CSV_NAME, lambda p: frame.to_csv(p, index=False))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> WireLedger:
        """Read a ledger written by :meth:`save`."""
        directory = Path(directory)
        csv_path, npz_path = directory / CSV_NAME, directory / NPZ_NAME
        for p in (csv_path, npz_path):
            if not p.is_file():
                raise MuprivError(f"ledger file {p} is missing: point to a directory written by WireLedger.save")
        frame = pd.read_csv(csv_path, keep_default_na=False, na_values={"round": [""], "partition_id": [""], "error_code": [""]}, dtype={"group_id": str, "message_id": str, "reply_to": str, "sha256": str, "error_reason": str, "message_type": str, "scheme": str})
        ledger = cls(scheme=str(frame["scheme"].iloc[0]) if len(frame) else "")
        try:
            npz = np.load(npz_path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise MuprivError(f"ledger payload file {npz_path} is unreadable ({exc}): re-run to rewrite it") from exc
        with npz:
            for rec in frame.to_dict("records"):
                kw: dict[str, Any] = {}
                for f in fields(LedgerEntry):
                    if f.name == "payload":
                        continue
                    v = rec[f.name]
                    if f.name in _JSON_COLUMNS:
                        v = _from_json(json.loads(v), npz)
                    elif f.name in ("round", "partition_id", "error_code"):
                        v = None if pd.isna(v) else int(v)
                    elif f.name == "error_reason":
                        v = None if rec["error_code"] in ("", None) or pd.isna(rec["error_code"]) else str(v)
                    elif f.name in ("row", "exchange", "node_id", "n_params", "payload_bytes", "bytes", "content_bytes", "object_bytes"):
                        v = int(v)
                    else:
                        v = "" if v is None else str(v)
                    kw[f.name] = v
                entry = LedgerEntry(**kw)
                entry.payload = {
                    name: npz[f"r{entry.row}_t{j}"] for j, name in enumerate(entry.tensor_names)
                }
                ledger._entries.append(entry)
        return ledger


def _atomic_write(path: Path, write: Any) -> None:
    """Write via ``write(tmp_path)`` (simulator.atomic: a unique temporary file, then a rename)."""
    atomic_write(path, write)
