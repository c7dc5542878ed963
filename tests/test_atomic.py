"""simulator.atomic: the one write-then-rename helper, and that nothing else renames a fixed temporary name."""
from __future__ import annotations

import re
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from simulator.atomic import atomic_write
from simulator.core.checkpoint import read_checkpoint, save_checkpoint
from tests.helpers import tiny_model

ROOT = Path(__file__).resolve().parents[1]


def test_bytes_text_and_writer_functions_land_whole_with_normal_permissions(tmp_path):
    atomic_write(tmp_path / "a.bin", b"\x00\x01")
    atomic_write(tmp_path / "sub" / "b.txt", "héllo")
    atomic_write(tmp_path / "c.npz", lambda tmp: np.savez(tmp, x=np.arange(3)), fsync=True)
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text() == "héllo"
    assert np.load(tmp_path / "c.npz")["x"].tolist() == [0, 1, 2]  # np.savez did not append a second .npz
    for p in (tmp_path / "a.bin", tmp_path / "sub" / "b.txt", tmp_path / "c.npz"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.bin", "b.txt", "c.npz", "sub"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    atomic_write(target, "old")

    def broken(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_two_writers_of_one_path_never_share_a_temporary_file(tmp_path):
    """Before, save_checkpoint wrote `<path>.tmp`: two processes writing the same checkpoint could rename
    each other's half-written file into place."""
    target = tmp_path / "model.pt"
    models = [tiny_model(seed=s) for s in range(4)]
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for _ in range(5):
                save_checkpoint(target, models[k], extra={"writer": k})
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    payload = read_checkpoint(target)  # a whole checkpoint of one writer, never a mix
    k = payload["extra"]["writer"]
    assert all(torch.equal(v, models[k].state_dict()[n]) for n, v in payload["state_dict"].items())
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_no_module_renames_a_fixed_temporary_name():
    """Every write-then-rename goes through simulator.atomic (a unique name per write)."""
    fixed = re.compile(r"""(with_name|with_suffix)\([^)]*\.tmp|["']\.?[\w.]*\.tmp["']""")
    offenders = []
    for path in sorted((ROOT / "simulator").rglob("*.py")) + sorted((ROOT / "baselines").rglob("*.py")) + \
            sorted((ROOT / "attacks").rglob("*.py")):
        if path.name == "atomic.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if fixed.search(line) or "os.replace(" in line and "atomic" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    allowed = {"simulator/simulate.py"}  # renames the finished run folder itself, not a file
    assert [o for o in offenders if o.split(":")[0] not in allowed] == []
