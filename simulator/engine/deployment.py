"""The deployment engine: a real Flower federation on loopback, driven by ``flwr run``.

What `run_deployment` does, in order (every process in its own session, logs in a temp dir):

1. starts ``flower-superlink --insecure`` on a free loopback port (Flower 1.41 serves its Fleet,
   Control and Runtime APIs on that one HTTP port) and polls ``/health`` until it answers;
2. starts N ``flower-supernode --insecure`` processes, each with its own ``--node-config`` file
   (``partition-id``, ``num-partitions`` and whatever ``node_config(partition)`` adds) and its
   own Runtime API port;
3. writes a small Flower app directory (a ``pyproject.toml`` whose components are the generic
   wrappers in `simulator.engine.deploy_app`, whose ``[tool.flwr.app.config]`` holds the
   run_config plus mupriv's ``mupriv-deploy-*`` keys) and submits it with
   ``flwr run <app dir> mupriv`` (the SuperLink connection lives in a temp ``FLWR_HOME``);
4. waits for the ServerApp's outbox (ledger entries, final Context) and the clients' node map,
   exactly like the ray engine reads its child's;
5. kills everything it started -- on success, error, timeout and KeyboardInterrupt.

"Everything": Flower's SuperLink starts its SuperExec in a new session, which starts
``flwr-serverapp``; each SuperNode's SuperExec starts one ``flwr-clientapp`` per message. So
besides killing the process groups of its direct children, the engine marks every child's
environment with a per-run token (inherited by all descendants) and kills every process that
carries it; on Linux the direct children also get ``PR_SET_PDEATHSIG`` so they die with us.

Setting ``MUPRIV_SUPERLINK=host:port`` (or ``superlink=``) targets a SuperLink someone else
started (SuperNodes on other machines): then only steps 3-4 run, on the SuperLink's host.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import tomli_w
from flwr.app import Context

from simulator.engine import deploy_app, outbox
from simulator.engine.inline import NUM_PARTITIONS_KEY, PARTITION_ID_KEY, EngineTimeout
from simulator.errors import MuprivError
from simulator.ledger import WireLedger

log = logging.getLogger(__name__)

TOKEN_ENV = "MUPRIV_DEPLOYMENT_TOKEN"
SUPERLINK_ENV = "MUPRIV_SUPERLINK"
KEEP_ENV = "MUPRIV_DEPLOYMENT_KEEP"
CONNECTION = "mupriv"  # the SuperLink connection name in the temp FLWR_HOME
HOST = "127.0.0.1"
POLL_S = 0.2
_FLOWER_HINT = 'install Flower into this environment: pip install -c constraints.txt "flwr==1.41.0"'


# ------------------------------------------------------------------------------------------ checks
def check_factory(ref: str | None, run_config: Mapping[str, Any]) -> list[str]:
    """Import and call the app factory here first (a clear error beats a dead ServerApp); return its import roots."""
    if not ref:
        raise MuprivError("engine 'deployment' needs app_factory='package.module:function' "
                          "(a function run_config -> (ServerApp, ClientApp)): apps cannot be passed to other processes")
    try:
        deploy_app.load_factory(ref)
    except (ImportError, AttributeError, ValueError, TypeError) as err:
        raise MuprivError(f"app_factory {ref!r} cannot be imported ({err}): "
                          "give an importable 'package.module:function'") from None
    try:
        deploy_app.make_apps(ref, run_config)
    except TypeError as err:
        raise MuprivError(f"{err} (the app processes call app_factory(run_config))") from None
    roots = (_import_root(ref.partition(":")[0]), _import_root("simulator"))
    return list(dict.fromkeys(r for r in roots if r))


def _import_root(module_name: str) -> str | None:
    """The sys.path entry a module was imported from, so the app processes can import it too."""
    module = importlib.import_module(module_name)
    file = getattr(module, "__file__", None)
    if not file:
        return None
    depth = len(module_name.split(".")) - (0 if Path(file).name == "__init__.py" else 1)
    return str(Path(file).resolve().parents[depth])


def check_flat(values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Flower's run_config / node_config hold only bool, int, float or str values."""
    for key, value in values.items():
        if not isinstance(key, str) or not key:
            raise MuprivError(f"{what} keys must be non-empty strings, got {key!r}")
        if key.startswith(deploy_app.KEY_PREFIX):
            raise MuprivError(f"{what} key {key!r} is reserved for the deployment engine: rename it")
        if not isinstance(value, (bool, int, float, str)):
            raise MuprivError(f"{what}[{key!r}] is a {type(value).__name__}: engine 'deployment' passes only "
                              "bool, int, float or str values (put larger things in a file and pass its path)")
    return dict(values)


def _flower_bin() -> Path:
    """The directory holding flower-superlink & co. (SuperLink and SuperNode start flower-superexec by name)."""
    here = Path(sys.executable).parent
    if (here / "flower-superlink").exists():
        return here
    found = shutil.which("flower-superlink")
    if found is None:
        raise MuprivError(f"engine 'deployment' needs the flower-superlink command, which is not on PATH: {_FLOWER_HINT}")
    return Path(found).parent


# ------------------------------------------------------------------------------------------ processes
def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()


def _die_with_parent() -> None:  # runs in the forked child before exec
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: our death (even SIGKILL) takes the child along


def token_pids(token: str) -> list[int]:
    """Live processes (not zombies) whose environment carries ``TOKEN_ENV=token``."""
    needle = b"\0" + f"{TOKEN_ENV}={token}".encode() + b"\0"
    pids = []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                if needle in b"\0" + fh.read() + b"\0":
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class _Processes:
    """The processes of one federation: start them, watch them, and kill them all on the way out."""

    def __init__(self, work: Path, env: dict[str, str], verbose: bool) -> None:
        self.work = work
        self.env = env
        self.token = env[TOKEN_ENV]
        self.verbose = verbose
        self.procs: dict[str, subprocess.Popen] = {}
        (work / "logs").mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> "_Processes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_path(self, name: str) -> Path:
        return self.work / "logs" / f"{name}.log"

    def start(self, name: str, cmd: list[str], home: Path) -> subprocess.Popen:
        home.mkdir(parents=True, exist_ok=True)
        env = dict(self.env, FLWR_HOME=str(home))
        out = None if self.verbose else open(self.log_path(name), "wb")  # pylint: disable=consider-using-with
        try:
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,  # pylint: disable=W1509
                                    stderr=subprocess.STDOUT if out else None, start_new_session=True,
                                    preexec_fn=_die_with_parent if _PRCTL is not None else None)
        finally:
            if out is not None:
                out.close()  # the child holds its own descriptor
        self.procs[name] = proc
        return proc

    def dead(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is not None]

    def tail(self, name: str, lines: int = 25) -> str:
        path = self.log_path(name)
        if not path.is_file():
            return f"(no log for {name}{'; verbose=True prints to the terminal' if self.verbose else ''})"
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- last lines of {name}'s log:\n" + "\n".join(text)

    def stop(self) -> None:
        """SIGKILL our process groups, then anything that carries our token, until nothing is left."""
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = token_pids(self.token)
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.05)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("process %s did not exit after SIGKILL", proc.pid)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy


def _healthy(address: str) -> bool:
    try:
        with _DIRECT.open(f"http://{address}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


# ------------------------------------------------------------------------------------------ federation
def _start_superlink(procs: _Processes, bin_dir: Path, clock: "_Clock") -> str:
    """Start the SuperLink on a free port and wait for /health; retry if the port got taken meanwhile."""
    for attempt in range(3):
        address = f"{HOST}:{_free_port()}"
        name = "superlink" if attempt == 0 else f"superlink-{attempt}"
        proc = procs.start(name, [str(bin_dir / "flower-superlink"), "--insecure", "--host", HOST,
                                  "--port", address.rsplit(":", 1)[1], "--disable-runtime-dependency-installation"],
                           procs.work / "home" / "superlink")
        while proc.poll() is None:
            if _healthy(address):
                return address
            clock.check("starting the SuperLink")
            time.sleep(POLL_S)
        log.warning("flower-superlink exited (code %s) before it was healthy; retrying", proc.returncode)
    raise RuntimeError("engine 'deployment': flower-superlink would not start\n" + procs.tail(name))


def _start_supernodes(procs: _Processes, bin_dir: Path, address: str, num_clients: int,
                      node_config: Callable[[int], Mapping[str, Any]] | None) -> None:
    for pid in range(num_clients):
        cfg: dict[str, Any] = {PARTITION_ID_KEY: pid, NUM_PARTITIONS_KEY: num_clients}
        if node_config is not None:
            cfg.update(check_flat(node_config(pid), "node_config"))
        cfg_file = procs.work / f"node-{pid}.toml"  # a file, so paths with spaces or quotes survive
        cfg_file.write_text(tomli_w.dumps(cfg))
        procs.start(f"supernode-{pid}", [str(bin_dir / "flower-supernode"), "--insecure", "--superlink", address,
                                         "--host", HOST, "--port", str(_free_port()), "--node-config", str(cfg_file)],
                    procs.work / "home" / f"supernode-{pid}")


def write_app(app_dir: Path, run_config: Mapping[str, Any]) -> Path:
    """A minimal Flower app directory: the generic wrappers + the whole run_config in the FAB."""
    app_dir.mkdir(parents=True, exist_ok=True)
    project = {
        "project": {"name": "mupriv-deployment", "version": "1.0.0", "license": "Apache-2.0",
                    "description": "mupriv's generic deployment wrapper (generated)"},
        "tool": {"flwr": {"app": {
            "publisher": "mupriv",
            "components": {"serverapp": "simulator.engine.deploy_app:server_app",
                           "clientapp": "simulator.engine.deploy_app:client_app"},
            "config": dict(run_config),
        }}},
    }
    (app_dir / "pyproject.toml").write_text(tomli_w.dumps(project))
    return app_dir


def _write_connection(home: Path, address: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    conn = {"superlink": {"default": CONNECTION, CONNECTION: {"address": address, "insecure": True}}}
    (home / "config.toml").write_text(tomli_w.dumps(conn))


def _flwr(procs: _Processes, bin_dir: Path, args: list[str], clock: "_Clock", stage: str) -> subprocess.CompletedProcess:
    home = procs.work / "home" / "cli"
    env = dict(procs.env, FLWR_HOME=str(home))
    try:
        return subprocess.run([str(bin_dir / "flwr"), *args], env=env, capture_output=True, text=True,
                              timeout=max(1.0, clock.remaining()), check=False)
    except subprocess.TimeoutExpired:
        clock.check(stage)
        raise


def _submit(procs: _Processes, bin_dir: Path, app_dir: Path, clock: "_Clock") -> int:
    done = _flwr(procs, bin_dir, ["run", str(app_dir), CONNECTION, "--format", "json"], clock,
                 "submitting the run with flwr run")
    try:
        reply = json.loads(done.stdout[done.stdout.index("{"):])
        return int(reply["run-id"])
    except (ValueError, KeyError, TypeError):
        raise RuntimeError(f"engine 'deployment': flwr run failed (exit code {done.returncode}):\n"
                           f"{done.stdout}\n{done.stderr}") from None


def _wait_result(procs: _Processes, out_dir: Path, clock: "_Clock", managed: bool) -> dict:
    """Poll for the ServerApp's outbox; fail early if a process we started, or the ServerApp, died."""
    result = out_dir / outbox.RESULT_FILE
    server_seen = False
    next_scan = 0.0
    while not result.is_file():
        clock.check("waiting for the ServerApp")
        if managed and (dead := procs.dead()):
            raise RuntimeError(f"engine 'deployment': {dead[0]} exited during the run\n" + procs.tail(dead[0]))
        if managed and time.monotonic() >= next_scan:  # the ServerApp is a grandchild: watch it by token
            alive = any("flwr-serverapp" in _cmdline(p) for p in token_pids(procs.token))
            if server_seen and not alive and not result.is_file():
                time.sleep(1.0)  # let a last write land
                if not result.is_file():
                    raise RuntimeError("engine 'deployment': the ServerApp process ended without a result\n"
                                       + procs.tail("superlink", 40))
            server_seen = server_seen or alive
            next_scan = time.monotonic() + 1.0
        time.sleep(POLL_S)
    return outbox.read_result(out_dir)


def _child_env(token: str, bin_dir: Path, import_roots: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        TOKEN_ENV: token,
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # the apps run in this environment, as is
        "FLWR_DISABLE_UPDATE_CHECK": "1",  # no network calls from the children
        "PATH": os.pathsep.join([str(bin_dir), env.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join([*import_roots, *filter(None, [env.get("PYTHONPATH")])]),
    })
    for key in ("no_proxy", "NO_PROXY"):  # Flower's HTTP clients must reach the SuperLink directly
        env[key] = ",".join(filter(None, [env.get(key), HOST, "localhost"]))
    env.setdefault("OMP_NUM_THREADS", "1")  # N ClientApp processes side by side: one thread each
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.25")  # default 1 s: a wait added to every message
    return env


def run_deployment(  # pylint: disable=too-many-arguments
    app_factory: str | None,
    num_clients: int,
    *,
    ledger: WireLedger,
    timeout_s: float,
    run_config: Mapping[str, Any] | None = None,
    node_config: Callable[[int], Mapping[str, Any]] | None = None,
    seed: int = 0,
    verbose: bool = False,
    superlink: str | None = None,
) -> tuple[Context | None, dict[int, int]]:
    """Run the factory's apps on a real Flower federation; fill ``ledger``; return (server Context, node map)."""
    user_config = check_flat(run_config or {}, "run_config")
    roots = check_factory(app_factory, user_config)
    config = {
        **user_config,
        deploy_app.FACTORY_KEY: str(app_factory),
        deploy_app.NODES_KEY: int(num_clients),
        deploy_app.SEED_KEY: int(seed),
        deploy_app.SCHEME_KEY: ledger.scheme,
    }
    superlink = superlink or os.environ.get(SUPERLINK_ENV) or None
    bin_dir = _flower_bin()
    clock = _Clock(timeout_s)
    with _work_dir() as work:
        env = _child_env(f"{os.getpid()}-{uuid.uuid4().hex}", bin_dir, roots)
        with _Processes(work, env, verbose) as procs:
            if superlink is None:
                address = _start_superlink(procs, bin_dir, clock)
                clock.mark("superlink_up")
                _start_supernodes(procs, bin_dir, address, num_clients, node_config)
            else:
                address = superlink
                if node_config is not None:
                    log.info("engine 'deployment' on %s: node_config is up to each SuperNode's --node-config", address)
            out = _run_app(procs, bin_dir, address, config, clock, managed=superlink is None)
        node_map = outbox.read_node_map(work / outbox.NODES_DIR)
    log.info("engine 'deployment' timings (s since start): %s", clock.summary(out.get("timings", {})))
    if out["error"]:
        raise RuntimeError("engine 'deployment': the ServerApp failed in its process:\n" + out["error"])
    ledger.extend(out["entries"])
    ledger.set_partition_ids(node_map)
    return outbox.decode_context(out["context"]), node_map


def _run_app(procs: _Processes, bin_dir: Path, address: str, config: dict[str, Any], clock: "_Clock",
             managed: bool) -> dict[str, Any]:
    """Write the app, ``flwr run`` it against ``address`` and wait for the ServerApp's outbox."""
    work = procs.work
    (work / outbox.NODES_DIR).mkdir(exist_ok=True)  # clients on this machine leave their partition notes here
    _write_connection(work / "home" / "cli", address)
    app_dir = write_app(work / "app", {**config, deploy_app.OUT_KEY: str(work / "out"),
                                       deploy_app.MAP_KEY: str(work / outbox.NODES_DIR)})
    run_id = _submit(procs, bin_dir, app_dir, clock)
    clock.mark("submitted")
    try:
        out = _wait_result(procs, work / "out", clock, managed)
    except EngineTimeout:
        if not managed:  # not ours to kill: ask the SuperLink to stop the run
            _flwr(procs, bin_dir, ["stop", str(run_id), CONNECTION], _Clock(30), "flwr stop")
        raise
    clock.mark("result")
    return out


class _Clock:
    """The run's deadline, and when each stage finished (for the log and the docs' start-up numbers)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = float(timeout_s)
        self.start, self.start_wall = time.monotonic(), time.time()
        self.deadline = self.start + self.timeout_s
        self.marks: dict[str, float] = {}

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, stage: str) -> None:
        if self.remaining() <= 0:
            raise EngineTimeout(f"engine 'deployment' did not finish within timeout_s={self.timeout_s:g}s ({stage}); "
                                "everything it started was killed: raise timeout_s (start-up alone takes seconds)")

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic() - self.start

    def summary(self, wall_stamps: Mapping[str, float]) -> str:
        stages = {**self.marks, **{k: v - self.start_wall for k, v in wall_stamps.items()}}
        return ", ".join(f"{k}={v:.1f}" for k, v in sorted(stages.items(), key=lambda kv: kv[1]))


@contextlib.contextmanager
def _work_dir() -> Iterator[Path]:
    """A temp dir for FLWR_HOMEs, logs, the app and the outbox; ``MUPRIV_DEPLOYMENT_KEEP=1`` keeps it."""
    if os.environ.get(KEEP_ENV) == "1":
        path = Path(tempfile.mkdtemp(prefix="mupriv-deploy-"))
        log.warning("engine 'deployment': keeping %s (logs/, app/, home/)", path)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mupriv-deploy-", ignore_cleanup_errors=True) as tmp:
        yield Path(tmp)
