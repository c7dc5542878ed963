"""Cohorts: clients are disjoint, splits are seeded, the balanced subset is balanced."""
import numpy as np
import pytest

from simulator.core.labels import CLASSES
from simulator.data import (PreprocessConfig, ECGRecords, SyntheticCohortSpec, balanced_subset, split_cohort, synthesize,
                            synthetic_cohort, train_test_split)
from simulator.errors import MuprivError

SPEC = SyntheticCohortSpec(n_source=80, source_patients=20, n_clients=3, records_per_client=20, shift=0.7)


@pytest.fixture(scope="module")
def cohort():
    return synthetic_cohort(SPEC, seed=5)


@pytest.fixture(scope="module")
def records():
    return synthesize(120, seed=9, n_patients=40)


def _assert_disjoint(c):
    seen: dict[str, str] = {}
    parts = [("source", c.source)] + [(cl.id, cl.train) for cl in c.clients] + [(cl.id, cl.test) for cl in c.clients]
    for owner, recs in parts:
        for rid in recs.record_ids:
            assert seen.setdefault(rid, owner) == owner or owner == seen[rid] , rid
    # a record id appears in exactly one part, and a client's train and test never overlap
    all_ids = [r for _, recs in parts for r in recs.record_ids]
    assert len(all_ids) == len(set(all_ids))
    for cl in c.clients:
        others = {r for o in c.clients if o.id != cl.id for r in o.records.record_ids} | set(c.source.record_ids)
        assert not (set(cl.records.record_ids) & others)
        other_signals = np.concatenate([c.source.signals] + [o.records.signals for o in c.clients if o.id != cl.id])
        flat = {s.tobytes() for s in other_signals}
        assert not any(s.tobytes() in flat for s in cl.records.signals)


def test_synthetic_cohort_shapes_and_disjoint(cohort):
    assert len(cohort.source) == 80 and len(cohort.clients) == 3
    for cl in cohort.clients:
        assert len(cl.train) + len(cl.test) == 20 and len(cl.test) == 6
        assert cl.train.signals.shape[1:] == (4096, 12) and cl.train.fs == 400.0
        assert set(cl.records.meta["patient_id"]) == {cl.id.replace("client-", "C")}
        assert set(cl.records.meta["fs_original"]) == {500.0}  # wearable rate, resampled to 400 Hz
    assert set(cohort.source.meta["fs_original"]) == {400.0}
    _assert_disjoint(cohort)
    s = cohort.summary()
    assert list(s["records"])[0] == 80


def test_same_seed_same_cohort(cohort):
    again = synthetic_cohort(SPEC, seed=5)
    assert again.source.equals(cohort.source)
    for a, b in zip(again.clients, cohort.clients):
        assert a.id == b.id and a.train.equals(b.train) and a.test.equals(b.test)
    other = synthetic_cohort(SPEC, seed=6)
    assert not np.array_equal(other.clients[0].train.signals, cohort.clients[0].train.signals)


def test_shift_changes_the_client_data():
    none = synthetic_cohort(SyntheticCohortSpec(n_source=20, source_patients=5, n_clients=2, records_per_client=10, shift=0.0), seed=1)
    assert set(none.clients[0].records.meta["fs_original"]) == {400.0}
    strong = synthetic_cohort(SyntheticCohortSpec(n_source=20, source_patients=5, n_clients=2, records_per_client=10, shift=1.0), seed=1)
    hf = lambda r: float(np.abs(np.diff(r.signals, axis=1)).mean())  # noqa: E731  (noise raises sample-to-sample change)
    assert hf(strong.clients[0].records) > hf(strong.source)


@pytest.mark.parametrize("by", ["patient", "dirichlet"])
def test_split_by_patient_keeps_patients_together(records, by):
    c = split_cohort(records, 4, by=by, seed=2)
    _assert_disjoint(c)
    owners = {}
    for name, recs in [("source", c.source)] + [(cl.id, cl.records) for cl in c.clients]:
        for pid in set(recs.meta["patient_id"]):
            assert owners.setdefault(pid, name) == name, f"patient {pid} in {owners[pid]} and {name}"
    assert len(c.source) + sum(len(cl.records) for cl in c.clients) == len(records)
    again = split_cohort(records, 4, by=by, seed=2)
    assert [cl.train.record_ids for cl in again.clients] == [cl.train.record_ids for cl in c.clients]


def test_split_by_source_is_hospital_level(records):
    meta = records.meta.copy()
    meta["source"] = np.array(["A", "B", "B", "C"])[np.arange(len(records)) % 4]
    recs = ECGRecords(records.signals, records.labels, records.known, meta, fs=records.fs)
    c = split_cohort(recs, 5, by="source", seed=0)
    assert set(c.source.meta["source"]) == {"B"}
    assert [cl.id for cl in c.clients] == ["site-A", "site-C"]
    for cl in c.clients:
        assert len(set(cl.records.meta["source"])) == 1
    _assert_disjoint(c)
    with pytest.raises(MuprivError, match="server_sources"):
        split_cohort(recs, 2, by="source", server_sources=["Z"])


def test_split_errors(records):
    with pytest.raises(MuprivError, match="patient"):
        split_cohort(records.subset(range(6)), 10, by="patient")
    with pytest.raises(MuprivError, match="split by"):
        split_cohort(records, 2, by="nonsense")


def test_balanced_subset(records):
    sub = balanced_subset(records, 3, seed=1)
    counts = sub.class_counts()
    assert all(counts[c] >= 3 for c in CLASSES) and counts["none"] == 3
    assert len(set(sub.record_ids)) == len(sub)
    assert len(sub) == 3 * (len(CLASSES) + 1)
    assert balanced_subset(records, 3, seed=1).equals(sub)


def _patients_apart(a, b):
    return not set(a.meta["patient_id"].astype(str)) & set(b.meta["patient_id"].astype(str))


@pytest.mark.parametrize("by", ["patient", "source", "dirichlet"])
def test_no_patient_on_both_sides_of_a_clients_personal_split(records, by):
    """Clients that hold several patients (hospital clients) split train/test by whole patients."""
    meta = records.meta.copy()
    meta["source"] = np.array(["A", "B", "C"])[np.arange(len(records)) % 3]
    recs = ECGRecords(records.signals, records.labels, records.known, meta, fs=records.fs)
    c = split_cohort(recs, 2, by=by, seed=1)
    for cl in c.clients:
        assert cl.records.meta["patient_id"].nunique() > 1 and len(cl.train) and len(cl.test)
        assert _patients_apart(cl.train, cl.test), cl.id


def test_a_single_patient_and_record_level_ids_split_by_record_as_before(records):
    rng = lambda: np.random.default_rng(5)  # noqa: E731
    one = records.subset(np.flatnonzero(records.meta["patient_id"] == records.meta["patient_id"].iloc[0]))
    tr, te = train_test_split(one, 0.3, rng())
    assert len(tr) and len(te)  # a wearer's own records: split by record (the personalisation setting)
    meta = records.meta.copy()
    meta["patient_id"] = None  # CinC: no ids -> every record its own patient
    anon = ECGRecords(records.signals, records.labels, records.known, meta, fs=records.fs)
    tr, te = train_test_split(anon, 0.3, rng())
    assert len(te) == round(0.3 * len(anon))


def test_code15_patients_are_never_split(tmp_path):
    """CODE-15%'s exams.csv names the patient: through the real reader, a split never puts one patient's exams on
    two sides (server / clients, or a client's train / test)."""
    from simulator.data import read_code15
    from tests.data_server import code15_part
    h5, rows = code15_part(n=60, patients=15)
    (tmp_path / "exams_part0.hdf5").write_bytes(h5)
    rows.to_csv(tmp_path / "exams.csv", index=False)
    recs = read_code15(tmp_path / "exams_part0.hdf5", preprocess=PreprocessConfig(fs=100.0, length=256))
    assert recs.meta["patient_id"].nunique() == 15
    c = split_cohort(recs, 3, by="patient", seed=0)
    parts = [c.source] + [p for cl in c.clients for p in (cl.train, cl.test)]
    for i, a in enumerate(parts):
        for b in parts[i + 1:]:
            assert _patients_apart(a, b)
