"""Where a command writes: a read-only folder or a full disk is one `error:` line and exit code 2, never a
traceback, and nothing written before is lost (a full disk during `simulate` names the resume command)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.core.tensors import save_npz
from tests.helpers import frequency_task

runner = CliRunner()

TINY = """
seed = 0
[model]
d_model = 16
d_state = 8
[data]
synthetic_records = 64
fs = 50.0
length = 256
[train]
full_epochs = 1
mu_epochs = 0
batch_size = 16
[finetune]
epochs = 1
batch_size = 8
[cohort]
clients = 2
records_per_client = 12
[federation]
budget = "as-configured"
rounds = 1
"""


@pytest.fixture
def read_only(monkeypatch):
    """Make folders read-only as a read-only mount is (root ignores chmod, so it is simulated at the OS calls that
    create files and folders): creating anything under them fails with EROFS."""
    roots: list[Path] = []
    real_mkdir, real_open = os.mkdir, os.open

    def under(path) -> bool:  # noqa: ANN001
        p = Path(os.fsdecode(path)).absolute()
        return any(p == r or r in p.parents for r in roots)

    def mkdir(path, *args, **kwargs):  # noqa: ANN001, ANN202
        if under(path):
            if Path(os.fsdecode(path)).exists():
                raise FileExistsError(errno.EEXIST, "File exists", os.fsdecode(path))
            raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):  # noqa: ANN001, ANN202
        if flags & os.O_CREAT and under(path):
            raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)
    return lambda folder: roots.append(Path(folder).absolute())


def _one_error_line(result) -> str:  # noqa: ANN001
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: ")
    return line


def test_train_into_a_read_only_folder(tmp_path, read_only):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.replace("length = 256", "length = 128"))
    save_npz(frequency_task(n=32, length=128), tmp_path / "source.npz")
    (tmp_path / "ro").mkdir()
    read_only(tmp_path / "ro")
    r = runner.invoke(app, ["train", "-c", str(cfg), "--data", str(tmp_path / "source.npz"), "-o", str(tmp_path / "ro" / "m.pt"),
                            "--json", str(tmp_path / "t.json")])
    line = _one_error_line(r)
    assert f"{tmp_path / 'ro' / 'm.pt'}: read-only file system" in line and "--out / -o" in line
    assert list((tmp_path / "ro").iterdir()) == []


def test_simulate_into_a_read_only_folder(tmp_path, read_only):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    read_only(tmp_path / "ro")
    r = runner.invoke(app, ["simulate", str(cfg), "-o", str(tmp_path / "ro" / "runs"), "--no-attacks"])
    assert "read-only file system" in _one_error_line(r)


def test_a_full_disk_during_simulate_keeps_the_finished_cells_and_names_the_resume_command(tmp_path, monkeypatch):
    import simulator.simulate as sim

    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    monkeypatch.setenv("MUPRIV_CACHE_DIR", str(tmp_path / "cache"))
    real = sim._run_cell

    def disk_fills_up(work, study, scheme, seed, *args):
        if scheme == "fedavg":
            raise OSError(errno.ENOSPC, "No space left on device", str(sim.cell_dir(work, scheme, seed) / "clients.csv"))
        return real(work, study, scheme, seed, *args)

    monkeypatch.setattr(sim, "_run_cell", disk_fills_up)
    r = runner.invoke(app, ["simulate", str(cfg), "-o", str(tmp_path / "runs"), "--schemes", "mu-ft,fedavg", "--no-attacks"])
    line = _one_error_line(r)
    (partial,) = (tmp_path / "runs").glob(".simulate-*.partial")
    assert "clients.csv: no space left on device" in line and f"`mupriv simulate --resume {partial}`" in line
    assert sim.cell_done(partial, "mu-ft", 0)  # nothing already written is lost

    monkeypatch.setattr(sim, "_run_cell", real)  # space freed: the printed command finishes the run
    done = runner.invoke(app, ["simulate", "--resume", str(partial)])
    assert done.exit_code == 0, done.output
    assert not partial.exists() and len(list((tmp_path / "runs").glob("simulate-*"))) == 1


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_old_one(tmp_path, monkeypatch):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.replace("length = 256", "length = 128"))
    save_npz(frequency_task(n=32, length=128), tmp_path / "source.npz")
    args = ["train", "-c", str(cfg), "--data", str(tmp_path / "source.npz"), "-o", str(tmp_path / "m.pt"), "--json",
            str(tmp_path / "t.json")]
    assert runner.invoke(app, args).exit_code == 0
    before = (tmp_path / "m.pt").read_bytes()

    import simulator.atomic as atomic

    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: _Full(fd))
    line = _one_error_line(runner.invoke(app, args))
    assert f"{tmp_path / 'm.pt'}: no space left on device" in line
    assert (tmp_path / "m.pt").read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "m.pt", "source.npz", "t.json", "tiny.toml"]


class _Full:
    """A file whose every write fails as on a full disk."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> "_Full":
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")
