"""Run one scheme over a study and measure every client: accuracy, forgetting, bytes, device cost, epsilon.

The scheme runs as Flower apps on the chosen engine and every message lands in the wire ledger. The
evaluation happens afterwards and off the wire: each device's final personal model (left as a
simulation-only probe) is scored on the client's personal test set and on the server's source test
set, the same way for every scheme; the round probes give the same scores after every round
(`simulator.curves`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from baselines.deploy import SCHEME_APPS
from baselines.registry import Scheme, get_scheme
from baselines.setup import ROUNDS_DIR, SchemeSetup, probe_model, read_probe, read_round_probes
from simulator import layout
from simulator.atomic import atomic_write
from simulator.client_scores import device_scores, prefixed
from simulator.config import parse_fail
from simulator.errors import MuprivError
from simulator.curves import round_curves
from simulator.device_cost import device_cost
from simulator.engine.api import FederationResult, run_federation
from simulator.ledger import WireLedger
from simulator.scheme_record import DataFormat, DPParams, SchemeRecord, Threat
from simulator.study import Study
from simulator.wire_counts import wire_counts

# Hyperparameters a device trains with; a curious server knows them (they are in every train config).
_FINETUNE_KEYS = ("epochs", "lr", "kernel_lr", "weight_decay", "batch_size", "pos_weight")


@dataclass
class SchemeRun:
    scheme: Scheme
    params: Any
    setup: SchemeSetup
    federation: FederationResult
    table: pd.DataFrame  # one row per client
    wall_s: float
    curves: pd.DataFrame | None = None  # per round and client (simulator.curves); None when not asked for

    @property
    def ledger(self) -> WireLedger:
        return self.federation.ledger

    def save(self, directory: Path, study: Study, truth_from: Path | None = None) -> Path:
        """scheme.json, ledger/, clients.csv and truth/ (each client's training data, for scoring only).

        ``truth_from``: a folder already holding the truth files (see `save_truth`); they are hard-linked,
        so ten schemes of one study keep one copy of the clients' records on disk."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.ledger.save(directory / layout.LEDGER_DIR)
        if truth_from is None:
            save_truth(study, directory / layout.TRUTH_DIR)
        else:
            _link_tree(Path(truth_from), directory / layout.TRUTH_DIR)
        self.save_models(directory, study)
        _atomic_text(directory / "clients.csv", self.table.to_csv(index=False, float_format="%.10g"))
        _atomic_text(directory / layout.FAILURES_FILE, self.failures(study).to_csv(index=False))
        _atomic_text(directory / layout.SCHEME_FILE, self.record(study).to_json())
        return directory

    def failures(self, study: Study) -> pd.DataFrame:
        """One row per client failure (layout.FAILURES_FILE): each error reply the server got (round, message type,
        reason), and a device that left no final model without one. Empty (header only) when nothing failed."""
        ids = {c.partition: c.id for c in study.clients}
        errors = self.federation.errors()
        rows = [{"scheme": self.scheme.name, "client": ids.get(int(e.partition_id), str(e.partition_id)), "round": e.round,
                 "message_type": e.message_type, "error": short_reason(e.error_reason)}
                for e in errors.itertuples(index=False) if pd.notna(e.partition_id)]
        table = self.table.set_index("client")
        for c in study.clients:
            if str(table.loc[c.id, "error"]) == "device left no final model":
                rows.append({"scheme": self.scheme.name, "client": c.id, "round": "", "message_type": "",
                             "error": "device left no final model"})
        rounds = getattr(self.params, "rounds", 0)
        steps = self.table["local_steps"].fillna(0) if "local_steps" in self.table else pd.Series(0, index=self.table.index)
        if not rows and rounds > 0 and (steps == 0).all():
            # a federation that trained nobody without a single error reply (e.g. SecAgg+ with fewer sampled
            # clients than its threshold) would otherwise pass for "nothing changed"
            rows = [{"scheme": self.scheme.name, "client": c.id, "round": "", "message_type": "",
                     "error": f"trained in none of the {rounds} rounds, without an error reply"} for c in study.clients]
        frame = pd.DataFrame(rows, columns=list(layout.FAILURE_COLUMNS))
        return frame.sort_values(["client", "round"], key=lambda c: c.astype(str), kind="stable").reset_index(drop=True)

    def save_models(self, directory: Path, study: Study) -> None:
        """models/<client>.pt: each device's final personal model (a state dict of tensors), kept so that a
        "device lost or model published" threat can be attacked and an engineer has the artefact."""
        for c in study.clients:
            probe = read_probe(Path(self.setup.probe_dir), c.partition)
            if probe is None:
                continue
            path = layout.model_file(directory, c.id)
            buf = io.BytesIO()  # in memory first: a full disk is then an OSError of the write, not torch's RuntimeError
            torch.save({n: t.detach().clone() for n, t in probe["state"].items()}, buf)
            atomic_write(path, buf.getvalue())

    def record(self, study: Study) -> SchemeRecord:
        """scheme.json's content: what the scheme was, as the server knows it (simulator.scheme_record)."""
        ft = self.setup.finetune
        params = dataclasses.asdict(self.params)
        # the DP parameters the devices used: the setup's, after preflight (a target_epsilon resolved into a noise
        # multiplier), not the configured ones; the attacker's threat model reads this block
        used = self.setup.params
        dp = {k: used[k] for k in ("noise_multiplier", "max_grad_norm", "delta", "mode", "noise") if k in used} or None
        return SchemeRecord(
            scheme=self.scheme.name,
            summary=self.scheme.summary,
            params=params,
            model=study.config.model.to_dict(),
            seed=self.setup.seed,
            observable=self.scheme.observable,
            shared_parts=tuple(self.scheme.shared_parts),
            device_parts=tuple(self.scheme.device_parts),
            threat=Threat(optimizer="adamw", lr=ft["lr"], local_epochs=params.get("local_epochs", ft["epochs"]),
                          batch_size=ft["batch_size"], pos_weight=ft["pos_weight"], weight_decay=ft["weight_decay"],
                          kernel_lr=ft["kernel_lr"],
                          # DP-SGD on the device (baselines.dp_local) keeps the learning rate constant; every other
                          # local training follows train_phase's cosine schedule
                          schedule="constant" if (dp or {}).get("mode") == "dp-sgd" else "cosine"),
            # the public input format: the attacker needs it to shape its dummy records and band limit
            data=DataFormat(**{k: getattr(study.config.data, k) for k in ("length", "fs", "scale")}),
            dp=None if dp is None else DPParams(**dp),
            clients=tuple(c.id for c in study.clients),
            partition_to_client={c.partition: c.id for c in study.clients},
            engine=self.federation.engine,
        )


def scheme_setup(study: Study, scheme: Scheme, params: Any, work_dir: Path) -> SchemeSetup:
    cfg = study.config
    ft = {k: getattr(cfg.finetune, k) for k in _FINETUNE_KEYS}
    return SchemeSetup(scheme=scheme.name, model=cfg.model.to_dict(), finetune=ft, params=dataclasses.asdict(params),
                       seed=cfg.seed, pretrained_path=str(study.pretrained_path), probe_dir=str(Path(work_dir) / "probes"),
                       num_clients=len(study.clients), faults=_faults(study), device=str(study.device))


def _check_engine_device(engine: str, study: Study) -> None:
    """Ray's simulation engine runs the ClientApps in actors granted no GPU (simulator.engine.ray_engine:
    num_gpus 0), so a GPU run on it would fail on every device, or fall back where the actor sees no CUDA."""
    if engine == "ray" and study.device.type != "cpu":
        raise MuprivError(f"device = {study.config.device!r} with federation.engine = \"ray\": Ray's actors get no GPU; "
                          f"use engine \"inline\" or \"deployment\" on the GPU, or device = \"cpu\" with Ray")


def _faults(study: Study) -> dict[str, list[Any]]:
    """[federation] fail as partition id -> rounds (study.py has already checked the client ids)."""
    faults: dict[str, list[Any]] = {}
    for client, rnd in parse_fail(study.config.federation.fail):
        for c in study.clients:
            if client in (c.id, "*") and rnd not in faults.setdefault(str(c.partition), []):
                faults[str(c.partition)].append(rnd)
    return faults


def run_scheme(
    study: Study,
    name: str,
    work_dir: Path,
    params: Any | None = None,
    engine: str | None = None,
    timeout_s: float | None = None,
    verbose: bool = False,
    curves: bool = False,
) -> SchemeRun:
    """Run scheme `name` on every client of `study`; `params` defaults to the config's for that scheme.
    ``curves``: also score every device's model after every round (`SchemeRun.curves`)."""
    scheme = get_scheme(name)
    cfg = study.config
    params = cfg.scheme_params(name) if params is None else params
    work_dir = Path(work_dir)
    _check_engine_device(engine or cfg.federation.engine, study)
    setup = scheme_setup(study, scheme, params, work_dir)
    preflight = getattr(scheme, "preflight", None)
    if preflight is not None:
        setup = preflight(setup, [len(c.train) for c in study.clients])
    probes = Path(setup.probe_dir)
    if probes.exists():
        for stale in [*probes.glob("*.pt"), *(probes / ROUNDS_DIR).glob("*.pt")]:
            stale.unlink()
    server_app, client_app = scheme.apps(setup)
    paths = {c.partition: str(c.data_path) for c in study.clients}
    start = time.perf_counter()
    with contextlib.nullcontext() if verbose else _quiet_flower():
        result = run_federation(server_app, client_app, len(study.clients), engine=engine or cfg.federation.engine, scheme=name,
                                run_config=setup.to_run_config(), node_config=_DataPaths(paths), seed=cfg.seed,
                                timeout_s=timeout_s if timeout_s is not None else cfg.federation.timeout_s, verbose=verbose,
                                app_factory=SCHEME_APPS, batch_clients=cfg.federation.batch_clients)  # deployment: the app processes rebuild the pair from run_config
    wall = time.perf_counter() - start
    table = client_table(study, scheme, params, result, probes)
    curve = round_curves(study, scheme, read_round_probes(probes), result.ledger.to_frame()) if curves else None
    return SchemeRun(scheme, params, setup, result, table, wall, curve)


@contextlib.contextmanager
def _quiet_flower():
    """Flower logs every round at INFO, and the engines log each client failure with its traceback; mupriv reports
    client failures in its own table (clients.csv, failures.csv, the report) instead."""
    loggers = [logging.getLogger(name) for name in ("flwr", "simulator.engine")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class _DataPaths:
    """node_config extras: each partition's data file (a class, not a closure, so Ray can pickle it)."""

    def __init__(self, paths: dict[int, str]) -> None:
        self.paths = paths

    def __call__(self, partition: int) -> dict[str, str]:
        return {"data-path": self.paths[partition]}


# ------------------------------------------------------------------------------------------- evaluation
def client_table(study: Study, scheme: Scheme, params: Any, result: FederationResult, probe_dir: Path) -> pd.DataFrame:
    """One row per client: personal and source metrics of its final model, forgetting (simulator.client_scores),
    bytes and rounds (simulator.wire_counts), the device cost (simulator.device_cost), epsilon and errors."""
    pretrained = study.pretrained().to(study.device)
    source_before = study.score_on_source(pretrained)
    frame = result.ledger.to_frame()
    cost = device_cost(study, scheme)
    errors = result.errors()
    rows = []
    for c in study.clients:
        row: dict[str, Any] = {"scheme": scheme.name, "client": c.id}
        before = study.score_on_test(pretrained, c)
        row.update(prefixed("pretrained_personal", before))
        probe = read_probe(probe_dir, c.partition)
        if probe is None:
            row["error"] = _client_error(errors, c.partition) or "device left no final model"
        else:
            model = probe_model(study.config.model, probe["state"]).to(study.device)
            row.update(device_scores(study.score_on_test(model, c), study.score_on_source(model), source_before))
            row.update(_tally(probe))
            row["error"] = _client_error(errors, c.partition) or ""
        row.update(wire_counts(frame, errors, c.partition))
        row.update(cost)
        rows.append(row)
    return pd.DataFrame(rows)


def _tally(probe: dict[str, Any]) -> dict[str, Any]:
    """What the device counted itself: its training wall time, local steps and (DP-SGD) epsilon."""
    tally = probe.get("tally", {})
    out: dict[str, Any] = {"wall_s": float(tally.get("wall_s", 0.0)), "local_steps": int(tally.get("local_steps", 0))}
    if "epsilon" in tally:
        out["epsilon"] = float(tally["epsilon"])
    return out


def _client_error(errors: pd.DataFrame, partition: int) -> str:
    mine = errors[errors["partition_id"] == partition]
    return "; ".join(f"round {r}: {short_reason(reason)}" for r, reason in zip(mine["round"], mine["error_reason"]))


_FLOWER_REASON = re.compile(r"^<class '(?:[\w.]*\.)?(\w+)'>:<'(.*)'>$", re.S)


def short_reason(reason: Any) -> str:
    """Flower's "<class 'pkg.mod.Error'>:<'message'>" as "Error: message" (other reasons unchanged)."""
    text = "" if reason is None else str(reason)
    m = _FLOWER_REASON.match(text)
    return f"{m.group(1)}: {m.group(2)}" if m else text


def to_long(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Long form (seed, scheme, client, metric, value) of the numeric columns of a client table."""
    numeric = [c for c in table.columns if c not in ("scheme", "client", "error") and pd.api.types.is_numeric_dtype(table[c])]
    long = table.melt(id_vars=["scheme", "client"], value_vars=numeric, var_name="metric", value_name="value")
    long.insert(0, "seed", seed)
    return long.sort_values(["seed", "scheme", "client", "metric"], kind="stable").reset_index(drop=True)


def save_truth(study: Study, folder: Path) -> Path:
    """Each client's training records and the server's source records, as the attack scoring reads them."""
    from simulator.core.tensors import save_npz  # pylint: disable=import-outside-toplevel

    (folder / layout.HELDOUT_DIR).mkdir(parents=True, exist_ok=True)
    for c in study.clients:
        save_npz(c.train, folder / f"{c.id}.npz")
        save_npz(c.test, folder / layout.HELDOUT_DIR / f"{c.id}.npz")
    save_npz(study.source_train, folder / layout.SOURCE_FILE)
    return folder


def _link_tree(src: Path, dst: Path) -> None:
    for f in sorted(src.rglob("*.npz")):
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(f, target)
        except OSError:  # another filesystem, or links not allowed: copy
            shutil.copy2(f, target)


def _atomic_text(path: Path, text: str) -> None:
    atomic_write(path, text)


