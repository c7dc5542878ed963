"""The ray engine: Flower's own `run_simulation` (Ray backend), under a hard deadline.

`run_simulation` blocks, starts a Ray cluster and cannot be interrupted from a thread, so it runs
in a forked child process in its own session. The parent waits up to ``timeout_s``; past that it
kills the child's process group (Ray's raylet/GCS share the driver's fate on Linux) and raises
`EngineTimeout`. Forking also keeps the apps as they are: the ServerApp runs in the child
(Flower runs it in a thread of the process that called `run_simulation`), only the ClientApp has
to be picklable, because Ray ships it to its actors with cloudpickle.

Same seed, same results as inline (tests/test_engine_ray_parity.py: every scheme bitwise): the
nodes get the inline engine's seeded ids and the server lists them in partition order
(`_use_seeded_node_ids`, `_InlineOrderGrid`), so strategies sample and sum the clients in the same
order; each ClientApp seeds its own training.

What comes back from the child through a pickle file: the ledger entries (recorded by
`LedgerGrid` wrapped around the `InMemoryGrid` that run_simulation gives the ServerApp), the
ServerApp's final Context (Flower protobuf), and the node-id -> partition-id map: the seeded one,
confirmed by the note each ClientApp writes out-of-band into a scratch directory on its first
message (the server never sees it on the wire; it is simulation bookkeeping for joining ground
truth later).

On an existing Ray cluster (``address``/``RAY_ADDRESS``, see `ray_backend_config`) the driver and
the ServerApp still run in the child here; only the ClientApps run on the cluster's workers.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.serverapp import Grid, ServerApp

from simulator.engine import outbox
from simulator.engine.inline import PARTITION_ID_KEY, EngineTimeout, seeded_node_ids
from simulator.engine.recording import LedgerGrid
from simulator.errors import MuprivError
from simulator.ledger import WireLedger

RAY_INSTALL_HINT = 'install it with: .venv/bin/pip install -c constraints.txt "flwr[simulation]==1.41.0"'


def ray_available() -> bool:
    """True when Ray (Flower's simulation extra) is importable."""
    return importlib.util.find_spec("ray") is not None


class _ClientShim(ClientApp):
    """Wraps the user's ClientApp inside a Ray actor: run_config, node_config extras, node map."""

    def __init__(
        self,
        inner: ClientApp,
        run_config: Mapping[str, Any],
        node_config: Callable[[int], Mapping[str, Any]] | None,
        map_dir: str,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.run_config = dict(run_config)
        self.node_config_fn = node_config
        self.map_dir = map_dir

    def __call__(self, message: Message, context: Context) -> Message:
        partition = int(context.node_config[PARTITION_ID_KEY])
        if self.node_config_fn is not None:
            context.node_config.update(self.node_config_fn(partition))
        outbox.write_mark(Path(self.map_dir), context.node_id, partition)
        # Flower's simulation (vce_api.worker -> DeprecatedRunInfoStore.update_context) refuses a
        # returned Context whose run_config differs from the one it made (empty here: there is no
        # FAB) and turns the reply into an error. So the app sees our run_config only while it runs.
        initial = context.run_config
        context.run_config = dict(self.run_config)
        try:
            return self.inner(message=message, context=context)
        finally:
            context.run_config = initial


class _InlineOrderGrid(LedgerGrid):
    """A LedgerGrid that lists the nodes in partition order, as the inline engine's Grid does.

    Flower's in-memory link state returns the node ids as a set; FedAvg samples with
    ``random.sample(list(grid.get_node_ids()), k)``, so the same seed picks the same partitions
    in the same order only if the list is in the same order on both engines."""

    def get_node_ids(self) -> Iterable[int]:
        return sorted(self.inner.get_node_ids(), key=self._position)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return sorted(self.inner.get_nodes(), key=lambda node: self._position(node.node_id))

    def _position(self, node_id: int) -> tuple[int, int]:
        return (self.node_to_partition.get(node_id, len(self.node_to_partition)), node_id)


def _use_seeded_node_ids(seed: int, num_clients: int) -> dict[int, int]:
    """Make Flower's simulation register its N nodes with the inline engine's ids for ``seed``.

    Flower draws node ids from ``os.urandom``; servers order and sample nodes by id (FedAvg's
    ``random.sample`` over the node list, ``sorted(node_ids)`` in mupriv's own servers), so with
    random ids the partitions are trained, summed and concatenated in a different order on every
    run, and the results differ from inline's (in the last bits for FedAvg's sum, visibly where a
    server trains on the union of uploads). Flower's ``run_simulation`` registers node i for
    partition i, one after the other, through ``InMemoryLinkState.create_node``; inside that call
    (and only there: run and task ids stay Flower's) the id comes from `seeded_node_ids`. Called
    in the forked child only, so nothing in the caller's process is patched."""
    # pylint: disable=import-outside-toplevel
    from flwr.server.superlink.linkstate import in_memory_linkstate as linkstate

    node_ids = seeded_node_ids(random.Random(f"mupriv-inline-{seed}"), num_clients)
    ids = iter(node_ids)
    draw = linkstate.generate_rand_int_from_bytes
    create_node = linkstate.InMemoryLinkState.create_node
    creating = threading.local()

    def node_id_or_random(num_bytes: int, exclude: set[int] | None = None) -> int:
        if getattr(creating, "node", False):
            return next(ids)
        return draw(num_bytes, exclude)

    def seeded_create_node(self: Any, *args: Any, **kwargs: Any) -> int:
        creating.node = True
        try:
            return create_node(self, *args, **kwargs)
        finally:
            creating.node = False

    linkstate.generate_rand_int_from_bytes = node_id_or_random
    linkstate.InMemoryLinkState.create_node = seeded_create_node
    return {nid: i for i, nid in enumerate(node_ids)}


def _child(  # pylint: disable=too-many-arguments
    server_app: ServerApp,
    client_app: ClientApp,
    num_clients: int,
    backend_config: dict[str, Any],
    run_config: Mapping[str, Any],
    node_config: Callable[[int], Mapping[str, Any]] | None,
    seed: int,
    scheme: str,
    work_dir: str,
    verbose: bool,
) -> None:
    """Body of the forked child: run Flower's simulation and pickle what the parent needs."""
    code = 1
    out: dict[str, Any] = {"entries": [], "context": None, "error": None}
    try:
        os.setsid()
        random.seed(seed)  # strategies sample nodes with the global `random`; this is the child's
        np.random.seed(seed % 2**32)  # and client-level DP draws the server's noise from numpy's
        if "torch" in sys.modules:  # the server thread must not reuse the parent's OpenMP pool
            sys.modules["torch"].set_num_threads(1)
        from flwr.simulation import run_simulation

        node_to_partition = _use_seeded_node_ids(seed, num_clients)
        ledger = WireLedger(scheme)
        holder: dict[str, Context] = {}
        wrapped = ServerApp()

        @wrapped.main()
        def _main(grid: Grid, context: Context) -> None:
            # run_simulation registers the SuperNodes while the ServerApp is already running;
            # a strategy that counts nodes before they are all in samples too few (FedAvg 1.41
            # computes its sample size before waiting for min_available_nodes). Start when all
            # N are connected, as the inline engine does.
            while len(list(grid.get_node_ids())) < num_clients:
                time.sleep(0.02)
            context.run_config = dict(run_config)
            server_app(_InlineOrderGrid(grid, ledger, node_to_partition), context)
            holder["context"] = context

        map_dir = os.path.join(work_dir, outbox.NODES_DIR)
        os.makedirs(map_dir, exist_ok=True)
        run_simulation(
            server_app=wrapped,
            client_app=_ClientShim(client_app, run_config, node_config, map_dir),
            num_supernodes=num_clients,
            backend_name="ray",
            backend_config=backend_config,
            verbose_logging=verbose,
        )
        out["entries"] = ledger.entries
        out["node_map"] = node_to_partition
        if "context" in holder:
            out["context"] = outbox.encode_context(holder["context"])
        code = 0
    except BaseException:  # pylint: disable=broad-exception-caught
        out["error"] = traceback.format_exc()
    finally:
        try:
            outbox.write_result(Path(work_dir), out)
            try:
                import ray

                if ray.is_initialized():
                    ray.shutdown()
            except Exception:  # pylint: disable=broad-exception-caught
                pass
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # never run the parent's atexit/pytest machinery in the fork


def ray_backend_config(num_cpus: int, cpus_per_client: float, verbose: bool = False,
                       address: str | None = None) -> dict[str, Any]:
    """The ``backend_config`` for Flower's Ray backend, which passes ``init_args`` to ``ray.init``.

    Without an address (argument, else ``RAY_ADDRESS``) the run gets a private local cluster of
    ``num_cpus``: ``address="local"`` makes ``ray.init`` start one even when another Ray cluster
    runs on this machine (it would otherwise attach to the latest one it finds, and refuse the
    ``num_cpus``). With an address it attaches to that cluster (``"auto"``, ``"HOST:6379"``, or
    ``"ray://HOST:10001"`` for Ray Client); ``ray.init`` then refuses ``num_cpus``/``num_gpus``,
    so the cluster's own size applies and ``num_cpus`` is ignored. Each ClientApp asks for
    ``cpus_per_client`` either way."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    init_args: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": "INFO" if verbose else "ERROR",
        "log_to_driver": True,
    }
    if address:
        init_args["address"] = address
    else:
        init_args.update(address="local", num_cpus=num_cpus, num_gpus=0)
    return {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0}, "init_args": init_args}


def run_ray(  # pylint: disable=too-many-arguments,too-many-locals
    server_app: ServerApp,
    client_app: ClientApp,
    num_clients: int,
    *,
    ledger: WireLedger,
    timeout_s: float,
    num_cpus: int = 2,
    cpus_per_client: float = 1.0,
    run_config: Mapping[str, Any] | None = None,
    node_config: Callable[[int], Mapping[str, Any]] | None = None,
    seed: int = 0,
    verbose: bool = False,
    address: str | None = None,
) -> tuple[Context | None, dict[int, int]]:
    """Run the pair on Flower's Ray simulation; fill ``ledger``; return (server Context, node map).

    ``address``: an existing Ray cluster to run the ClientApps on (default: ``$RAY_ADDRESS``; unset =
    a private local cluster of ``num_cpus``), see `ray_backend_config`."""
    if not ray_available():
        raise MuprivError(f"engine 'ray' needs Ray, which is not installed: {RAY_INSTALL_HINT}")
    if "fork" not in multiprocessing.get_all_start_methods():
        raise MuprivError("engine 'ray' needs the 'fork' start method (Linux/macOS): use engine='inline'")
    backend_config = ray_backend_config(num_cpus, cpus_per_client, verbose, address)
    with tempfile.TemporaryDirectory(prefix="mupriv-ray-") as work_dir:
        ctx = multiprocessing.get_context("fork")
        proc = ctx.Process(
            target=_child,
            args=(server_app, client_app, num_clients, backend_config, dict(run_config or {}),
                  node_config, seed, ledger.scheme, work_dir, verbose),
            daemon=False,
        )
        proc.start()
        proc.join(timeout_s)
        if proc.is_alive():
            _kill_group(proc.pid)
            proc.join(10)
            raise EngineTimeout(
                f"engine 'ray' did not finish within timeout_s={timeout_s:g}s and was killed: "
                "raise timeout_s, or check backend_config/client resources (a client needing more "
                "CPUs than the cluster has waits forever)"
            )
        if not (Path(work_dir) / outbox.RESULT_FILE).is_file():
            raise RuntimeError(f"engine 'ray': the simulation process died (exit code {proc.exitcode}) without a result")
        out = outbox.read_result(Path(work_dir))
        _kill_group(proc.pid)  # reap anything Ray left in the child's session
        if out["error"]:
            raise RuntimeError("engine 'ray': the simulation failed in its process:\n" + out["error"])
        # the seeded ids are the map; the clients' own marks confirm it where they can reach this
        # dir (actors on other hosts of an attached cluster cannot)
        node_map = {**out.get("node_map", {}), **outbox.read_node_map(Path(work_dir) / outbox.NODES_DIR)}
    ledger.extend(out["entries"])
    ledger.set_partition_ids(node_map)
    return outbox.decode_context(out["context"]), node_map


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # give the kernel a moment to reap
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
