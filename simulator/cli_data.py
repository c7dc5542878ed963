"""`mupriv data ...`: inspect a data set, write a synthetic cohort as WFDB records."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from simulator.core.labels import CLASSES
from simulator.errors import MuprivError, user_errors

data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Read, inspect and synthesize ECG data.")


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


@data_app.command("inspect")
@user_errors
def inspect_cmd(
    path: Path = typer.Argument(..., help="A WFDB folder (.hea + .mat), a CODE-15 .hdf5 or an .npz."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave bad records out (and count them) instead of stopping."),
    exams_csv: Optional[Path] = typer.Option(None, "--exams-csv", help="CODE-15 exams.csv (default: next to the .hdf5)."),
    fs: float = typer.Option(400.0, help="Target sampling rate (Hz)."),
    length: int = typer.Option(4096, help="Target samples per lead."),
    max_records: Optional[int] = typer.Option(None, help="Read at most this many CODE-15 tracings."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Parse the files even if a cached copy exists."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache folder (default .mupriv-cache in the current folder)."),
) -> None:
    """Class counts, lengths, sampling rates and the problems found in a data set."""
    from simulator.data.cache import RecordCache
    from simulator.data.load import load_records
    from simulator.data.preprocess import PreprocessConfig

    console = Console()
    try:
        cache = RecordCache(cache_dir, enabled=not no_cache)
        with _progress(console) as prog:
            task = prog.add_task(f"reading {path.name}", total=None)
            rec = load_records(path, preprocess=PreprocessConfig(fs=fs, length=length), skip_bad=skip_bad, cache=cache,
                               exams_csv=exams_csv, max_records=max_records,
                               progress=lambda i, n: prog.update(task, completed=i, total=n))
    except MuprivError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    meta = rec.meta
    # a tensor .npz need not state its rate: say so rather than print the --fs it was taken to be
    rate = "a rate the file does not state" if len(meta) and meta["fs_original"].isna().all() else f"{rec.fs:g} Hz"
    console.print(f"[bold]{path}[/bold]: {len(rec)} records, {rec.length} samples x 12 leads at {rate} ({rec.units})"
                  + ("  [dim](from cache)[/dim]" if cache.hits else ""))
    t = Table(title="classes")
    t.add_column("class"); t.add_column("records", justify="right"); t.add_column("labelled", justify="right")
    counts = rec.class_counts()
    for i, c in enumerate(CLASSES):
        t.add_row(c, str(counts[c]), str(int(rec.known[:, i].sum())))
    t.add_row("none of them", str(counts["none"]), "")
    if meta["normal"].notna().any():
        t.add_row("  of which normal", str(int(meta["normal"].fillna(False).astype(bool).sum())), "")
    console.print(t)
    s = Table(title="recordings")
    s.add_column("source"); s.add_column("records", justify="right"); s.add_column("rate (Hz)")
    s.add_column("seconds (min / median / max)"); s.add_column("patients", justify="right")
    for src, g in meta.groupby(meta["source"].fillna("unknown").astype(str)):
        fs_o = g["fs_original"].astype(float)
        secs = g["n_original"].astype(float) / fs_o
        rates = ", ".join(f"{v:g}" for v in sorted(fs_o.dropna().unique())) or "?"
        sec_txt = "?" if secs.isna().all() else f"{secs.min():.1f} / {secs.median():.1f} / {secs.max():.1f}"
        pats = g["patient_id"].dropna().nunique()
        s.add_row(src, str(len(g)), rates, sec_txt, str(pats) if pats else "unknown")
    console.print(s)
    others = [c for v in meta["other_codes"].dropna() for c in str(v).split(";") if c]
    if others:
        console.print(f"other SNOMED codes (kept in metadata, not one of the 6 classes): {len(set(others))} distinct in "
                      f"{int((meta['other_codes'].fillna('') != '').sum())} records")
    skipped = [p for p in rec.problems if p.startswith("skipped")]
    notes = [p for p in rec.problems if not p.startswith("skipped")]
    console.print(f"problems: {len(skipped)} record(s) skipped, {len(notes)} note(s)")
    for p in rec.problems[:20]:
        console.print(f"  - {p}", markup=False, highlight=False)
    if len(rec.problems) > 20:
        console.print(f"  ... and {len(rec.problems) - 20} more")


@data_app.command("synth")
@user_errors
def synth_cmd(
    out: Path = typer.Option(..., "--out", help="Folder to write the WFDB records to (created)."),
    n: int = typer.Option(200, "--n", help="Records in the source population."),
    clients: int = typer.Option(4, "--clients", help="Simulated patients (clients)."),
    per_client: int = typer.Option(40, "--per-client", help="Records per client."),
    shift: float = typer.Option(0.5, "--shift", help="0 = clients like the source ... 1 = strongly shifted device (noise, rate, each patient's electrode placement), age and class mix."),
    seed: int = typer.Option(0, "--seed"),
    fs: float = typer.Option(400.0, "--fs", help="Source device sampling rate (Hz)."),
    seconds: float = typer.Option(10.24, "--seconds", help="Recording length (s)."),
) -> None:
    """Write a synthetic cohort as WFDB .hea + .mat in the CinC layout: OUT/source/ and OUT/client-000/, OUT/client-001/, ..."""
    from simulator.data.cohort import SyntheticCohortSpec, synthesize_cohort_raw
    from simulator.data.synthetic import DeviceProfile, Population
    from simulator.data.wfdb_writer import write_wfdb

    console = Console()
    try:
        if n < 1 or clients < 0 or per_client < 2:
            raise MuprivError("synth: need --n >= 1, --clients >= 0 and --per-client >= 2")
        src_pop = Population(device=DeviceProfile(fs=fs, seconds=seconds))
        spec = SyntheticCohortSpec(n_source=n, source_patients=max(1, n // 4), n_clients=clients, records_per_client=per_client,
                                   shift=shift, source=src_pop)
        source, raw = synthesize_cohort_raw(spec, seed)
        sets = [("source", source)] + raw
        total = sum(len(r) for _, r in sets)
        with _progress(console) as prog:
            task = prog.add_task("writing WFDB", total=total)
            done = 0
            for name, recs in sets:
                write_wfdb(recs, out / name, progress=lambda i, m, d=done: prog.update(task, completed=d + i))
                done += len(recs)
    except MuprivError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    except OSError as e:
        typer.echo(f"error: {out}: cannot write ({e.strerror}); choose a writable --out folder", err=True)
        raise typer.Exit(2)
    t = Table(title=f"synthetic cohort written to {out}")
    t.add_column("folder"); t.add_column("records", justify="right"); t.add_column("rate (Hz)", justify="right")
    for c in CLASSES:
        t.add_column(c, justify="right")
    t.add_column("none", justify="right")
    for name, recs in sets:
        cc = recs.class_counts()
        t.add_row(name, str(len(recs)), f"{recs.fs:g}", *[str(cc[c]) for c in CLASSES], str(cc["none"]))
    console.print(t)


@data_app.command("fetch")
@user_errors
def fetch_cmd(
    name: str = typer.Argument(..., help="Database: cinc2021 (PhysioNet/CinC Challenge 2021) or code15 (CODE-15%)."),
    out: Path = typer.Option(..., "--out", help="Folder to download into (created; a second run resumes and adds)."),
    subset: Optional[str] = typer.Option(None, "--subset", help="cinc2021: source databases, comma-separated, from "
                                         "cpsc2018, cpsc-extra, georgia, ptb-xl, chapman-shaoxing, ningbo (default: all)."),
    parts: Optional[str] = typer.Option(None, "--parts", help="code15: part numbers 0-17, comma-separated (1.7 GB each)."),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="Base URL of a mirror with the publisher's layout "
                                         "(default: $MUPRIV_DATA_MIRROR, else the publisher)."),
    jobs: int = typer.Option(4, "--jobs", min=1, max=32, help="Files downloaded at once."),
    keep_zip: bool = typer.Option(False, "--keep-zip", help="code15: keep each part's zip after unpacking it."),
) -> None:
    """Download a public ECG database, check every file's checksum, write manifest.json and LICENSE.txt next to it."""
    from simulator.data.fetch import fetch
    from simulator.data.sources import mirror_from_env, parse_selection, source

    console = Console()
    src = source(name)
    selection = parse_selection(src, subset, parts)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as prog:
        task = prog.add_task(f"fetching {name}", total=None)
        result = fetch(src, out, selection, mirror=mirror_from_env(mirror), jobs=jobs, keep_zip=keep_zip,
                       progress=lambda done, total, b: prog.update(
                           task, completed=done, total=total, description=f"fetching {name} ({b / 1e6:,.1f} MB)"))
    typer.echo(f"{out}: {result.files} files of {name} ({', '.join(selection)}) checked against the publisher's "
               f"checksums; {result.fetched} downloaded now ({result.bytes / 1e6:,.1f} MB), the rest were already there")
    typer.echo(f"manifest: {result.manifest}")
    typer.echo(f"\nLicence: {src.licence}. Cite (also in {result.licence}):\n{src.citation}")


@data_app.command("prepare")
@user_errors
def prepare_cmd(
    folder: Path = typer.Argument(..., help="A fetched folder: WFDB records (.hea + .mat, recursive) or CODE-15 parts "
                                  "(exams_partN.hdf5 + exams.csv)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write (default FOLDER/.mupriv-prepared, which "
                                       "--data FOLDER then uses; with --out, pass --data OUT)."),
    config: Optional[Path] = typer.Option(None, "-c", "--config", help="Take fs, length, scale and skip_bad from this "
                                          "config's [data] (the options below override it)."),
    fs: Optional[float] = typer.Option(None, "--fs", help="Target sampling rate (Hz); default data.fs."),
    length: Optional[int] = typer.Option(None, "--length", help="Samples per lead; default data.length."),
    scale: Optional[str] = typer.Option(None, "--scale", help="record, lead or none; default data.scale."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave bad records out (and count them) instead of stopping."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Processes (default: every core)."),
) -> None:
    """Preprocess a fetched folder once into shards of records, in parallel and resumable, for every later run."""
    from simulator.config import load_config
    from simulator.data.prepare import Settings, prepare
    from simulator.data.preprocess import PreprocessConfig

    data = load_config(config).data
    pre = PreprocessConfig(fs=fs if fs is not None else data.fs, length=length if length is not None else data.length,
                           scale=scale if scale is not None else data.scale)
    settings = Settings(pre, skip_bad=skip_bad or data.skip_bad)
    console = Console()
    with _progress(console) as prog:
        task = prog.add_task(f"preparing {folder.name}", total=None)
        result = prepare(folder, settings=settings, out=out, workers=workers,
                         progress=lambda done, total: prog.update(task, completed=done, total=total))
    skipped = sum(p.startswith("skipped") for p in result.problems)
    typer.echo(f"{result.path}: {result.records} records ({settings.describe()}) from {result.inputs} read, "
               f"{result.shards} shards ({result.reused} kept from an earlier run), {skipped} bad record(s) skipped")
    for p in result.problems[:10]:
        typer.echo(f"  - {p}")
    use = folder if out is None else out
    typer.echo(f"use it with --data {use} (and [data] fs = {pre.fs:g}, length = {pre.length}, scale = \"{pre.scale}\")")
