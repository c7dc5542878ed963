"""Run-folder names (simulator.layout): two runs started at once never share or remove each other's folder."""
from __future__ import annotations

import datetime as dt
import json
import threading

from simulator import layout
from simulator.config import parse_config


def test_claiming_the_same_name_at_once_gives_distinct_folders(tmp_path):
    names: list[str] = []
    lock = threading.Lock()

    def claim() -> None:
        final, folder = layout.claim_folder(tmp_path, "t-20250101-000000", partial=True)
        with lock:
            names.append(final)
        assert folder.name == layout.partial_name(final)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(names) == sorted({*names}) and len(names) == 8
    assert "t-20250101-000000" in names and "t-20250101-000000-8" in names


def test_a_second_run_in_the_same_second_keeps_the_first_runs_partial_folder(tmp_path, monkeypatch):
    """Before, simulate() named the folder by a one-second stamp and removed an existing .partial of that name:
    the second run deleted the first one's work while it ran."""
    import simulator.simulate as sim

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN206 - the same second for every call
            return cls(2025, 1, 1, 12, 0, 0)

    monkeypatch.setattr(sim._dt, "datetime", Frozen)
    cfg = parse_config({"schemes": {"run": ["mu-ft"]}})
    first = sim.start(cfg, runs_root=tmp_path, name="t")
    (first / "schemes").mkdir()
    (first / "schemes" / "work-in-progress").write_text("the first run's cell")
    second = sim.start(cfg, runs_root=tmp_path, name="t")
    assert first != second and first.name == ".t-20250101-120000.partial" and second.name == ".t-20250101-120000-2.partial"
    assert (first / "schemes" / "work-in-progress").read_text() == "the first run's cell"
    assert json.loads((second / sim.PLAN_NAME).read_text())["final_name"] == "t-20250101-120000-2"


def test_two_sweeps_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    """Before, the second sweep's mkdir(exist_ok=False) failed with a traceback."""
    import simulator.sweep as sweep
    from simulator.config_grid import parse_sweep

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN206
            return cls(2025, 1, 1, 12, 0, 0)

    monkeypatch.setattr(sweep._dt, "datetime", Frozen)
    cfg = parse_config({"schemes": {"run": ["mu-ft"]}})
    axes = (parse_sweep("train.lr=0.001,0.002"),)
    first = sweep.start_sweep(cfg, axes, runs_root=tmp_path, name="s")
    second = sweep.start_sweep(cfg, axes, runs_root=tmp_path, name="s")
    assert (first.name, second.name) == (".s-20250101-120000.partial", ".s-20250101-120000-2.partial")


def test_publishing_never_replaces_a_finished_run(tmp_path):
    (tmp_path / "t-1").mkdir()
    (tmp_path / "t-1" / "results.csv").write_text("theirs")
    partial = tmp_path / layout.partial_name("t-1")
    partial.mkdir()
    (partial / "results.csv").write_text("mine")
    final = layout.publish(partial, "t-1")
    assert final.name == "t-1-2" and (final / "results.csv").read_text() == "mine"
    assert (tmp_path / "t-1" / "results.csv").read_text() == "theirs" and not partial.exists()


TINY = {
    "model": {"d_model": 16, "d_state": 8},
    "data": {"synthetic_records": 64, "fs": 50.0, "length": 256},
    "train": {"full_epochs": 1, "mu_epochs": 1},
    "finetune": {"epochs": 1, "batch_size": 8},
    "cohort": {"clients": 2, "records_per_client": 12},
    "federation": {"budget": "as-configured", "rounds": 1},
    "schemes": {"run": ["mu-ft", "fedavg"]},
    "attacks": {"enabled": False},
}


def test_resume_on_another_thread_count_reuses_the_runs_own_pretrained_model(tmp_path, monkeypatch):
    """Before, a resume on 2 threads keyed the pretraining cache differently, trained a second model for the
    remaining schemes, and the manifest named only that one."""
    import torch

    import simulator.simulate as sim

    monkeypatch.setenv("MUPRIV_CACHE_DIR", str(tmp_path / "cache"))
    real = sim._run_cell

    def stop_after_the_first_cell(work, study, scheme, seed, *args):
        if scheme != "mu-ft":
            raise KeyboardInterrupt
        return real(work, study, scheme, seed, *args)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setattr(sim, "_run_cell", stop_after_the_first_cell)
        try:
            sim.simulate(parse_config(TINY), runs_root=tmp_path / "runs", name="r")
        except KeyboardInterrupt:
            pass
        (partial,) = (tmp_path / "runs").glob(".r-*.partial")
        assert json.loads((partial / sim.PLAN_NAME).read_text())["threads"] == 1
        first = list((tmp_path / "cache" / "pretrained").glob("*.pt"))
        assert len(first) == 1 and layout.pretrained_file(partial, 0).is_file()

        monkeypatch.setattr(sim, "_run_cell", real)
        torch.set_num_threads(2)
        steps: list[str] = []
        run = sim.resume(partial, on_step=steps.append).run_dir
        assert torch.get_num_threads() == 2  # the caller's count is restored afterwards
    finally:
        torch.set_num_threads(before)
    assert list((tmp_path / "cache" / "pretrained").glob("*.pt")) == first  # no second model was trained
    assert any("as this run started" in s for s in steps) and any("this run's own" in s for s in steps)
    pretrained = json.loads((run / "manifest.json").read_text())["studies"]["0"]["pretrained"]
    assert pretrained["checkpoint"] == first[0].name and pretrained["run_copy"] == "pretrained/seed-0.pt"
    assert (run / "pretrained" / "seed-0.pt").read_bytes() == first[0].read_bytes()


def test_progress_names_the_cell_and_estimates_the_time_left(monkeypatch):
    import simulator.simulate as sim

    clock = iter([100.0, 400.0, 1000.0])
    monkeypatch.setattr(sim.time, "monotonic", lambda: next(clock))
    said = []
    progress = sim.Progress(total=30, done=6, say=said.append)  # a resumed run: 6 cells were done before
    progress("seed 0: running fedavg")
    progress.cell_done()
    progress("seed 0: running fedprox")  # 300 s for one cell, 23 left
    progress.cell_done()
    progress("seed 0: running dp-fedavg")  # 900 s for two cells, 22 left
    assert said == ["cell 7 of 30: seed 0: running fedavg", "cell 8 of 30, about 115 min left: seed 0: running fedprox",
                    "cell 9 of 30, about 165 min left: seed 0: running dp-fedavg"]
