"""`mupriv data fetch` against a local server (tests/data_server.py): a good fetch, a corrupt file, a cut transfer,
no server. Never the network."""
import hashlib
import json
import socket

import pytest
from typer.testing import CliRunner

import simulator.data.fetch as fetch_mod
from simulator.cli_data import data_app
from tests.data_server import SAMPLE, FileServer, cinc_files, code15_files

runner = CliRunner()
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"CinC 2021 sample not found at {SAMPLE}")
A1 = "training/cpsc_2018/g1/A0001.mat"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(fetch_mod, "RETRY_PAUSE_S", 0.01)
    monkeypatch.delenv("MUPRIV_DATA_MIRROR", raising=False)


def fetch(out, *args):
    return runner.invoke(data_app, ["fetch", *args, "--out", str(out)])


def data_files(files):
    return {p: b for p, b in files.items() if p != "SHA256SUMS.txt"}


def one_error_line(r):
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and r.output.strip().count("\n") == 0, r.output
    assert "Traceback" not in r.output


@needs_sample
def test_fetch_checks_every_file_writes_manifest_and_licence_and_resumes_nothing_twice(tmp_path):
    files = cinc_files()
    with FileServer(files) as srv:
        r = fetch(tmp_path / "d", "cinc2021", "--subset", "cpsc2018,georgia", "--mirror", srv.url, "--jobs", "2")
        assert r.exit_code == 0, r.output
        assert "CC BY 4.0" in r.output and "Reyna" in r.output and "Perez Alday" in r.output
        man = json.loads((tmp_path / "d/manifest.json").read_text())
        assert set(man["files"]) == set(data_files(files)) and man["selection"] == ["cpsc2018", "georgia"]
        for p, b in data_files(files).items():
            assert (tmp_path / "d" / p).read_bytes() == b
            assert man["files"][p]["sha256"] == hashlib.sha256(b).hexdigest() and man["files"][p]["size"] == len(b)
        licence = (tmp_path / "d/LICENSE.txt").read_text()
        assert "CC BY 4.0" in licence and "Reyna MA" in licence and "Perez Alday EA" in licence
        assert (tmp_path / "d/SHA256SUMS.txt").read_bytes() == files["SHA256SUMS.txt"]
        assert not list((tmp_path / "d").rglob("*.part"))
        n_before = len(srv.requests)
        r = fetch(tmp_path / "d", "cinc2021", "--subset", "cpsc2018,georgia", "--mirror", srv.url)
        assert r.exit_code == 0 and "0 downloaded now" in r.output, r.output
        assert [p for p, _ in srv.requests[n_before:]] == ["SHA256SUMS.txt"]  # only the index, no file again


@needs_sample
def test_a_subset_fetches_only_its_database(tmp_path, monkeypatch):
    with FileServer(cinc_files()) as srv:
        monkeypatch.setenv("MUPRIV_DATA_MIRROR", srv.url)  # the environment variable works like --mirror
        r = fetch(tmp_path / "d", "cinc2021", "--subset", "georgia")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "d/training/cpsc_2018").exists() and len(list((tmp_path / "d/training/georgia").rglob("*.hea"))) == 3


@needs_sample
def test_a_corrupt_file_is_fetched_again_once_then_is_an_error(tmp_path):
    files = cinc_files()
    with FileServer(files) as srv:
        srv.corrupt_once.add(A1)
        r = fetch(tmp_path / "ok", "cinc2021", "--subset", "cpsc2018", "--mirror", srv.url)
        assert r.exit_code == 0, r.output
        assert (tmp_path / "ok" / A1).read_bytes() == files[A1] and len(srv.gets(A1)) == 2
        srv.corrupt.add(A1)
        r = fetch(tmp_path / "bad", "cinc2021", "--subset", "cpsc2018", "--mirror", srv.url, "--jobs", "1")
    one_error_line(r)
    assert "checksum mismatch after 2 downloads" in r.output and f"{srv.url}/{A1}" in r.output
    assert not (tmp_path / "bad" / A1).exists() and not list((tmp_path / "bad").rglob("*.part"))
    assert len(srv.gets(A1)) == 4


@needs_sample
def test_a_cut_download_resumes_with_a_range_request(tmp_path):
    files = cinc_files()
    with FileServer(files) as srv:
        srv.cut[A1] = 50_000
        r = fetch(tmp_path / "d", "cinc2021", "--subset", "cpsc2018", "--mirror", srv.url)
    assert r.exit_code == 0, r.output
    assert srv.gets(A1) == [None, "bytes=50000-"]
    assert (tmp_path / "d" / A1).read_bytes() == files[A1]


@needs_sample
def test_a_busy_server_is_asked_again(tmp_path):
    files = cinc_files()
    with FileServer(files) as srv:
        srv.busy_once.add(A1)
        r = fetch(tmp_path / "d", "cinc2021", "--subset", "cpsc2018", "--mirror", srv.url)
    assert r.exit_code == 0, r.output
    assert len(srv.gets(A1)) == 2
    assert (tmp_path / "d" / A1).read_bytes() == files[A1]


@needs_sample
def test_a_download_cut_every_time_stops_with_the_part_kept_and_a_rerun_finishes_it(tmp_path):
    files = cinc_files()
    with FileServer(files) as srv:
        srv.cut_always[A1] = 0
        srv.cut[A1] = 30_000
        r = fetch(tmp_path / "d", "cinc2021", "--subset", "cpsc2018", "--mirror", srv.url, "--jobs", "1")
        one_error_line(r)
        assert "interrupted 5 times" in r.output and "run the same command again" in r.output
        assert not (tmp_path / "d" / A1).exists()  # nothing under its final name
        assert (tmp_path / "d" / (A1 + ".part")).stat().st_size == 30_000
        del srv.cut_always[A1]
        r = fetch(tmp_path / "d", "cinc2021", "--subset", "cpsc2018", "--mirror", srv.url)
    assert r.exit_code == 0, r.output
    assert srv.gets(A1)[-1] == "bytes=30000-" and (tmp_path / "d" / A1).read_bytes() == files[A1]


def test_no_server_is_one_line_naming_the_url_and_the_way_by_hand(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = fetch(tmp_path / "d", "cinc2021", "--subset", "cpsc2018", "--mirror", f"http://127.0.0.1:{port}")
    one_error_line(r)
    assert f"cannot reach http://127.0.0.1:{port}/SHA256SUMS.txt" in r.output and "fetch by hand" in r.output


@pytest.mark.parametrize("args, words", [
    (["nope"], "unknown database 'nope'"),
    (["cinc2021", "--subset", "mars"], "--subset mars unknown"),
    (["code15"], "give --parts"),
    (["code15", "--parts", "18"], "not a part number"),
])
def test_bad_choices_are_one_line(tmp_path, args, words):
    r = fetch(tmp_path / "d", *args)
    one_error_line(r)
    assert words in r.output and not (tmp_path / "d").exists()


def test_code15_part_is_checked_by_md5_and_unpacked(tmp_path):
    files = code15_files()
    with FileServer(files) as srv:
        srv.cut["exams_part0.zip"] = 1000
        r = fetch(tmp_path / "c", "code15", "--parts", "0", "--mirror", srv.url)
    assert r.exit_code == 0, r.output
    assert "Ribeiro" in r.output and "CC BY 4.0" in r.output
    out = tmp_path / "c"
    assert (out / "exams_part0.hdf5").is_file() and (out / "exams.csv").is_file() and not (out / "exams_part0.zip").exists()
    man = json.loads((out / "manifest.json").read_text())
    rec = man["files"]["exams_part0.hdf5"]
    assert rec["sha256"] == hashlib.sha256((out / "exams_part0.hdf5").read_bytes()).hexdigest()
    assert rec["unpacked_from"] == "exams_part0.zip" and rec["published"].startswith("md5:")
    assert man["files"]["exams.csv"]["size"] == len(files["exams.csv"])
