"""The generic Flower app the `deployment` engine packages for ``flwr run``.

On a real federation the ServerApp and the ClientApp run in processes that Flower starts
(``flwr-serverapp`` next to the SuperLink, one ``flwr-clientapp`` per message next to each
SuperNode) and load by import string, so no Python object can be handed over. The FAB therefore
names the two wrappers below, and its run config carries, next to the user's own keys, a few
``mupriv-deploy-*`` keys: an importable factory ``"module:function"`` that turns the user's
run_config into the real ``(ServerApp, ClientApp)`` pair, and where to leave the results.

- `server_app` seeds the global `random` (Flower's strategies sample with it), waits until all
  N nodes are connected, runs the real ServerApp over a `LedgerGrid` and writes the ledger
  entries and its final Context (Flower protobuf) to ``mupriv-deploy-out`` -- the same outbox (`simulator.engine.outbox`)
  the ray engine's child writes.
- `client_app` writes its node id -> partition id out-of-band into ``mupriv-deploy-nodes`` (never on
  the wire; simulation bookkeeping, as on the ray engine) and hands the message to the real
  ClientApp. Both wrappers hide the ``mupriv-deploy-*`` keys, so the real apps see exactly the
  run_config they get on the other engines.
- A SuperNode on another machine cannot write into that directory. So after the run the server
  asks every node that took part but left no note, once, with a ``query.mupriv_partition``
  message sent on the raw Grid: it is not in the ledger (bookkeeping, like the notes) and the
  real ClientApp never sees it.
"""

from __future__ import annotations

import importlib
import random
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from simulator.engine import outbox

KEY_PREFIX = "mupriv-deploy-"
FACTORY_KEY = KEY_PREFIX + "factory"
NODES_KEY = KEY_PREFIX + "num-nodes"
SEED_KEY = KEY_PREFIX + "seed"
SCHEME_KEY = KEY_PREFIX + "scheme"
OUT_KEY = KEY_PREFIX + "out"  # directory the ServerApp writes its outbox (simulator.engine.outbox) into
MAP_KEY = KEY_PREFIX + "nodes"  # directory each ClientApp writes its node-id file into
PARTITION_QUERY = "query.mupriv_partition"  # <action> must be a Python identifier
PARTITION_QUERY_TIMEOUT_S = 300.0
PULL_INTERVAL_S = 0.2  # each pull is an HTTP round trip to the SuperLink: do not spin

AppFactory = Callable[[dict[str, Any]], "tuple[ServerApp, ClientApp]"]


def split_run_config(run_config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the user's run_config, mupriv's own ``mupriv-deploy-*`` keys)."""
    user = {k: v for k, v in run_config.items() if not k.startswith(KEY_PREFIX)}
    ours = {k: v for k, v in run_config.items() if k.startswith(KEY_PREFIX)}
    return user, ours


def load_factory(ref: str) -> AppFactory:
    """Import ``"package.module:function"``; raise ImportError/AttributeError/TypeError if it is not one."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"app_factory must look like 'package.module:function', got {ref!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"app_factory {ref!r} is not callable")
    return obj


_BUILT: dict[tuple, tuple[ServerApp, ClientApp]] = {}


def make_apps(ref: str, user_config: Mapping[str, Any]) -> tuple[ServerApp, ClientApp]:
    """Call the factory; TypeError unless it gives (ServerApp, ClientApp)."""
    apps = load_factory(ref)(dict(user_config))
    if not (isinstance(apps, tuple) and len(apps) == 2
            and isinstance(apps[0], ServerApp) and isinstance(apps[1], ClientApp)):
        raise TypeError(f"app_factory {ref!r} must return (ServerApp, ClientApp), got {type(apps).__name__}")
    return apps


def build_apps(ref: str, user_config: Mapping[str, Any]) -> tuple[ServerApp, ClientApp]:
    """`make_apps`, once per app process and run_config."""
    key = (ref, tuple(sorted(user_config.items())))
    if key not in _BUILT:
        _BUILT[key] = make_apps(ref, user_config)
    return _BUILT[key]


# ------------------------------------------------------------------------------------------ client side
class _DeployClientApp(ClientApp):
    """Loaded by every ``flwr-clientapp`` process: note the partition, then run the real ClientApp."""

    def __call__(self, message: Message, context: Context) -> Message:
        if message.metadata.message_type == PARTITION_QUERY:
            partition = int(context.node_config["partition-id"])
            return Message(RecordDict({"node": ConfigRecord({"partition-id": partition})}), reply_to=message)
        user, ours = split_run_config(context.run_config)
        _mark_partition(ours.get(MAP_KEY), context)
        _, inner = build_apps(str(ours[FACTORY_KEY]), user)
        saved = context.run_config
        context.run_config = user
        try:
            return inner(message=message, context=context)
        finally:
            context.run_config = saved  # the SuperNode keeps this Context for the next message


def _mark_partition(map_dir: Any, context: Context) -> None:
    """Leave ``<map_dir>/<node id>`` = partition id if this machine has that directory (else the server asks)."""
    if not map_dir or "partition-id" not in context.node_config or not Path(str(map_dir)).is_dir():
        return
    write_mark(Path(str(map_dir)), context.node_id, int(context.node_config["partition-id"]))


def write_mark(map_dir: Path, node_id: int, partition: int) -> None:
    try:
        outbox.write_mark(map_dir, node_id, partition)
    except OSError:
        pass  # bookkeeping only: the server asks a node that left no note


client_app = _DeployClientApp()


# ------------------------------------------------------------------------------------------ server side
server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    from simulator.engine.recording import LedgerGrid  # pylint: disable=import-outside-toplevel
    from simulator.ledger import WireLedger  # pylint: disable=import-outside-toplevel

    user, ours = split_run_config(context.run_config)
    # timings are wall-clock stamps: the parent turns them into seconds since it started
    out: dict[str, Any] = {"entries": [], "context": None, "error": None, "timings": {"main_started": time.time()}}
    try:
        random.seed(int(ours.get(SEED_KEY, 0)))
        np.random.seed(int(ours.get(SEED_KEY, 0)) % 2**32)  # client-level DP's server noise
        server, _ = build_apps(str(ours[FACTORY_KEY]), user)
        _wait_for_nodes(grid, int(ours[NODES_KEY]))
        out["timings"]["nodes_connected"] = time.time()
        ledger = WireLedger(str(ours.get(SCHEME_KEY, "")))
        context.run_config = user
        try:
            server(LedgerGrid(grid, ledger, pull_interval=PULL_INTERVAL_S), context)
        finally:
            out["entries"] = ledger.entries
        try:
            _ask_missing_partitions(grid, {e.node_id for e in ledger.entries}, ours.get(MAP_KEY))
        except Exception:  # pylint: disable=broad-exception-caught
            traceback.print_exc()  # bookkeeping only: the run itself succeeded
        out["context"] = outbox.encode_context(context)
        out["timings"]["server_app_done"] = time.time()
    except BaseException:  # pylint: disable=broad-exception-caught
        out["error"] = traceback.format_exc()
        raise
    finally:
        outbox.write_result(Path(str(ours[OUT_KEY])), out)


def _wait_for_nodes(grid: Grid, num_nodes: int) -> None:
    """SuperNodes register on their own schedule; a strategy that counts nodes early samples too few."""
    while len(list(grid.get_node_ids())) < num_nodes:
        time.sleep(PULL_INTERVAL_S)


def _ask_missing_partitions(grid: Grid, node_ids: set[int], map_dir: Any) -> None:
    """Nodes that took part but left no note (another machine): ask them, off the ledger, and note it here."""
    if not map_dir:
        return
    directory = Path(str(map_dir))
    directory.mkdir(parents=True, exist_ok=True)
    online = set(grid.get_node_ids())
    missing = sorted(n for n in node_ids if n in online and not (directory / str(n)).exists())
    if not missing:
        return
    queries = [Message(RecordDict(), dst_node_id=n, message_type=PARTITION_QUERY) for n in missing]
    for reply in grid.send_and_receive(queries, timeout=PARTITION_QUERY_TIMEOUT_S):
        if reply.has_content() and "node" in reply.content:
            write_mark(directory, reply.metadata.src_node_id, int(reply.content["node"]["partition-id"]))
