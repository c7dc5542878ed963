"""Synthetic cohorts at scale: the faster generator gives bitwise the records of the generator every published number
came from, whatever the number of worker threads, and a built cohort is cached on disk (a hit is bitwise the build).

The fingerprints below were computed with the generator as it was before it was made faster (commit 603761f, one
patient after another); a change that moves one bit of a signal, label or metadata value of any part fails here."""
import hashlib
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import simulator.data.cohort as cohort_module
from simulator.config import parse_config
from simulator.data.cache import RecordCache
from simulator.data.cohort import (Cohort, SyntheticCohortSpec, cached_synthetic_cohort, cohort_cache_settings,
                                   cohort_code_token, load_cohort, save_cohort, synthesize_cohort_raw, synthetic_cohort)
from simulator.data.npzio import _meta_to_json
from simulator.data.preprocess import PreprocessConfig, fix_length, scale, scale_to_length
from simulator.errors import MuprivError
from simulator.study import build_cohort

FROZEN = {
    "split": (dict(n_source=24, source_patients=6, n_clients=3, records_per_client=8, shift=0.5), 0,
              "34e57ef8ed3cc02c69ce44d9e48e66444f673314bb389d189439ac0488395dde"),
    "noshift": (dict(n_source=16, source_patients=4, n_clients=2, records_per_client=6, shift=0.0), 3,
                "e338ccbe9f6090a81d418d5999e5bb04424e44c0b45ca7c93a6e04f57cc185c5"),
    "test_records": (dict(n_source=16, source_patients=4, n_clients=3, records_per_client=6, test_records=10, shift=1.0), 1,
                     "1814e31a83f7e38a7e841693e0c608dbbf602e86f166c4de74eca71f80f6996f"),
    "min_pos": (dict(n_source=16, source_patients=4, n_clients=2, records_per_client=6, test_records=18,
                     test_min_positives=2, shift=1.0), 2,
                "ef5f5f7f480daca562b42e35e646eb8a8b14f17d1075b46cfdbeb44a7b49cee1"),
    # 134 records per patient: two render chunks (CHUNK = 128), a 250 Hz wearable, signals kept in mV
    "chunked_fs250_none": (dict(n_source=8, source_patients=2, n_clients=2, records_per_client=4, test_records=130,
                                shift=0.7, client_fs=250.0, preprocess=PreprocessConfig(fs=400.0, length=1024, scale="none")), 5,
                           "ccd3b360afcc307eb69b80cdb2f8133693765c97e027e29754be5f345f4600a3"),
    # upsampled to 500 Hz, min-max per lead, padded at the end
    "lead_start": (dict(n_source=8, source_patients=2, n_clients=2, records_per_client=5, shift=0.3,
                        preprocess=PreprocessConfig(fs=500.0, length=3000, scale="lead", align="start")), 7,
                   "89a1f5efc700b3aece1d32b4bb0a43ce69643dc02e48dcf609e4688158ae0823"),
    # the run's input (DEFAULT_INPUT): min-max per record, then 1024 of the 4096 samples kept (cropped after scaling)
    "run_input": (dict(n_source=16, source_patients=4, n_clients=3, records_per_client=6, test_records=8, shift=1.0,
                       preprocess=PreprocessConfig(fs=400.0, length=1024, scale="record")), 4,
                  "666f590c3ee2ee30f0676b1737a0e0a8057ee35a04dbcb1a66a50232f5790106"),
    # downsampled to 250 Hz, min-max per lead, cropped from the start
    "crop_lead_start": (dict(n_source=8, source_patients=2, n_clients=2, records_per_client=5, shift=0.6,
                             preprocess=PreprocessConfig(fs=250.0, length=2000, scale="lead", align="start")), 6,
                        "7b32d1c758c73800bedb873455636245b04077f70a4617e229d99611aee8e436"),
}


def _digest_records(h, r) -> None:
    h.update(repr((r.fs, r.units, r.signals.shape, r.problems)).encode())
    for a in (r.signals, r.labels, r.known):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(_meta_to_json(r.meta).encode())
    h.update(repr(sorted((k, str(v)) for k, v in r.meta.dtypes.items())).encode())


def cohort_digest(cohort) -> str:
    """sha256 over every part's signals, labels, known, metadata (values and dtypes), rate and units."""
    h = hashlib.sha256()
    _digest_records(h, cohort.source)
    for c in cohort.clients:
        h.update(c.id.encode())
        _digest_records(h, c.train)
        _digest_records(h, c.test)
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_cohort_bitwise_as_before(name):
    kw, seed, digest = FROZEN[name]
    assert cohort_digest(synthetic_cohort(SyntheticCohortSpec(**kw), seed=seed)) == digest


@pytest.mark.parametrize("workers", [1, 3])
def test_cohort_does_not_depend_on_workers(workers):
    kw, seed, digest = FROZEN["min_pos"]
    assert cohort_digest(synthetic_cohort(SyntheticCohortSpec(**kw), seed=seed, workers=workers)) == digest


def test_raw_cohort_does_not_depend_on_workers():
    spec = SyntheticCohortSpec(n_source=8, source_patients=2, n_clients=3, records_per_client=4, test_records=4, shift=1.0)
    one_source, one = synthesize_cohort_raw(spec, seed=9, workers=1)
    many_source, many = synthesize_cohort_raw(spec, seed=9, workers=4)
    assert one_source.equals(many_source)
    assert [cid for cid, _ in one] == [cid for cid, _ in many] == ["client-000", "client-001", "client-002"]
    assert all(a.equals(b) for (_, a), (_, b) in zip(one, many))


def test_workers_must_be_positive():
    with pytest.raises(MuprivError, match="workers"):
        synthetic_cohort(SyntheticCohortSpec(n_source=4, source_patients=1, n_clients=1, records_per_client=2), workers=0)


@pytest.mark.parametrize("how,length,align", [("record", 700, "center"), ("lead", 700, "start"), ("record", 1500, "center"),
                                              ("none", 700, "center")])
def test_scale_to_length_is_scale_then_fix_length(how, length, align):
    sig = np.random.default_rng(0).normal(0, 1, (3, 1000, 12)).astype(np.float32)
    sig[1] = 0.5  # a flat record: span 1
    want = fix_length(scale(sig, how), length, align)
    got = scale_to_length(sig, how, length, align)
    assert got.dtype == np.float32 and got.tobytes() == np.ascontiguousarray(want).tobytes()


# ----------------------------------------------------------------------------------------------------------
# The on-disk cache
# ----------------------------------------------------------------------------------------------------------
SMALL = SyntheticCohortSpec(**FROZEN["test_records"][0])
SMALL_SEED, SMALL_DIGEST = FROZEN["test_records"][1], FROZEN["test_records"][2]


def _entries(root) -> list:
    return sorted(p.name for p in root.iterdir())


def test_cache_hit_is_bitwise_the_build(tmp_path):
    cache = RecordCache(tmp_path)
    built = cached_synthetic_cohort(SMALL, SMALL_SEED, cache)
    hit = cached_synthetic_cohort(SMALL, SMALL_SEED, cache)
    assert (cache.misses, cache.hits) == (1, 1)
    assert cohort_digest(built) == cohort_digest(hit) == SMALL_DIGEST
    for a, b in zip([built.source] + [c.test for c in built.clients], [hit.source] + [c.test for c in hit.clients]):
        pd.testing.assert_frame_equal(a.meta, b.meta, check_exact=True)   # dtypes too (str, bool, float64, object)
    assert len(_entries(tmp_path)) == 1 and _entries(tmp_path)[0].startswith("cohort-")  # no temporary file left


@pytest.mark.parametrize("change", [dict(seed=SMALL_SEED + 1), dict(shift=0.9), dict(test_records=11),
                                    dict(preprocess=PreprocessConfig(length=2048)),
                                    dict(source=replace(SMALL.source, device=replace(SMALL.source.device, muscle_mv=0.01)))])
def test_cache_key_is_the_whole_spec_and_seed(tmp_path, change):
    cache = RecordCache(tmp_path)
    seed = change.pop("seed", SMALL_SEED)
    key = cache.settings_key("cohort", cohort_cache_settings(SMALL, SMALL_SEED))
    other = cache.settings_key("cohort", cohort_cache_settings(replace(SMALL, **change), seed))
    assert key != other


def test_cache_key_names_the_code(tmp_path, monkeypatch):
    cache = RecordCache(tmp_path)
    before = cache.settings_key("cohort", cohort_cache_settings(SMALL, SMALL_SEED))
    monkeypatch.setattr(cohort_module, "cohort_code_token", lambda: "another-version")
    assert cache.settings_key("cohort", cohort_cache_settings(SMALL, SMALL_SEED)) != before


def test_code_token_hashes_files_that_exist():
    token = cohort_code_token()
    assert len(token) == 16 and token == cohort_code_token()


@pytest.mark.parametrize("damage", [b"", b"not a zip file", "truncate", "foreign"])
def test_corrupt_cache_entry_is_rebuilt(tmp_path, damage):
    cache = RecordCache(tmp_path)
    cached_synthetic_cohort(SMALL, SMALL_SEED, cache)
    (entry,) = tmp_path.iterdir()
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "foreign":   # a readable .npz that is not a cohort
        np.savez(entry, header=np.array('{"format": "something-else"}'))
    else:
        entry.write_bytes(damage)
    again = cached_synthetic_cohort(SMALL, SMALL_SEED, cache)
    assert cohort_digest(again) == SMALL_DIGEST and (cache.hits, cache.misses) == (0, 2)
    assert cohort_digest(load_cohort(entry)) == SMALL_DIGEST   # overwritten with a good entry


def test_disabled_cache_builds_and_writes_nothing(tmp_path):
    cache = RecordCache(tmp_path / "cache", enabled=False)
    assert cohort_digest(cached_synthetic_cohort(SMALL, SMALL_SEED, cache)) == SMALL_DIGEST
    assert cache.misses == 1 and not (tmp_path / "cache").exists()


def test_load_cohort_refuses_a_wrong_part_count(tmp_path):
    cohort = synthetic_cohort(SMALL, SMALL_SEED)
    path = save_cohort(Cohort(source=cohort.source, clients=cohort.clients[:2]), tmp_path / "c.npz")
    assert [c.id for c in load_cohort(path).clients] == ["client-000", "client-001"]
    with np.load(path) as f:
        arrays = dict(f)
    header = json.loads(str(arrays.pop("header")))
    header["clients"].append("client-009")
    np.savez(path, header=np.array(json.dumps(header)), **arrays)
    with pytest.raises(MuprivError, match="record sets for 3 clients"):
        load_cohort(path)


def test_a_run_builds_its_cohort_through_the_cache(tmp_path):
    cfg = parse_config({"data": {"synthetic_records": 24, "fs": 50.0, "length": 128},
                        "cohort": {"clients": 2, "records_per_client": 6, "test_records": 6}})
    first = build_cohort(cfg, cache_dir=tmp_path)
    (entry,) = tmp_path.iterdir()
    stamp = entry.stat().st_mtime_ns
    again = build_cohort(cfg, cache_dir=tmp_path)
    assert entry.stat().st_mtime_ns == stamp   # read, not rewritten
    assert cohort_digest(again) == cohort_digest(first) == cohort_digest(build_cohort(cfg))
