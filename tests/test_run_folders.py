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


def test_publishing_never_replaces_a_finished_run(tmp_path):
    (tmp_path / "t-1").mkdir()
    (tmp_path / "t-1" / "results.csv").write_text("theirs")
    partial = tmp_path / layout.partial_name("t-1")
    partial.mkdir()
    (partial / "results.csv").write_text("mine")
    final = layout.publish(partial, "t-1")
    assert final.name == "t-1-2" and (final / "results.csv").read_text() == "mine"
    assert (tmp_path / "t-1" / "results.csv").read_text() == "theirs" and not partial.exists()
