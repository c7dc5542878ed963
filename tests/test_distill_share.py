"""`distill-share` (issue 16, part 2): devices upload distilled sets; what crosses the wire, and what the attacks make
of it. One tiny study (2 patients, d_model 16) serves every test; the pretrained model is cached once for all of
them, the end-to-end `simulate` included."""
from __future__ import annotations

import dataclasses
import tomllib

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.common.serde import recorddict_to_proto
from typer.testing import CliRunner

from attacks.budget import get_budget
from attacks.membership import nearest_similarity
from attacks.metrics import similarity_matrix
from attacks.run import attack_run_report
from attacks.threat import attacks_for, threat_for
from baselines.distill_share import UPLOAD, DistillShareParams, distilled_set
from baselines.registry import get_scheme, scheme_names
from baselines.setup import SchemeSetup
from simulator.cli import app
from simulator.config import parse_config
from simulator.errors import MuprivError
from simulator.ledger import UP
from simulator.runner import run_scheme
from simulator.scheme_record import DISTILLED, SchemeRecord, Threat
from simulator.study import build_study

TINY = """
seed = 0
[model]
d_model = 16
d_state = 8
[data]
synthetic_records = 64
fs = 50.0
length = 256
[train]
full_epochs = 1
mu_epochs = 1
[finetune]
epochs = 1
batch_size = 8
[cohort]
clients = 2
records_per_client = 12
test_records = 12
[schemes]
run = ["distill-share"]
[schemes.distill-share]
iterations = 5
"""
# The quick budget without LiRA's shadows and with a small public prior: the distilled-set attacks do not use either,
# and the tests stay seconds long.
BUDGET = dataclasses.replace(get_budget("quick"), name="tiny", mi_shadows=0, prior_samples=8)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    torch.set_num_threads(1)
    return tmp_path_factory.mktemp("distill-share")


@pytest.fixture(scope="module")
def study(root):
    return build_study(parse_config(tomllib.loads(TINY)), root / "work", cache_dir=root / "cache")


def _run(study, root, name: str, **params):
    scheme = get_scheme("distill-share")
    values = {**dataclasses.asdict(study.config.scheme_params("distill-share")), **params}
    run = run_scheme(study, "distill-share", root / name / "work", params=scheme.make_params(values))
    folder = root / name / "run"
    run.save(folder, study)
    return run, folder


@pytest.fixture(scope="module")
def distilled(study, root):
    return _run(study, root, "distilled")


@pytest.fixture(scope="module")
def control(study, root):
    """iterations = 0: the upload is the initial selection of real records, unchanged."""
    return _run(study, root, "control", iterations=0)


def _uploads(run) -> dict[int, dict[str, np.ndarray]]:
    """partition -> the arrays its UP message carried, as the ledger holds them."""
    out = {}
    for e in run.ledger.entries:
        if e.direction == UP and not e.is_error and e.tensor_names:
            out[e.partition_id] = {k.rpartition("/")[2]: v for k, v in e.payload.items()}
    return out


# ----------------------------------------------------------------------------------------------- registry
def test_the_scheme_is_registered_listed_and_checks_its_parameters():
    assert "distill-share" in scheme_names()
    scheme = get_scheme("distill-share")
    assert scheme.observable == DISTILLED and not scheme.federated and scheme.device_parts == ()
    listing = CliRunner().invoke(app, ["schemes"])
    assert listing.exit_code == 0 and "distill-share" in listing.output
    for bad, match in (({"records_per_class": 0}, "records_per_class must be >= 1"),
                       ({"iterations": -1}, "iterations must be >= 0"), ({"embed": "pixels"}, "embed must be one of"),
                       ({"parts": "head"}, "parts .* unknown")):
        with pytest.raises(MuprivError, match=match):
            scheme.make_params(bad)


def test_its_record_round_trips_and_names_its_threat_model():
    record = SchemeRecord(scheme="distill-share", summary="s", params={"iterations": 5}, model={"d_model": 16}, seed=1,
                          observable=DISTILLED, shared_parts=(), device_parts=(),
                          threat=Threat(optimizer="adamw", lr=3e-3, local_epochs=1, batch_size=8, pos_weight=6.0,
                                        weight_decay=0.01),
                          dp=None, clients=("client-000",), partition_to_client={0: "client-000"}, engine="inline")
    assert SchemeRecord.from_json(record.to_json()) == record
    threat = threat_for("distill-share", DISTILLED)
    assert threat.name == "distilled-custodian" and attacks_for(threat) == ("distilled",)


# ----------------------------------------------------------------------------------------------- the wire
def test_the_uplink_is_exactly_the_distilled_tensors(distilled, study):
    run, _ = distilled
    uploads = _uploads(run)
    params = DistillShareParams(**run.setup.params)
    frame = run.ledger.to_frame()
    up = frame[(frame["direction"] == UP) & frame["tensor_names"].map(bool)]
    assert len(up) == len(study.clients)
    for c in study.clients:
        got = uploads[c.partition]
        assert set(got) == {"x", "y", "known"}
        # the device's distillation, recomputed here from its data and seed, is what went up, bit for bit
        seed = (run.setup.seed * 1_000_003 + c.partition * 10_007 + 1) % (2**31)
        want = distilled_set(c.train, params, study.config.model, seed)
        for k in ("x", "y", "known"):
            assert np.array_equal(got[k], getattr(want, k).numpy()), k
        groups = int(((c.train.y > 0.5) & c.train.known).any(0).sum()) + int((~((c.train.y > 0.5) & c.train.known).any(1)).any())
        assert len(got["x"]) == min(len(c.train), params.records_per_class * groups)
        # the bytes: the tensors' own, and the serialised RecordDict the ledger counts (Flower's protobuf framing)
        row = up[up["partition_id"] == c.partition].iloc[0]
        assert row["payload_bytes"] == sum(getattr(want, k).numpy().nbytes for k in ("x", "y", "known"))
        record = RecordDict({UPLOAD: ArrayRecord({k: Array(getattr(want, k).numpy()) for k in ("x", "y", "known")})})
        assert row["content_bytes"] == len(recorddict_to_proto(record).SerializeToString(deterministic=True))
        assert row["content_bytes"] - row["payload_bytes"] < 1024
        table_row = run.table[run.table["client"] == c.id].iloc[0]
        assert table_row["content_bytes_up"] == row["content_bytes"]


def _groups(data) -> np.ndarray:
    """(n, classes + 1) the groups each real record belongs to: its known positive classes, or "none"."""
    pos = ((data.y > 0.5) & data.known).numpy()
    return np.concatenate([pos, ~pos.any(1, keepdims=True)], axis=1)


def test_the_server_sees_a_real_record_only_where_a_group_was_copied_whole(distilled, study):
    """Distribution matching moves a synthetic record only while its group's synthetic mean differs from the
    group's real mean. A group whose every real record is in the initial selection (a class the patient has once
    or twice) starts at the optimum: the gradient is zero and those records go up verbatim. Every other uploaded
    signal differs from every real record (of any patient)."""
    run, _ = distilled
    real = np.concatenate([c.train.x.numpy() for c in study.clients])
    moved = 0
    for c in study.clients:
        up = _uploads(run)[c.partition]["x"]
        mine = c.train.x.numpy()
        diff = np.abs(up[:, None] - real[None]).reshape(len(up), len(real), -1).max(axis=2)
        verbatim = {int(np.flatnonzero(row == 0)[0]) for row in diff if (row == 0).any()}  # rows of `real`
        moved += int((diff > 0).all(axis=1).sum())
        groups = _groups(c.train)
        offset = sum(len(o.train) for o in study.clients if o.partition < c.partition)
        copied = {offset + i for g in range(groups.shape[1])
                  if groups[:, g].any() and all(any(np.array_equal(mine[i], u) for u in up) for i in np.flatnonzero(groups[:, g]))
                  for i in np.flatnonzero(groups[:, g])}
        assert verbatim <= copied, (c.id, sorted(verbatim - copied))
    assert moved > 0  # distillation did change the rest


def test_with_no_iterations_the_upload_is_the_real_selection(control, study):
    run, _ = control
    for c in study.clients:
        up = _uploads(run)[c.partition]["x"]
        real = c.train.x.numpy()
        for rec in up:
            assert any(np.array_equal(rec, r) for r in real)


# ----------------------------------------------------------------------------------------------- the attacks
def _metric(frame: pd.DataFrame, attack: str, metric: str) -> pd.Series:
    return frame[(frame["attack"] == attack) & (frame["metric"] == metric)]["value"]


def _reference_reid(folder, uploads: dict[int, dict[str, np.ndarray]], study) -> float:
    """Independent reference: the share of uploaded records whose nearest record in the whole cohort (mean
    per-lead Pearson r, computed here with numpy) is one of the uploading patient's own records."""
    cohort = np.concatenate([c.train.x.numpy() for c in study.clients])
    owner = np.concatenate([[c.partition] * len(c.train) for c in study.clients])
    hits = []
    for pid, up in uploads.items():
        a = up["x"].astype(np.float64)
        a = a - a.mean(1, keepdims=True)
        b = cohort.astype(np.float64) - cohort.mean(1, keepdims=True)
        num = np.einsum("ilk,jlk->ijk", a, b)
        den = np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None]
        sims = np.nanmean(num / np.where(den > 0, den, np.nan), axis=2)
        hits += list(owner[np.argmax(sims, axis=1)] == pid)
    return float(np.mean(hits))


def test_the_attack_reidentifies_the_undistilled_control(control, study):
    run, folder = control
    report = attack_run_report(folder, BUDGET)
    frame = report.frame
    assert set(frame[frame["attack"] == "distilled"]["threat_model"]) == {"distilled-custodian"}
    # the upload is real records: the nearest-record match finds each of them, and the reference agrees
    assert (_metric(frame, "distilled", "r") > 0.999).all()
    assert (_metric(frame, "distilled", "reid_top1") == 1.0).all()
    assert _reference_reid(folder, _uploads(run), study) == 1.0
    # every selected record is a member found exactly: membership inference on the set beats chance
    auc = _metric(frame, "mi-nn@distilled-set", "mi_auc")
    assert len(auc) == len(study.clients) and (auc > 0.6).all()


def test_the_attack_scores_a_distilled_set_against_the_nulls(distilled, study):
    run, folder = distilled
    report = attack_run_report(folder, BUDGET)
    frame = report.frame
    for metric in ("r", "null_r", "reid_top1", "reid_null", "presence_f1", "null_presence_f1"):
        assert np.isfinite(_metric(frame, "distilled", metric)).all(), metric
    assert len(_metric(frame, "distilled", "r")) == len(study.clients)
    # the reid score agrees with the independent reference (the scorer pairs, then asks the whole cohort)
    units = report.units
    reid = units[(units["attack"] == "distilled") & (units["quantity"] == "reid_patient")]["value"].mean()
    assert reid == pytest.approx(_reference_reid(folder, _uploads(run), study))
    # membership: against the set itself, and against the model trained on the union (each lost device)
    assert set(frame[frame["attack"] == "mi-nn@distilled-set"]["client"]) == {c.id for c in study.clients}
    assert "device-lost" in set(frame["threat_model"])
    assert {"waveform_r", "reid_record", "reid_patient", "labels_presence_f1"} <= set(
        units[units["attack"] == "distilled"]["quantity"])


def test_nearest_similarity_is_the_best_match():
    rng = np.random.default_rng(0)
    records = rng.normal(size=(3, 64, 2))
    cands = np.concatenate([records[:1], rng.normal(size=(2, 64, 2))])
    s = nearest_similarity(cands, records)
    assert s[0] == pytest.approx(1.0) and (s[1:] < 0.9).all()
    assert np.allclose(s, similarity_matrix(cands, records).max(1))


# ----------------------------------------------------------------------------------------------- end to end
def test_simulate_runs_and_attacks_it(root, study, tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    result = CliRunner().invoke(app, ["simulate", str(cfg), "-o", str(tmp_path / "runs"), "--name", "d",
                                      "--schemes", "distill-share"], env={"MUPRIV_CACHE_DIR": str(root / "cache")})
    assert result.exit_code == 0, result.output
    (run_dir,) = list((tmp_path / "runs").iterdir())
    results = pd.read_csv(run_dir / "results.csv")
    assert set(results["scheme"]) == {"distill-share"}
    assert (results[results["metric"] == "bytes_up"]["value"] > 0).all()
    attacks = pd.read_csv(run_dir / "attacks.csv")
    assert {"distilled", "mi-nn@distilled-set"} <= set(attacks[attacks["scheme"] == "distill-share"]["attack"])
    leakage = pd.read_csv(run_dir / "leakage.csv")
    assert "distill-share" in set(leakage["scheme"])
