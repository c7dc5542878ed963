"""cohort.client_data (the server on one data set, the clients from another) and cohort.balanced_per_class (the
paper's balanced fine-tuning subset, tested on the rest)."""
import numpy as np
import pytest

from simulator.config import parse_config
from simulator.data.cohort import balanced_subset
from simulator.data.npzio import save_records
from simulator.data.synthetic import synthesize
from simulator.data.preprocess import preprocess_records
from simulator.datasets import load_configured_records, preprocess_config
from simulator.errors import MuprivError
from simulator.study import build_cohort

DATA = {"synthetic_records": 40, "fs": 50.0, "length": 256}


def _rows(records) -> set[bytes]:
    return {x.tobytes() for x in records.signals}


@pytest.fixture
def client_file(tmp_path):
    """A second data set of 90 records at the config's rate and length (an .npz is used as it is)."""
    cfg = parse_config({"data": DATA})
    records = preprocess_records(synthesize(90, seed=7, n_patients=90), preprocess_config(cfg.data))
    return str(save_records(records, tmp_path / "clients.npz")), records


def test_the_server_keeps_its_records_and_the_clients_come_from_the_second_set(client_file):
    path, records = client_file
    cfg = parse_config({"data": DATA, "cohort": {"client_data": path, "clients": 3, "test_fraction": 0.25}})
    cohort = build_cohort(cfg)
    server = load_configured_records(cfg.data, cfg.seed, "")  # data.path "" = synthetic server records
    assert _rows(cohort.source) == _rows(server)
    held = [_rows(c.train) | _rows(c.test) for c in cohort.clients]
    assert len(held) == 3 and set().union(*held) == _rows(records)  # every client record, from the second set only
    assert sum(map(len, held)) == len(records)  # each on one client, on one side
    assert not _rows(cohort.source) & _rows(records)


def test_each_client_trains_on_its_balanced_subset_and_is_tested_on_the_rest(client_file):
    path, records = client_file
    cfg = parse_config({"data": DATA, "cohort": {"client_data": path, "clients": 2, "balanced_per_class": 3}})
    unbalanced = build_cohort(parse_config({"data": DATA, "cohort": {"client_data": path, "clients": 2}})).clients
    for k, (client, before) in enumerate(zip(build_cohort(cfg).clients, unbalanced)):
        both = before.records  # the client's records as the split gave them, before the subset was taken
        assert _rows(client.train) == _rows(balanced_subset(both, 3, seed=cfg.seed + k))
        assert not _rows(client.train) & _rows(client.test) and len(client.train) + len(client.test) == len(both)
        positives = ((client.train.labels > 0.5) & client.train.known).sum(axis=0)
        assert 0 < len(client.train) <= 7 * 3 and np.all(positives >= np.minimum(3, ((both.labels > 0.5) & both.known).sum(axis=0)))


@pytest.mark.parametrize("cohort, words", [
    ({"balanced_per_class": 5}, "cohort.balanced_per_class = 5 selects from real records"),
    ({"client_data": "CLIENTS", "test_records": 12, "test_min_positives": 2}, "cohort.test_min_positives = 2 applies to synthetic clients"),
])
def test_settings_that_need_real_clients_are_one_error(client_file, cohort, words):
    path, _ = client_file
    cohort = {k: (path if v == "CLIENTS" else v) for k, v in cohort.items()}
    with pytest.raises(MuprivError, match=words):
        build_cohort(parse_config({"data": DATA, "cohort": cohort}))
