"""`mupriv data inspect` / `mupriv data synth` through typer's CliRunner."""
import h5py
from typer.testing import CliRunner

from simulator.cli_data import data_app

runner = CliRunner()


def test_synth_then_inspect(tmp_path):
    out = tmp_path / "syn"
    r = runner.invoke(data_app, ["synth", "--out", str(out), "--n", "8", "--clients", "2", "--per-client", "4", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert len(list((out / "source").glob("*.hea"))) == 8 and len(list((out / "client-001").glob("*.mat"))) == 4
    r = runner.invoke(data_app, ["inspect", str(out), "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert "16 records" in r.output and "1dAVb" in r.output and "0 record(s) skipped" in r.output


def test_inspect_skip_bad_counts(tmp_path):
    out = tmp_path / "syn"
    assert runner.invoke(data_app, ["synth", "--out", str(out), "--n", "4", "--clients", "0"]).exit_code == 0
    next((out / "source").glob("*.mat")).unlink()
    r = runner.invoke(data_app, ["inspect", str(out), "--no-cache"])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and r.output.startswith("error: ") and "--skip-bad" in r.output
    r = runner.invoke(data_app, ["inspect", str(out), "--no-cache", "--skip-bad"])
    assert r.exit_code == 0 and "1 record(s) skipped" in r.output


def test_inspect_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "x.hdf5"
    with h5py.File(bad, "w") as f:
        f["other"] = [1, 2, 3]
    for target in (tmp_path / "empty", bad, tmp_path / "missing", tmp_path / "x.txt"):
        if target.suffix == ".txt":
            target.write_text("hi")
        r = runner.invoke(data_app, ["inspect", str(target), "--no-cache"])
        assert r.exit_code == 2, r.output
        assert r.output.startswith("error: ") and r.output.strip().count("\n") == 0, r.output
        assert "Traceback" not in r.output


def test_inspect_npz(tmp_path):
    from simulator.data import save_records, synthesize
    p = save_records(synthesize(3, seed=1), tmp_path / "r.npz")
    r = runner.invoke(data_app, ["inspect", str(p)])
    assert r.exit_code == 0 and "3 records" in r.output
