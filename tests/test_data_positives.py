"""cohort.test_min_positives: every synthetic patient's test set holds k positives of each class, the training
records stay the patient's own, and 0 leaves the cohort as it was."""
import hashlib

import numpy as np
import pytest

from simulator.config import parse_config
from simulator.data import SyntheticCohortSpec, synthetic_cohort
from simulator.data.positives import top_up
from simulator.errors import MuprivError
from simulator.study import build_cohort

SPEC = dict(n_source=8, source_patients=2, n_clients=3, records_per_client=6, test_records=24, shift=1.0)


def _positives(labels):
    return (labels > 0.5).sum(axis=0)


@pytest.fixture(scope="module")
def pair():
    return synthetic_cohort(SyntheticCohortSpec(**SPEC), seed=11), synthetic_cohort(SyntheticCohortSpec(**SPEC, test_min_positives=3), seed=11)


def test_every_test_set_has_k_positives_per_class(pair):
    base, topped = pair
    assert any(_positives(c.test.labels).min() < 3 for c in base.clients)  # the i.i.d. test sets lack some
    for b, t in zip(base.clients, topped.clients):
        assert _positives(t.test.labels).min() >= 3, t.id
        assert len(t.test) == len(b.test) and t.test.record_ids == b.test.record_ids
        # the patient's training records, their labels and their waveforms, are untouched
        assert np.array_equal(t.train.signals, b.train.signals) and np.array_equal(t.train.labels, b.train.labels)
        # only redrawn test records changed, each for one with the same patient and device
        changed = ~np.all(t.test.signals == b.test.signals, axis=(1, 2))
        assert 0 < changed.sum() < len(t.test)
        assert np.array_equal(t.test.labels[~changed], b.test.labels[~changed])
        assert set(t.test.meta["patient_id"]) == {t.id.replace("client-", "C")}
        assert set(t.test.meta["device"]) == set(b.test.meta["device"])
    again = synthetic_cohort(SyntheticCohortSpec(**SPEC, test_min_positives=3), seed=11)
    assert all(np.array_equal(a.test.signals, t.test.signals) for a, t in zip(again.clients, topped.clients))


def test_zero_leaves_the_cohort_as_before(pair):
    """Labels and record ids are pure random draws, so their hash is portable; it was computed by the code
    before test_min_positives existed."""
    base, _ = pair
    h = hashlib.sha256()
    for c in base.clients:
        for r in (c.train, c.test):
            h.update(r.labels.astype(np.uint8).tobytes())
            h.update(",".join(r.record_ids).encode())
    assert h.hexdigest()[:16] == "211861c623741df7"
    same = synthetic_cohort(SyntheticCohortSpec(**SPEC, test_min_positives=0), seed=11)
    for a, b in zip(same.clients, base.clients):
        assert np.array_equal(a.test.signals, b.test.signals) and np.array_equal(a.train.signals, b.train.signals)


def test_top_up_takes_only_spare_records():
    rng = np.random.default_rng(0)
    y = np.zeros((12, 6), np.float32)
    y[:4, 0] = 1  # class 0: 4 positives, 2 spare at k = 2
    y[4, 1] = 1   # class 1: 1 positive, lacking
    w = np.full(7, 1 / 7)
    new = top_up(y, 2, w, 0.0, rng)
    assert 4 not in new  # the lacking class's only record is kept
    out = y.copy()
    for row, labels in new.items():
        out[row] = labels
    assert _positives(out).min() >= 2
    assert top_up(out, 2, w, 0.0, rng) == {}  # nothing left to do
    with pytest.raises(MuprivError, match="12 test records 3 positives of each of 6 classes"):
        top_up(y, 3, w, 0.0, rng)


@pytest.mark.parametrize("cohort, message", [
    ({"test_records": 12, "test_min_positives": -1}, "out of range: give a value in \\[0, inf\\)"),
    ({"test_records": 0, "test_min_positives": 2}, "needs cohort.test_records > 0"),
    ({"test_records": 11, "test_min_positives": 2}, r"needs cohort.test_records >= 12 \(6 classes x 2\)"),
])
def test_config_refuses_bad_values(cohort, message):
    with pytest.raises(MuprivError, match=message):
        parse_config({"cohort": cohort})


def test_real_data_refuses_it():
    cfg = parse_config({"cohort": {"test_records": 12, "test_min_positives": 2}})
    with pytest.raises(MuprivError, match="applies to synthetic cohorts"):
        build_cohort(cfg, data_path="some/records.npz")
