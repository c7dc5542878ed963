"""`mupriv data prepare`: shards equal to parsing, used by load_records (so --data) when unchanged, resumable,
bad records as everywhere else."""
import os

import numpy as np
import pytest
from typer.testing import CliRunner

import simulator.data.prepare as prep
from simulator.cli_data import data_app
from simulator.data import PreprocessConfig, RecordCache, load_records, read_code15, read_wfdb_folder
from tests.data_server import SAMPLE, code15_part, copy_cinc_sample

runner = CliRunner()
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"CinC 2021 sample not found at {SAMPLE}")
PRE = PreprocessConfig(fs=100.0, length=512)
ARGS = ["--fs", "100", "--length", "512", "--scale", "record"]


@pytest.fixture(autouse=True)
def small_shards(monkeypatch):
    monkeypatch.setattr(prep, "SHARD_RECORDS", 2)
    monkeypatch.setattr(prep, "SHARD_TRACINGS", 5)


def same(a, b):
    assert a.equals(b) and list(a.meta["source"]) == list(b.meta["source"])
    assert list(a.meta["patient_id"].astype(str)) == list(b.meta["patient_id"].astype(str))


def no_cache(tmp_path):
    return RecordCache(tmp_path / "cache", enabled=False)


@needs_sample
def test_prepared_folder_is_what_parsing_gives_and_load_records_uses_it(tmp_path):
    d = copy_cinc_sample(tmp_path / "cinc")
    r = runner.invoke(data_app, ["prepare", str(d), *ARGS, "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert "6 records" in r.output and "3 shards (0 kept" in r.output and f"--data {d}" in r.output
    parsed = read_wfdb_folder(d, preprocess=PRE)
    cache = RecordCache(tmp_path / "cache")
    fast = load_records(d, preprocess=PRE, cache=cache)
    same(fast, parsed)
    assert cache.misses == 0 and cache.hits == 0  # from the shards, neither parsed nor from the read cache
    assert set(fast.meta["source"]) == {"CPSC2018", "Georgia"}
    # other settings are not prepared: parsed as before
    other = PreprocessConfig(fs=100.0, length=256)
    load_records(d, preprocess=other, cache=cache)
    assert cache.misses == 1


@needs_sample
def test_a_changed_file_is_parsed_again_not_read_stale(tmp_path):
    d = copy_cinc_sample(tmp_path / "cinc")
    assert runner.invoke(data_app, ["prepare", str(d), *ARGS, "--workers", "1"]).exit_code == 0
    hea = d / "training/georgia/g1/E00001.hea"
    st = hea.stat()
    os.utime(hea, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    cache = RecordCache(tmp_path / "cache")
    load_records(d, preprocess=PRE, cache=cache)
    assert cache.misses == 1


@needs_sample
def test_out_folder_is_self_contained_and_refuses_other_settings(tmp_path):
    d = copy_cinc_sample(tmp_path / "cinc")
    out = tmp_path / "prepared"
    assert runner.invoke(data_app, ["prepare", str(d), "--out", str(out), *ARGS]).exit_code == 0
    parsed = read_wfdb_folder(d, preprocess=PRE)
    for f in d.rglob("*.mat"):
        f.unlink()  # the raw data may go: the prepared folder stands alone
    same(load_records(out, preprocess=PRE, cache=no_cache(tmp_path)), parsed)
    from simulator.errors import MuprivError
    with pytest.raises(MuprivError, match="prepared with fs 100 Hz, length 512.*asks for fs 400 Hz"):
        load_records(out, preprocess=PreprocessConfig(), cache=no_cache(tmp_path))


@needs_sample
def test_a_stopped_prepare_keeps_its_finished_shards_and_the_rerun_does_the_rest(tmp_path):
    d = copy_cinc_sample(tmp_path / "cinc")
    mat = d / "training/georgia/g1/E00005.mat"
    kept = mat.read_bytes()
    mat.unlink()  # the last shard (E00004, E00005) fails
    r = runner.invoke(data_app, ["prepare", str(d), *ARGS, "--workers", "1"])
    assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.strip().count("\n") == 0, r.output
    assert "E00005.hea" in r.output and "--skip-bad" in r.output
    dest = next((d / prep.PREPARED_DIR).iterdir())
    assert len(list(dest.glob("shard-*.npz"))) == 2 and not (dest / prep.INDEX).exists()
    assert not list(dest.glob(".*.tmp*"))  # nothing half-written
    r = runner.invoke(data_app, ["prepare", str(d), *ARGS, "--workers", "1", "--skip-bad"])
    assert r.exit_code == 0 and "1 bad record(s) skipped" in r.output, r.output
    # the strict read does not take the lenient preparation that skipped a record: it names the bad record
    from simulator.errors import MuprivError
    with pytest.raises(MuprivError, match="E00005"):
        load_records(d, preprocess=PRE, cache=no_cache(tmp_path))
    mat.write_bytes(kept)
    r = runner.invoke(data_app, ["prepare", str(d), *ARGS, "--workers", "2"])
    assert r.exit_code == 0 and "6 records" in r.output and "(2 kept from an earlier run)" in r.output, r.output


def test_code15_folder_prepares_in_row_shards_with_patient_ids(tmp_path):
    d = tmp_path / "code15"
    d.mkdir()
    h5, rows = code15_part(n=12, patients=4)
    (d / "exams_part0.hdf5").write_bytes(h5)
    rows.to_csv(d / "exams.csv", index=False)
    parsed = read_code15(d / "exams_part0.hdf5", preprocess=PRE)
    slow = load_records(d, preprocess=PRE, cache=no_cache(tmp_path))  # a folder of parts reads like one part
    same(slow, parsed)
    r = runner.invoke(data_app, ["prepare", str(d), *ARGS, "--workers", "2"])
    assert r.exit_code == 0 and "12 records" in r.output and "3 shards" in r.output, r.output
    cache = RecordCache(tmp_path / "cache")
    fast = load_records(d, preprocess=PRE, cache=cache)
    same(fast, parsed)
    assert cache.misses == 0 and fast.meta["patient_id"].nunique() == 4
    assert np.array_equal(fast.labels, parsed.labels)


def test_not_a_data_folder_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "missing"):
        r = runner.invoke(data_app, ["prepare", str(target)])
        assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.strip().count("\n") == 0, r.output


@needs_sample
def test_the_challenge_folder_names_the_database_where_the_record_name_cannot(tmp_path):
    """Chapman-Shaoxing and Ningbo both name records JSnnnnn: fetched into training/<db>/, each is its own source,
    so split = "source" gives them a client each."""
    import shutil
    for db, name in (("chapman_shaoxing", "JS20019"), ("ningbo", "JS45551")):
        (tmp_path / "training" / db / "g1").mkdir(parents=True)
        for ext in (".hea", ".mat"):
            shutil.copy(SAMPLE / f"{name}{ext}", tmp_path / "training" / db / "g1" / f"{name}{ext}")
    rec = read_wfdb_folder(tmp_path, preprocess=PRE)
    assert list(rec.meta["source"]) == ["Chapman-Shaoxing", "Ningbo"]
