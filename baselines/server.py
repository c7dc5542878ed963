"""Server-side helpers shared by the schemes: send one message to every node and collect the replies."""
from __future__ import annotations

import time
from typing import Callable

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

DEFAULT_ROUND_TIMEOUT_S = 3600.0


def wait_for_nodes(grid: Grid, num_nodes: int, timeout_s: float = 120.0) -> list[int]:
    """All node ids once `num_nodes` are connected (engines register nodes as they start)."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= num_nodes or time.monotonic() > deadline:
            return nodes
        time.sleep(0.05)


def broadcast(
    grid: Grid,
    nodes: list[int],
    message_type: str,
    content: Callable[[int], RecordDict],
    group_id: str,
    timeout_s: float = DEFAULT_ROUND_TIMEOUT_S,
) -> list[Message]:
    """Send `content(node_id)` to every node, wait for every reply (errors included)."""
    messages = [Message(content(node), dst_node_id=node, message_type=message_type, group_id=group_id) for node in nodes]
    return list(grid.send_and_receive(messages, timeout=timeout_s))


def model_content(arrays: ArrayRecord | None, config: dict) -> RecordDict:
    rd = RecordDict({"config": ConfigRecord(config)})
    if arrays is not None:
        rd["arrays"] = arrays
    return rd


def ack(msg: Message) -> Message:
    """A reply that carries nothing: no arrays, no metrics (the device keeps everything)."""
    return Message(RecordDict(), reply_to=msg)
