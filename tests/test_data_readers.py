"""Readers (CinC WFDB, CODE-15 HDF5, npz), WFDB round trip, bad input, and the cache."""
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from simulator.core.labels import CLASSES
from simulator.data import (ECGRecords, PreprocessConfig, RecordCache, load_records, read_code15, read_wfdb_folder,
                            save_records, synthesize, write_wfdb)
from simulator.data.preprocess import fix_length, resample, scale
from simulator.errors import MuprivError

SAMPLE = Path(__file__).parents[1].parent / "shared/data/cinc2021-sample"
RAW = PreprocessConfig(fs=400.0, length=4096, scale="none")
MANIFEST_NAMES = {"IAVB": "1dAVb", "RBBB": "RBBB", "LBBB": "LBBB", "SB": "SB", "AF": "AF", "STach": "ST"}


@pytest.fixture(scope="module")
def small():
    return synthesize(6, seed=4)


@pytest.fixture()
def folder(tmp_path, small):
    write_wfdb(small, tmp_path / "recs")
    return tmp_path / "recs"


# ---------------------------------------------------------------- the real sample
@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"CinC 2021 sample not found at {SAMPLE} (shared/data next to the repo)")
def test_cinc_sample_matches_manifest(tmp_path):
    rec = load_records(SAMPLE, cache=RecordCache(tmp_path / "cache"))
    man = pd.read_csv(SAMPLE / "MANIFEST.csv", dtype=str).fillna("")
    assert len(rec) == len(man) == 110
    assert rec.signals.shape == (110, 4096, 12) and rec.known.all()
    want = {c: 0 for c in CLASSES}
    for tc in man["target_classes"]:
        for t in filter(None, tc.split(";")):
            if t in MANIFEST_NAMES:
                want[MANIFEST_NAMES[t]] += 1
    got = rec.class_counts()
    assert {c: got[c] for c in CLASSES} == want
    by_id = dict(zip(rec.record_ids, range(len(rec))))
    for _, row in man.iterrows():  # record by record, not only the totals
        y = rec.labels[by_id[row["record"]]]
        assert {c for c, v in zip(CLASSES, y) if v} == {MANIFEST_NAMES[t] for t in row["target_classes"].split(";") if t in MANIFEST_NAMES}
    assert np.isfinite(rec.signals).all() and rec.signals.min() >= 0 and rec.signals.max() <= 1
    assert rec.problems == ()


# ---------------------------------------------------------------- WFDB round trip
def test_wfdb_round_trip(folder, small):
    back = read_wfdb_folder(folder, preprocess=RAW)
    assert back.record_ids == small.record_ids
    np.testing.assert_allclose(back.signals, small.signals, atol=0.5e-3 + 1e-6)  # 1 µV steps (gain 1000/mV)
    np.testing.assert_array_equal(back.labels, small.labels)
    assert list(back.meta["patient_id"]) == list(small.meta["patient_id"])
    assert list(back.meta["source"]) == list(small.meta["source"])
    assert list(back.meta["sex"]) == list(small.meta["sex"])


def test_wfdb_round_trip_at_500hz_resamples(tmp_path):
    from simulator.data.synthetic import DeviceProfile, Population
    rec = synthesize(3, seed=5, population=Population(device=DeviceProfile(fs=500.0, seconds=10.0)))
    write_wfdb(rec, tmp_path / "r500")
    back = read_wfdb_folder(tmp_path / "r500", preprocess=RAW)
    assert back.fs == 400 and back.length == 4096 and list(back.meta["fs_original"]) == [500.0] * 3
    # 10 s at 500 Hz -> 4000 samples at 400 Hz, centred: 48 zeros each side
    assert np.all(back.signals[:, :48] == 0) and np.all(back.signals[:, -48:] == 0)
    direct = fix_length(resample(rec.signals, 500.0, 400.0, axis=1), 4096)
    np.testing.assert_allclose(back.signals, direct, atol=2e-3)


def test_preprocess_helpers():
    x = np.random.default_rng(0).normal(size=(2, 5000, 12)).astype(np.float32)
    assert resample(x, 500, 400, axis=1).shape == (2, 4000, 12)
    s = scale(x, "record")
    assert np.allclose(s.min(axis=(1, 2)), 0) and np.allclose(s.max(axis=(1, 2)), 1)
    s = scale(x, "lead")
    assert np.allclose(s.min(axis=1), 0) and np.allclose(s.max(axis=1), 1)
    assert np.array_equal(fix_length(x, 4096, "start"), x[:, :4096])
    assert np.array_equal(fix_length(x, 4096, "center"), x[:, 452:452 + 4096])


def test_lead_order_is_normalised(folder, small):
    hea = folder / f"{small.record_ids[0]}.hea"
    lines = hea.read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]  # header lists II before I (the data columns say so too)
    mat = folder / f"{small.record_ids[0]}.mat"
    raw = np.frombuffer(mat.read_bytes()[24:], dtype="<i2").reshape(-1, 12).copy()
    raw[:, [0, 1]] = raw[:, [1, 0]]
    mat.write_bytes(mat.read_bytes()[:24] + raw.tobytes())
    hea.write_text("\n".join(lines).replace(" II\n", " DII\n") + "\n")
    back = read_wfdb_folder(folder, preprocess=RAW)
    np.testing.assert_allclose(back.signals[0], small.signals[0], atol=0.5e-3 + 1e-6)


# ---------------------------------------------------------------- bad input
def _rid(small, i=0):
    return small.record_ids[i]


def test_missing_mat(folder, small):
    (folder / f"{_rid(small)}.mat").unlink()
    with pytest.raises(MuprivError, match=rf"{_rid(small)}\.hea: signal file {_rid(small)}\.mat is missing"):
        read_wfdb_folder(folder)
    rec = read_wfdb_folder(folder, skip_bad=True)
    assert len(rec) == len(small) - 1 and len(rec.problems) == 1 and "missing" in rec.problems[0]


def test_malformed_header(folder, small):
    (folder / f"{_rid(small)}.hea").write_text("this is not a header\n")
    with pytest.raises(MuprivError, match=rf"{_rid(small)}\.hea: malformed header"):
        read_wfdb_folder(folder)
    assert len(read_wfdb_folder(folder, skip_bad=True)) == len(small) - 1


def test_missing_or_bad_dx_line(folder, small):
    h = folder / f"{_rid(small)}.hea"
    h.write_text("\n".join(l for l in h.read_text().splitlines() if "Dx" not in l) + "\n")
    with pytest.raises(MuprivError, match="no '#Dx:' diagnosis line"):
        read_wfdb_folder(folder)
    h2 = folder / f"{_rid(small, 1)}.hea"
    h2.write_text(h2.read_text().replace("#Dx: ", "#Dx: AFIB,"))
    rec = read_wfdb_folder(folder, skip_bad=True)
    assert len(rec) == len(small) - 2 and len(rec.problems) == 2


def test_wrong_lead_count(folder, small):
    h = folder / f"{_rid(small)}.hea"
    lines = h.read_text().splitlines()
    first = lines[0].split()
    first[1] = "11"
    h.write_text("\n".join([" ".join(first)] + lines[1:12] + lines[13:]) + "\n")
    with pytest.raises(MuprivError, match=r"11 leads, expected 12"):
        read_wfdb_folder(folder)
    assert len(read_wfdb_folder(folder, skip_bad=True)) == len(small) - 1


def test_nan_and_constant_signals(folder, small):
    mat = folder / f"{_rid(small)}.mat"
    raw = np.frombuffer(mat.read_bytes()[24:], dtype="<i2").reshape(-1, 12).copy()
    raw[100:200, 3] = -32768  # the WFDB "no sample" value -> NaN
    mat.write_bytes(mat.read_bytes()[:24] + raw.tobytes())
    mat2 = folder / f"{_rid(small, 1)}.mat"
    mat2.write_bytes(mat2.read_bytes()[:24] + np.zeros_like(raw).tobytes())
    with pytest.raises(MuprivError, match=rf"{_rid(small)}\.hea: NaN/infinite samples in lead\(s\) aVR"):
        read_wfdb_folder(folder)
    rec = read_wfdb_folder(folder, skip_bad=True)
    assert len(rec) == len(small) - 2
    assert any("constant signal" in p and _rid(small, 1) in p for p in rec.problems)


def test_unknown_snomed_codes_are_kept(folder, small):
    h = folder / f"{_rid(small)}.hea"
    h.write_text(h.read_text().replace("#Dx: ", "#Dx: 999999999,"))
    rec = read_wfdb_folder(folder)
    assert len(rec) == len(small) and rec.problems == ()
    assert "999999999" in rec.meta["other_codes"][0] and "999999999" in rec.meta["snomed"][0]
    np.testing.assert_array_equal(rec.labels, small.labels)


def test_hash_dx_with_space_and_odd_gain(folder, small):
    h = folder / f"{_rid(small)}.hea"
    h.write_text(h.read_text().replace("#Dx:", "# Dx:").replace("16+24 1000/mV", "16x1+24 1000.0(0)/mV"))
    rec = read_wfdb_folder(folder, preprocess=RAW)
    np.testing.assert_array_equal(rec.labels, small.labels)
    np.testing.assert_allclose(rec.signals[0], small.signals[0], atol=0.5e-3 + 1e-6)


def test_empty_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MuprivError, match=r"empty: no \.hea header files found"):
        read_wfdb_folder(tmp_path / "empty")
    with pytest.raises(MuprivError, match="no such"):
        load_records(tmp_path / "nope")


def test_all_records_bad_is_an_error(folder, small):
    for f in folder.glob("*.mat"):
        f.unlink()
    with pytest.raises(MuprivError, match="none of the 6 record"):
        read_wfdb_folder(folder, skip_bad=True)


# ---------------------------------------------------------------- CODE-15
def _write_code15(path: Path, n=5, seed=0, with_tracings=True):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n + 1, 4096, 12)) * 0.2).astype(np.float32)
    x[-1] = 0
    exam_id = np.arange(1000, 1000 + n + 1)
    exam_id[-1] = 0  # CODE-15 pads each part with a zero exam
    with h5py.File(path, "w") as f:
        if with_tracings:
            f["tracings"] = x
        else:
            f["signals"] = x
        f["exam_id"] = exam_id
    labels = rng.random((n, 6)) < 0.3
    cols = ["exam_id", "age", "is_male", "nn_predicted_age", "1dAVb", "RBBB", "LBBB", "SB", "ST", "AF",
            "patient_id", "death", "timey", "normal_ecg", "trace_file"]
    df = pd.DataFrame({"exam_id": exam_id[:n], "age": rng.integers(20, 90, n), "is_male": rng.random(n) < 0.5,
                       "nn_predicted_age": 50.0, "1dAVb": labels[:, 0], "RBBB": labels[:, 1], "LBBB": labels[:, 2],
                       "SB": labels[:, 3], "ST": labels[:, 4], "AF": labels[:, 5], "patient_id": 500 + np.arange(n) // 2,
                       "death": "", "timey": "", "normal_ecg": ~labels.any(axis=1), "trace_file": path.name})[cols]
    df.to_csv(path.parent / "exams.csv", index=False)
    return x[:n], labels, df


def test_code15_reader(tmp_path):
    x, labels, df = _write_code15(tmp_path / "exams_part0.hdf5")
    rec = read_code15(tmp_path / "exams_part0.hdf5", preprocess=RAW)
    assert len(rec) == 5 and rec.known.all()
    np.testing.assert_array_equal(rec.signals, x)
    # CSV columns are ... SB, ST, AF; CLASSES are ... SB, AF, ST: matched by name
    want = np.stack([df[c].to_numpy() for c in CLASSES], axis=1).astype(np.float32)
    np.testing.assert_array_equal(rec.labels, want)
    assert list(rec.meta["patient_id"]) == [str(p) for p in df["patient_id"]]
    assert rec.meta["record_id"][0] == "code15-1000"


def test_code15_problems(tmp_path):
    _write_code15(tmp_path / "nope.hdf5", with_tracings=False)
    with pytest.raises(MuprivError, match=r"nope\.hdf5: no 'tracings' dataset"):
        read_code15(tmp_path / "nope.hdf5")
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "exams_part1.hdf5"
    x, _, df = _write_code15(p, n=4)
    with h5py.File(p, "a") as f:
        f["tracings"][1] = 0.0                       # constant
    df.iloc[1:].to_csv(p.parent / "exams.csv", index=False)  # exam 1000 missing from the CSV
    with pytest.raises(MuprivError, match="exam_id 1000 not in exams.csv"):
        read_code15(p)
    rec = read_code15(p, skip_bad=True)
    assert len(rec) == 2 and len(rec.problems) == 2
    (p.parent / "exams.csv").unlink()
    rec = read_code15(p, skip_bad=True)
    assert not rec.known.any() and any("no exams.csv" in q for q in rec.problems)
    (tmp_path / "junk.hdf5").write_text("not hdf5")
    with pytest.raises(MuprivError, match="cannot open as HDF5"):
        read_code15(tmp_path / "junk.hdf5")


# ---------------------------------------------------------------- cache and npz
def test_cache_second_load_hits_and_is_equal(folder, tmp_path, monkeypatch):
    cache = RecordCache(tmp_path / "cache")
    first = load_records(folder, cache=cache)
    assert (cache.hits, cache.misses) == (0, 1)
    import simulator.data.load as load_mod

    def boom(*a, **k):
        raise AssertionError("parsed the files again")
    monkeypatch.setattr(load_mod, "read_wfdb_folder", boom)
    second = load_records(folder, cache=cache)
    assert (cache.hits, cache.misses) == (1, 1)
    assert second.equals(first)
    pd.testing.assert_frame_equal(second.meta, first.meta, check_dtype=False)
    assert not list((tmp_path / "cache").glob("*.tmp"))
    monkeypatch.undo()
    # another setting, or a touched file, is a different entry
    load_records(folder, cache=cache, preprocess=PreprocessConfig(scale="lead"))
    assert cache.misses == 2
    h = sorted(folder.glob("*.hea"))[0]
    h.write_text(h.read_text() + "#Note: edited\n")
    load_records(folder, cache=cache)
    assert cache.misses == 3


def test_cache_dir_default_is_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MUPRIV_CACHE_DIR", raising=False)
    assert RecordCache().root == tmp_path / ".mupriv-cache"


def test_records_npz_round_trip_and_tensors(tmp_path, small):
    p = save_records(small, tmp_path / "r.npz")
    back = load_records(p)
    assert back.equals(small)
    t = back.tensors()
    assert tuple(t.x.shape) == (6, 4096, 12) and tuple(t.y.shape) == (6, 6)
    both = ECGRecords.concat([small, small.subset([0, 2])])
    assert len(both) == 8 and both.record_ids[6:] == [small.record_ids[0], small.record_ids[2]]
