"""The wearable's per-patient electrode placement: a fixed linear map of the 12 leads per patient, which the
filters of preprocessing cannot remove and the model's encoder can undo; and the evaluation-only test set."""
import numpy as np
import pytest

from simulator.core.labels import LEADS
from simulator.data import SyntheticCohortSpec, synthetic_cohort
from simulator.data.cohort import client_population
from simulator.data.synthetic import (PLACEMENT_COLUMNS, DeviceProfile, Population, lead_matrix, sample_labels,
                                      sample_traits, synthesize_records)
from simulator.errors import MuprivError

CLEAN = DeviceProfile(wander_mv=0, muscle_mv=0, powerline_mv=0, gain_sd=0)


def _render(traits, patient_of, labels, seed):
    return synthesize_records(traits, patient_of, labels, CLEAN, np.random.default_rng(seed), source="t",
                              record_ids=[f"R{i}" for i in range(len(labels))],
                              patient_ids=[f"P{j}" for j in range(len(traits))]).signals


def test_placement_is_a_fixed_linear_map_of_each_patients_leads():
    rng = np.random.default_rng(0)
    pop = Population(device=CLEAN)
    traits = sample_traits(2, pop, rng)
    patient_of = np.array([0, 0, 0, 1, 1, 1])
    labels = sample_labels(np.broadcast_to(pop.weight_vector(), (6, 7)), 0.2, rng)
    placed = traits.copy()
    angles = np.array([[20.0, -35.0, 10.0], [-15.0, 25.0, 40.0]])
    contact = np.exp(np.random.default_rng(1).normal(0, 0.4, (2, len(LEADS))))
    for i, c in enumerate(PLACEMENT_COLUMNS):
        placed[c] = angles[:, i] if i < 3 else contact[:, i - 3]
    plain, moved = _render(traits, patient_of, labels, 7), _render(placed, patient_of, labels, 7)
    assert not np.allclose(plain, moved, atol=1e-3)
    for p in (0, 1):  # one 12x12 map per patient explains all its records
        rows = patient_of == p
        a, b = plain[rows].reshape(-1, 12).astype(float), moved[rows].reshape(-1, 12).astype(float)
        m, *_ = np.linalg.lstsq(a, b, rcond=None)
        assert np.abs(a @ m - b).max() < 1e-3 * np.abs(b).max()
    # the map is the patient's own: patient 1's records are not patient 0's map of them
    a0, b0 = plain[:3].reshape(-1, 12).astype(float), moved[:3].reshape(-1, 12).astype(float)
    m0, *_ = np.linalg.lstsq(a0, b0, rcond=None)
    a1, b1 = plain[3:].reshape(-1, 12).astype(float), moved[3:].reshape(-1, 12).astype(float)
    assert np.abs(a1 @ m0 - b1).max() > 0.05 * np.abs(b1).max()


def test_placement_keeps_the_signal_three_dimensional():
    """A rotation of the lead frame keeps the heart's dipole: still rank 3 across 12 leads (without contact gains)."""
    rng = np.random.default_rng(2)
    traits = sample_traits(1, Population(device=CLEAN), rng)
    traits[list(PLACEMENT_COLUMNS[:3])] = [30.0, -20.0, 45.0]
    x = _render(traits, np.zeros(2, np.int64), np.zeros((2, 6), np.float32), 3).reshape(-1, 12).astype(float)
    s = np.linalg.svd(x, compute_uv=False)
    assert s[3] < 1e-4 * s[0] and s[2] > 1e-2 * s[0]
    assert lead_matrix().shape == (3, 12)


def test_wearable_placement_grows_with_shift():
    spec = lambda s: SyntheticCohortSpec(shift=s)  # noqa: E731
    assert client_population(spec(0.0)).device.placement_deg == 0.0
    assert client_population(spec(0.0)).device.contact_gain_sd == 0.0
    half, full = client_population(spec(0.5)).device, client_population(spec(1.0)).device
    assert 0 < half.placement_deg < full.placement_deg and 0 < half.contact_gain_sd < full.contact_gain_sd
    assert Population().device.placement_deg == 0.0  # the clinical source has the standard placement
    with pytest.raises(MuprivError, match="placement_deg"):
        DeviceProfile(placement_deg=-1.0)


def test_each_client_has_its_own_placement():
    c = synthetic_cohort(SyntheticCohortSpec(n_source=8, source_patients=2, n_clients=3, records_per_client=4, shift=1.0), seed=3)
    # The same dipole seen through different frames: the clients' mean lead correlation matrices differ.
    corr = [np.corrcoef(cl.records.signals.reshape(-1, 12).T) for cl in c.clients]
    assert np.abs(corr[0] - corr[1]).max() > 0.2 and np.abs(corr[1] - corr[2]).max() > 0.2


def test_evaluation_only_test_records():
    spec = SyntheticCohortSpec(n_source=8, source_patients=2, n_clients=2, records_per_client=6, test_records=15, shift=0.5)
    c = synthetic_cohort(spec, seed=4)
    for cl in c.clients:
        assert len(cl.train) == 6 and len(cl.test) == 15
        assert not set(cl.train.record_ids) & set(cl.test.record_ids)
        assert set(cl.records.meta["patient_id"]) == {cl.id.replace("client-", "C")}
    base = synthetic_cohort(SyntheticCohortSpec(n_source=8, source_patients=2, n_clients=2, records_per_client=6,
                                                test_records=0, shift=0.5), seed=4)
    assert len(base.clients[0].train) + len(base.clients[0].test) == 6  # without it, test_fraction splits the 6
    with pytest.raises(MuprivError, match="test_records"):
        SyntheticCohortSpec(test_records=-1)
