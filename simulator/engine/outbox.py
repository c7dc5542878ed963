"""What a federation run in another process leaves for the engine that started it: one owner for its files.

The ray engine's forked child and the deployment engine's ServerApp cannot hand Python objects back, so both
write ``result.pkl`` (the ledger entries, the server's final Context as Flower protobuf, an error, timings) and
every ClientApp notes its node id -> partition id as a file ``<nodes>/<node id>`` (simulation bookkeeping,
never on the wire).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from flwr.app import Context

from simulator.atomic import atomic_write

RESULT_FILE = "result.pkl"
NODES_DIR = "nodes"


def write_result(directory: Path, out: dict[str, Any]) -> None:
    atomic_write(Path(directory) / RESULT_FILE, pickle.dumps(out))


def read_result(directory: Path) -> dict[str, Any]:
    with open(Path(directory) / RESULT_FILE, "rb") as fh:
        return pickle.load(fh)


def write_mark(map_dir: Path, node_id: int, partition: int) -> None:
    """Note the node's partition once (the first message of a node writes it)."""
    mark = Path(map_dir) / str(node_id)
    if not mark.exists():
        atomic_write(mark, str(partition))


def read_node_map(directory: Path) -> dict[int, int]:
    """node id -> partition id from the notes (empty when no client left one)."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    return {int(p.name): int(p.read_text()) for p in directory.iterdir() if p.name.isdigit()}


def encode_context(context: Context) -> bytes:
    # Flower's serde is imported on use: every flwr-clientapp process loads deploy_app, which imports this module
    from flwr.common.serde import context_to_proto  # pylint: disable=import-outside-toplevel

    return context_to_proto(context).SerializeToString()


def decode_context(blob: bytes | None) -> Context | None:
    if blob is None:
        return None
    from flwr.common.serde import context_from_proto  # pylint: disable=import-outside-toplevel
    from flwr.proto.message_pb2 import Context as ProtoContext  # pylint: disable=E0611,import-outside-toplevel

    return context_from_proto(ProtoContext.FromString(blob))
