"""The synthetic generator: seeded, fast, and realistic as judged by an independent QRS detector."""
import time
import warnings

import numpy as np
import pytest

from simulator.core.labels import CLASSES, LEADS
from simulator.data.synthetic import DeviceProfile, Population, synthesize

ecgdetectors = pytest.importorskip("ecgdetectors", reason="py-ecg-detectors (test extra) is needed for the realism checks")

CLEAN = DeviceProfile(wander_mv=0, muscle_mv=0, powerline_mv=0, gain_sd=0)


def _one_class(cls, n, seed, device=None):
    pop = Population(class_weights={cls: 1.0}, combo_prob=0.0, **({"device": device} if device else {}))
    return synthesize(n, seed=seed, population=pop)


def _detected_rr(sig, fs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peaks = np.asarray(ecgdetectors.Detectors(fs).two_average_detector(sig.astype(float)))
    return np.diff(peaks) / fs


@pytest.mark.parametrize("cls", ["none", "SB", "ST"])
def test_detector_recovers_heart_rate(cls):
    rec = _one_class(cls, 12, seed=11)  # default device: wander, muscle noise, powerline
    for i in range(len(rec)):
        rr = _detected_rr(rec.signals[i, :, LEADS.index("II")], rec.fs)
        hr = 60.0 / np.median(rr)
        assert abs(hr - rec.meta["hr_bpm"][i]) < 5.0, (cls, i, hr, rec.meta["hr_bpm"][i])
        if cls == "SB":
            assert hr < 60
        if cls == "ST":
            assert hr > 100


def test_af_rr_is_irregular():
    af = _one_class("AF", 12, seed=12)
    sinus = _one_class("none", 12, seed=13)
    cv = lambda r: [np.std(x) / np.mean(x) for x in (_detected_rr(r.signals[i, :, 1], r.fs) for i in range(len(r)))]  # noqa: E731
    af_cv, sinus_cv = np.array(cv(af)), np.array(cv(sinus))
    assert np.median(af_cv) > 0.12 and np.median(sinus_cv) < 0.06
    assert np.median(af_cv) > 3 * np.median(sinus_cv)


def _beat(x, fs):
    """A clean record's fastest-changing moment (inside a QRS) and the spatial velocity."""
    v = np.abs(np.diff(x, axis=0)).sum(axis=1) * fs
    margin = int(0.6 * fs)
    pk = int(np.argmax(v[margin:-margin])) + margin
    return pk, v


def _qrs_ms(x, fs):
    pk, v = _beat(x, fs)
    thr, w = 0.1 * v[pk], int(0.012 * fs)
    lo = hi = pk
    while lo > 0 and v[max(0, lo - w):lo].max() > thr:
        lo -= 1
    while hi < len(v) - 1 and v[hi:hi + w].max() > thr:
        hi += 1
    return (hi - lo) / fs * 1000 - 12, lo, hi


def test_qrs_width_defines_bundle_branch_blocks():
    for cls, lo_ms, hi_ms in (("none", 60, 110), ("RBBB", 115, 175), ("LBBB", 115, 185)):
        rec = _one_class(cls, 8, seed=21, device=CLEAN)
        for i in range(len(rec)):
            w, _, _ = _qrs_ms(rec.signals[i], rec.fs)
            assert lo_ms <= w <= hi_ms, (cls, w)
            assert abs(w - rec.meta["qrs_ms"][i]) < 20


def test_bundle_branch_morphology():
    fs = 400.0
    rb = _one_class("RBBB", 6, seed=31, device=CLEAN)
    for i in range(len(rb)):
        _, lo, hi = _qrs_ms(rb.signals[i], fs)
        v1 = rb.signals[i, lo:hi + 1, LEADS.index("V1")]
        last = v1[len(v1) // 2:]
        assert last.max() > 0.2 and last.max() > abs(last.min()), "RBBB: late R' in V1"
        lead1 = rb.signals[i, lo:hi + 1, LEADS.index("I")]
        assert lead1[len(lead1) // 2:].min() < -0.15, "RBBB: wide terminal S in lead I"
    lb = _one_class("LBBB", 6, seed=32, device=CLEAN)
    for i in range(len(lb)):
        _, lo, hi = _qrs_ms(lb.signals[i], fs)
        seg = lb.signals[i, lo:hi + 1]
        v1, v6 = seg[:, LEADS.index("V1")], seg[:, LEADS.index("V6")]
        assert v1.min() < -0.5 and abs(v1.min()) > 3 * max(v1.max(), 0.0), "LBBB: deep QS in V1"
        assert v6.max() > 3 * max(-v6.min(), 0.0), "LBBB: upright R in V6"
        assert seg[:, LEADS.index("I")].max() > 0.3


def test_pr_interval_defines_1davb():
    fs = 400.0
    for cls, ok in (("none", lambda d: d < 0.2), ("1dAVb", lambda d: d > 0.2)):
        rec = _one_class(cls, 8, seed=41, device=CLEAN)
        for i in range(len(rec)):
            ii = rec.signals[i, :, LEADS.index("II")]
            r = int(np.argmax(ii[int(0.6 * fs):-int(0.6 * fs)])) + int(0.6 * fs)
            window = ii[r - int(0.36 * fs): r - int(0.08 * fs)]
            p_to_r = (len(window) - int(np.argmax(window))) / fs + 0.08
            assert ok(p_to_r), (cls, p_to_r, rec.meta["pr_ms"][i])


def test_same_seed_same_records_and_different_seed_differs():
    a = synthesize(20, seed=7)
    b = synthesize(20, seed=7)
    c = synthesize(20, seed=8)
    assert a.equals(b)
    assert not np.array_equal(a.signals, c.signals)


def test_no_contradictory_labels_and_all_classes_present():
    rec = synthesize(400, seed=3, population=Population(combo_prob=0.5))
    y = rec.labels.astype(bool)
    c = {k: y[:, i] for i, k in enumerate(CLASSES)}
    assert not (c["SB"] & c["ST"]).any() and not (c["RBBB"] & c["LBBB"]).any()
    assert not (c["AF"] & (c["SB"] | c["ST"] | c["1dAVb"])).any()
    assert all(v.sum() > 10 for v in c.values()) and (~y.any(axis=1)).sum() > 30
    assert (y.sum(axis=1) == 2).sum() > 20
    assert rec.signals.shape == (400, 4096, 12) and rec.signals.dtype == np.float32


def test_generator_is_fast():
    t = time.perf_counter()
    synthesize(200, seed=1)
    assert time.perf_counter() - t < 5.0
