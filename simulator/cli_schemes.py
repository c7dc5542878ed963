"""`mupriv schemes` and `mupriv run-scheme NAME`: list the schemes, run one and print its per-client table."""
from __future__ import annotations

import datetime as _dt
import tomllib
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from simulator import layout
from simulator.atomic import atomic_write
from simulator.errors import MuprivError

console = Console(stderr=True)
out_console = Console()

TABLE_COLUMNS = [
    ("client", "client", "{}"),
    ("pretrained_personal_macro_auroc", "AUROC before", "{:.3f}"),
    ("personal_macro_auroc", "AUROC after", "{:.3f}"),
    ("personal_macro_f1", "F1 after", "{:.3f}"),
    ("forgetting_macro_auroc", "forgetting", "{:+.3f}"),
    ("bytes_up", "bytes up", "{:,}"),
    ("bytes_down", "bytes down", "{:,}"),
    ("rounds", "rounds", "{}"),
    ("trainable_params", "device params", "{:,}"),
    ("epsilon", "epsilon", "{:.2f}"),
    ("error", "error", "{}"),
]


def parse_param_overrides(items: list[str]) -> dict:
    """`key=value` pairs, values read as TOML literals (0.1, 3, true, "text"); bare words are strings."""
    out = {}
    for item in items:
        if "=" not in item:
            raise MuprivError(f"--param {item!r}: write it as key=value, e.g. --param mu=0.1")
        key, raw = (s.strip() for s in item.split("=", 1))
        try:
            out[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw
    return out


def client_rich_table(title: str, table) -> Table:  # noqa: ANN001 - a pandas DataFrame
    view = Table(title=title)
    cols = [c for c in TABLE_COLUMNS if c[0] in table.columns and (c[0] != "error" or table["error"].astype(bool).any())]
    for _, label, _ in cols:
        view.add_column(label, justify="left" if label in ("client", "error") else "right")
    for _, row in table.iterrows():
        cells = []
        for key, _, fmt in cols:
            v = row[key]
            try:
                cells.append("n/a" if v != v else fmt.format(v))  # NaN: undefined metric
            except (ValueError, TypeError):
                cells.append(str(v))
        view.add_row(*cells)
    return view


def schemes_command() -> None:
    """List every scheme: what leaves the device, what trains where, and its parameters."""
    from baselines.registry import get_scheme, scheme_names

    for name in scheme_names():
        s = get_scheme(name)
        view = Table(title=f"{s.name}: {s.summary}", caption=f"server observes: {s.observable}; shared: {', '.join(s.shared_parts) or 'nothing'}")
        for col in ("parameter", "type", "default", "meaning"):
            view.add_column(col)
        for pname, typ, default, help_ in s.describe_params():
            view.add_row(pname, typ, repr(default), help_)
        out_console.print(view)


def run_scheme_command(
    name: str = typer.Argument(..., help="Scheme name (see `mupriv schemes`)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config (defaults if omitted; see configs/)."),
    data: Optional[str] = typer.Option(None, "--data", help="Real records (WFDB folder, CODE-15 .hdf5, .npz); overrides data.path."),
    param: list[str] = typer.Option([], "--param", "-p", help="Scheme parameter override key=value (repeatable), e.g. -p mu=0.1."),
    engine: Optional[str] = typer.Option(None, "--engine", help="inline (default), ray or deployment (a real local Flower federation); overrides federation.engine."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu (default), cuda, cuda:N or auto (CUDA when available): where models compute; overrides device."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<scheme>-<time>)."),
    seed: Optional[int] = typer.Option(None, help="Override the config's seed."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave bad records out (and count them) instead of stopping; sets data.skip_bad."),
) -> None:
    """Run one scheme on the configured cohort and print its per-client table."""
    import dataclasses

    from simulator.config import load_config, with_overrides
    from simulator.core.device import resolve_device
    from simulator.runner import run_scheme, to_long
    from simulator.study import build_study

    cfg = with_overrides(load_config(config), data=dict(path=data, skip_bad=skip_bad or None), federation=dict(engine=engine),
                         **{"": dict(seed=seed, device=device)})
    resolve_device(cfg.device)  # a missing GPU stops here, before any folder or training
    overrides = parse_param_overrides(param)
    params = cfg.scheme_params(name)
    if overrides:
        from baselines.registry import get_scheme

        params = get_scheme(name).make_params({**dataclasses.asdict(params), **overrides})
    if out is not None:
        run_dir = out
    else:  # a new folder of its own, even when another run of this scheme started in the same second
        _, run_dir = layout.claim_folder(Path("runs"), f"{name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    with console.status("building the cohort and pretraining (cached after the first run)..."):
        study = build_study(cfg, run_dir / "work")
    console.print(f"cohort: {len(study.clients)} clients, source {len(study.source_train)} train / {len(study.source_test)} test records; "
                  f"pretrained model {'from cache' if study.pretrain_cached else 'trained'}: {study.pretrained_path}")
    with console.status(f"running {name} on the {cfg.federation.engine if engine is None else engine} engine..."):
        run = run_scheme(study, name, run_dir / "work" / name, params=params, curves=cfg.report.curves)
    run.save(run_dir, study)
    long = to_long(run.table, cfg.seed)
    atomic_write(run_dir / "results.csv", long.to_csv(index=False, float_format="%.10g"))
    rounds = ""
    if run.curves is not None:
        from simulator.curves import curves_long
        from simulator.layout import ROUNDS_FILE

        atomic_write(run_dir / ROUNDS_FILE, curves_long(run.curves, cfg.seed).to_csv(index=False, float_format="%.10g"))
        rounds = f"{ROUNDS_FILE}, "
    out_console.print(client_rich_table(f"{name} ({run.wall_s:.1f} s, engine {run.federation.engine})", run.table))
    failed = run.table[run.table["error"].fillna("").astype(str) != ""]
    if len(failed):
        console.print(f"[bold red]⚠[/bold red] {len(failed)} of {len(run.table)} clients failed "
                      f"({', '.join(failed['client'])}): see the error column above and failures.csv")
    console.print(f"run folder: {run_dir} (scheme.json, clients.csv, results.csv, {rounds}failures.csv, ledger/)")
