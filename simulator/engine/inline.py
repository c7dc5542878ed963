"""The inline engine: a Flower Grid that runs the ClientApp in this process, in order.

`InlineGrid` implements `flwr.serverapp.grid.Grid` (Flower 1.41). What it keeps from Flower's
simulation runtime:

- every node has its own persistent `Context` (``node_config`` with ``partition-id`` and
  ``num-partitions``, a ``state`` RecordDict that survives across rounds); as with the Ray
  backend the ClientApp works on a copy and the copy is kept only if the app returns normally;
- nothing is shared between server and client: a message crosses by Flower's protobuf
  serialisation (``message_to_proto`` -> ``message_from_proto``), both ways;
- a ClientApp exception becomes an error reply (``ErrorCode.CLIENT_APP_RAISED_EXCEPTION``, the
  same reason format as the simulation runtime), so the strategy's failure rules apply.

What it does differently: messages are executed lazily in push order when the server pulls, one
at a time, in the calling thread (deterministic); node and message ids come from a seeded RNG;
TTLs are not enforced (nothing waits). With ``batch_clients`` the messages of one pull (a round's
train messages, each to another node) still run one at a time and in order, but their local
training runs as one batched computation (`simulator.engine.batching`).
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp.grid import Grid
from flwr.supercore.run import Run

from simulator.engine.batching import CallOutcome, run_together

log = logging.getLogger(__name__)

PARTITION_ID_KEY = "partition-id"
NUM_PARTITIONS_KEY = "num-partitions"


class EngineTimeout(RuntimeError):
    """The federation did not finish within its time limit."""


def wire_copy(message: Message) -> Message:
    """Copy a message the way it would cross the wire: Flower protobuf out and back in."""
    return message_from_proto(message_to_proto(message))


def make_node_config(
    partition_id: int, num_partitions: int, extra: Callable[[int], Mapping[str, Any]] | None
) -> dict[str, Any]:
    """The node_config Flower's simulation gives a node, plus ``extra(partition_id)``."""
    cfg: dict[str, Any] = {PARTITION_ID_KEY: partition_id, NUM_PARTITIONS_KEY: num_partitions}
    if extra is not None:
        cfg.update(extra(partition_id))
    return cfg


def seeded_node_ids(rng: random.Random, num_nodes: int) -> list[int]:
    """Unique 64-bit node ids, like Flower's, drawn from ``rng``; node i is partition i.

    The ray engine gives its nodes the same ids (``random.Random(f"mupriv-inline-{seed}")``), so
    servers that order or sample nodes by id treat the partitions in the same order on both."""
    node_ids: list[int] = []
    while len(node_ids) < num_nodes:
        nid = rng.getrandbits(64)
        if nid > 1 and nid not in node_ids:  # 0 is no node, 1 is Flower's SUPERLINK_NODE_ID
            node_ids.append(nid)
    return node_ids


class InlineGrid(Grid):
    """Deliver messages to ``client_app`` in-process, one node Context per simulated client."""

    def __init__(  # pylint: disable=too-many-arguments
        self,
        client_app: ClientApp,
        num_nodes: int,
        *,
        run_id: int,
        seed: int = 0,
        run_config: Mapping[str, Any] | None = None,
        node_config: Callable[[int], Mapping[str, Any]] | None = None,
        deadline: float | None = None,
        batch_clients: bool = False,
    ) -> None:
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        self._app = client_app
        self._rng = random.Random(f"mupriv-inline-{seed}")
        node_ids = seeded_node_ids(self._rng, num_nodes)
        self._node_ids = node_ids
        self.node_to_partition = {nid: i for i, nid in enumerate(node_ids)}
        self._contexts = {
            nid: Context(
                run_id=run_id,
                node_id=nid,
                node_config=make_node_config(i, num_nodes, node_config),
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for i, nid in enumerate(node_ids)
        }
        self._run: Run | None = None
        self._pending: dict[str, Message] = {}  # insertion order = push order
        self._replies: dict[str, Message] = {}  # instruction id -> reply
        self._lock = threading.RLock()  # legacy strategies call from a thread pool
        self.deadline = deadline
        self.batch_clients = batch_clients  # the messages of one pull train together (simulator.engine.batching)

    # -- Grid API ------------------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        if not isinstance(run, Run):
            raise TypeError(f"`run` must be an instance of Run, got {type(run).__name__}")
        self._run = run

    @property
    def run(self) -> Run:
        if self._run is None:
            raise RuntimeError("InlineGrid.set_run() was not called")
        return Run(**vars(self._run))

    def create_message(  # pylint: disable=too-many-arguments,R0917
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids: list[str] = []
        with self._lock:
            for msg in messages:
                md = msg.metadata
                if md.message_id or md.reply_to_message_id or md.ttl <= 0 or md.delivered_at:
                    raise ValueError(f"Invalid message: {msg}")
                if md.dst_node_id not in self._contexts:
                    log.warning("dropping a message to unknown node %s", md.dst_node_id)
                    continue
                mid = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
                md.__dict__["_message_id"] = mid
                self._pending[mid] = wire_copy(msg)
                ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        wanted = set(message_ids)
        out: list[Message] = []
        with self._lock:
            due = [m for m in self._pending if m in wanted]
            nodes = [self._pending[m].metadata.dst_node_id for m in due]
            if self.batch_clients and len(due) > 1 and len(set(nodes)) == len(nodes):
                self._check_deadline()
                messages = [self._pending.pop(mid) for mid in due]
                self._replies.update(zip(due, self._execute_together(messages)))
            for mid in [m for m in self._pending if m in wanted]:
                self._check_deadline()
                self._replies[mid] = self._execute(self._pending.pop(mid))
            for mid in [m for m in self._replies if m in wanted]:
                out.append(self._replies.pop(mid))
        return out

    def send_and_receive(
        self,
        messages: Iterable[Message],
        *,
        timeout: float | None = None,
    ) -> Iterable[Message]:
        # Execution is synchronous: one pull returns every reply. ``timeout`` cannot cut a
        # running ClientApp short; the run's own deadline is checked between messages.
        return self.pull_messages(self.push_messages(messages))

    # -- execution -----------------------------------------------------------------------------
    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise EngineTimeout("inline engine: the federation ran past its timeout_s")

    def _execute(self, msg: Message) -> Message:
        context = copy.deepcopy(self._contexts[msg.metadata.dst_node_id])
        try:
            outcome = CallOutcome(value=self._app(message=msg, context=context))
        except Exception as ex:  # pylint: disable=broad-exception-caught
            outcome = CallOutcome(error=ex)
        return self._reply(msg, context, outcome)

    def _execute_together(self, messages: list[Message]) -> list[Message]:
        """`_execute` for each message, their local training batched (`simulator.engine.batching`)."""
        contexts = [copy.deepcopy(self._contexts[m.metadata.dst_node_id]) for m in messages]
        calls = [lambda m=m, c=c: self._app(message=m, context=c) for m, c in zip(messages, contexts)]
        outcomes = run_together(calls)
        return [self._reply(m, c, o) for m, c, o in zip(messages, contexts, outcomes)]

    def _reply(self, msg: Message, context: Context, outcome: CallOutcome) -> Message:
        """The wire copy of the app's reply, or of an error reply; the node keeps `context` only on success."""
        node_id = msg.metadata.dst_node_id
        reply, error = outcome.value, outcome.error
        if error is None and not isinstance(reply, Message):
            error = TypeError(f"ClientApp returned {type(reply).__name__}, expected a Message")
        elif error is None and reply.metadata.reply_to_message_id != msg.metadata.message_id:
            error = ValueError("ClientApp's reply does not reply to the message it was given")
        if error is not None:
            if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit: not a client failure
                raise error
            partition = context.node_config.get(PARTITION_ID_KEY)
            log.warning(
                "ClientApp of node %s (partition %s) raised on %r:\n%s",
                node_id,
                partition,
                msg.metadata.message_type,
                "".join(traceback.format_exception(error)),
            )
            reason = str(type(error)) + ":<'" + str(error) + "'>"  # as Flower's simulation reports it
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)
        else:
            self._contexts[node_id] = context
        reply.metadata.__dict__["_message_id"] = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        return wire_copy(reply)

    def node_context(self, node_id: int) -> Context:
        """A copy of a node's persistent Context (for tests and inspection)."""
        return copy.deepcopy(self._contexts[node_id])
