"""A Grid wrapper that records every message into the WireLedger where the server sees it.

`LedgerGrid` wraps whatever Grid the runtime hands the ServerApp (mupriv's `InlineGrid`, or the
`InMemoryGrid` that `flwr.simulation.run_simulation` creates for the Ray engine) and records:

- each instruction message right after the inner grid accepted it in ``push_messages`` (the
  message ID is assigned by then, and the server has not had a chance to mutate it yet);
- each reply as ``pull_messages`` hands it to the server.

Strategies call ``send_and_receive``; it is re-implemented here on top of the recording
``push_messages``/``pull_messages`` (same semantics as Flower's: poll until every reply is in or
``timeout`` passes), so nothing can bypass the ledger.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run

from simulator.ledger import DOWN, UP, WireLedger


class LedgerGrid(Grid):
    """Delegate to ``inner`` and record every pushed message and every pulled reply."""

    def __init__(
        self,
        inner: Grid,
        ledger: WireLedger,
        node_to_partition: Mapping[int, int] | None = None,
        pull_interval: float = 0.01,
    ) -> None:
        self.inner = inner
        self.ledger = ledger
        self.node_to_partition = dict(node_to_partition or {})
        self.pull_interval = pull_interval
        self._lock = threading.Lock()
        self._exchange = 0
        self._sent: dict[str, tuple[int, int | None]] = {}  # message id -> (exchange, round)

    # -- delegated -------------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(  # pylint: disable=too-many-arguments,R0917
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.inner.get_nodes()

    # -- recorded ----------------------------------------------------------------------------
    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        with self._lock:
            exchange = self._exchange
            self._exchange += 1
        ids = [str(i) for i in self.inner.push_messages(messages) if i]
        accepted = set(ids)
        for msg in messages:
            mid = msg.metadata.message_id
            if mid not in accepted:
                continue
            dst = msg.metadata.dst_node_id
            entry = self.ledger.record(
                msg,
                direction=DOWN,
                node_id=dst,
                exchange=exchange,
                partition_id=self.node_to_partition.get(dst),
            )
            with self._lock:
                self._sent[mid] = (exchange, entry.round)
        return ids

    def observe(self, round: int | None, arrays: Mapping, metrics: Mapping | None = None) -> None:  # noqa: A002
        """Record something the server computes itself (e.g. the unmasked SecAgg+ aggregate)."""
        with self._lock:
            exchange = self._exchange
            self._exchange += 1
        self.ledger.observe(round=round, exchange=exchange, arrays=arrays, metrics=metrics)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        for reply in replies:
            with self._lock:
                exchange, rnd = self._sent.pop(reply.metadata.reply_to_message_id, (-1, None))
            src = reply.metadata.src_node_id
            self.ledger.record(
                reply,
                direction=UP,
                node_id=src,
                exchange=exchange,
                partition_id=self.node_to_partition.get(src),
                round=rnd,
            )
        return replies

    def send_and_receive(
        self,
        messages: Iterable[Message],
        *,
        timeout: float | None = None,
    ) -> Iterable[Message]:
        pushed = list(self.push_messages(messages))
        pending = set(pushed)
        end_time = time.time() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        while pending and (timeout is None or time.time() < end_time):
            got = list(self.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if pending and not got:
                time.sleep(self.pull_interval)
        # Hand the replies over in push order, not arrival order: strategies sum them in the order
        # given, and float sums depend on it, so on Ray/deployment (where arrival order is a race)
        # the aggregate would otherwise change from run to run and differ from inline's in the last bits.
        position = {mid: i for i, mid in enumerate(pushed)}
        return sorted(replies, key=lambda m: position.get(m.metadata.reply_to_message_id, len(position)))
