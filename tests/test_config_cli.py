"""`mupriv config explain | show | check`, the help text behind them, docs/config.md, and every shipped config."""
import dataclasses
import re
import tomllib
from pathlib import Path
from typing import get_type_hints

import pytest
from typer.testing import CliRunner

from simulator.cli import app
from simulator.cli_config import explain_markdown
from simulator.config import RunConfig, TrainConfig, load_config, parse_config
from simulator.config_docs import all_sections, config_sections, lookup

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.toml"))
runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["config", *args])


def _keys(cls: type = RunConfig, prefix: str = ""):
    """(dotted TOML name, field) for every key of the run config, walking dataclass-typed fields as sections."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield prefix + f.metadata.get("toml_key", f.name), f


def test_every_config_field_has_help():
    missing = [path for path, f in _keys() if not f.metadata.get("help", "").strip()]
    assert not missing, (f"config fields without help: {missing}; declare them as "
                         'field(default=..., metadata={"help": "one line"}) (see simulator/config.py)')


def test_every_section_has_a_description():
    undocumented = [s.name for s in config_sections() if s.name and not s.help]
    assert not undocumented, f"config sections without a docstring: {undocumented}"


def test_every_scheme_parameter_has_help():
    missing = [k.path for s in all_sections() if s.name.startswith("schemes.") for k in s.keys if not k.help.strip()]
    assert not missing, f"scheme parameters without help (baselines.registry.param): {missing}"


def test_explain_lists_every_section_and_key():
    r = _run("explain")
    assert r.exit_code == 0, r.output
    hints = get_type_hints(RunConfig)
    for name in (f.name for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(hints[f.name])):
        assert f"\n[{name}]  " in r.output
    lines = r.output.splitlines()
    for path, f in _keys():
        line = next((ln for ln in lines if ln.split() and ln.split()[0] == path), None)
        assert line is not None, f"{path} missing from `mupriv config explain`"
        assert f.metadata["help"] in line
    for scheme in ("mu-ft", "fedprox", "dp-fedavg", "secagg-fedavg"):
        assert f"[schemes.{scheme}]" in r.output
    assert "schemes.dp-fedavg.noise_multiplier" in r.output


def test_explain_one_key():
    r = _run("explain", "train.lr")
    assert r.exit_code == 0, r.output
    help_ = next(f for f in dataclasses.fields(TrainConfig) if f.name == "lr").metadata["help"]
    assert r.output.splitlines() == [f"train.lr  float  0.003  {help_} (allowed: (0, inf))"]  # its range too


def test_explain_one_section_and_one_scheme():
    r = _run("explain", "cohort")
    assert r.exit_code == 0
    assert r.output.startswith("[cohort]  ") and "cohort.split" in r.output and "train.lr" not in r.output
    r = _run("explain", "schemes.fedprox")
    assert r.exit_code == 0
    assert "schemes.fedprox.mu" in r.output and "proximal term weight" in r.output and "dp-fedavg" not in r.output
    assert "(default: federation.rounds)" in r.output


@pytest.mark.parametrize("query, suggestion", [("train.lrr", "train.lr"), ("trian", "train"), ("schemes.fedprx", "schemes.fedprox"),
                                               ("schemes.dp-fedavg.noise_mult", "schemes.dp-fedavg.noise_multiplier")])
def test_explain_unknown_suggests_closest(query, suggestion):
    r = _run("explain", query)
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and r.output.startswith("error: ")
    assert f"did you mean {suggestion!r}" in r.output
    assert "Traceback" not in r.output


def test_show_round_trips(tmp_path):
    for config in (ROOT / "configs" / "quickstart.toml", ROOT / "configs" / "real-sample.toml"):
        want = load_config(config)
        for flag in ("--comments", "--no-comments"):
            r = _run("show", str(config), flag)
            assert r.exit_code == 0, r.output
            assert parse_config(tomllib.loads(r.output)).hash() == want.hash()
    r = _run("show")
    assert r.exit_code == 0
    assert parse_config(tomllib.loads(r.output)).hash() == RunConfig().hash()
    assert re.search(r"^lr = 0\.003 +# \S", r.output, re.M)  # each key followed by its help
    r = _run("show", str(ROOT / "configs" / "quickstart.toml"), "--data", "x.npz", "--no-comments")
    assert tomllib.loads(r.output)["data"]["path"] == "x.npz"


def test_show_comments_out_default_scheme_tables():
    """Scheme parameters at their defaults stay comments: an empty [schemes.x] table would change the hash."""
    r = _run("show", str(ROOT / "configs" / "quickstart.toml"))
    assert "\n[schemes.fedprox]\n" in r.output and "\n# [schemes.mu-ft]  (every parameter at its default)\n" in r.output
    assert "# rounds = 12" in r.output  # derived: the matched budget gives 12 rounds of 1 epoch
    assert set(tomllib.loads(r.output)["schemes"]) == {"run", "fedprox", "dp-fedavg"}


def test_check_ok_and_error(tmp_path):
    good = ROOT / "configs" / "quickstart.toml"
    r = _run("check", str(good))
    assert r.exit_code == 0
    assert r.output == f"ok: {good} (hash {load_config(good).hash()})\n"
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nful_epochs = 3\n")
    r = _run("check", str(bad))
    assert r.exit_code == 2
    assert r.output == f"error: {bad}: unknown config key 'train.ful_epochs'; did you mean 'train.full_epochs'?\n"
    r = _run("check", str(good), str(tmp_path / "missing.toml"))
    assert r.exit_code == 2 and r.output.startswith("ok: ") and "config file not found" in r.output


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_shipped_config_validates(path):
    cfg = load_config(path)
    for name in cfg.schemes.run:
        cfg.scheme_params(name)


def test_shipped_configs_cover_the_design():
    names = {str(p.relative_to(ROOT / "configs")) for p in CONFIGS}
    assert {"quickstart.toml", "real-sample.toml", "paper.toml"} <= names
    assert "dp-sweep.toml" in names


def test_dp_sweep_is_one_config_with_a_noise_axis():
    from simulator.config import check_axes
    from simulator.config_grid import config_axes

    path = ROOT / "configs" / "dp-sweep.toml"
    (axis,) = config_axes(path)
    assert axis.key == "schemes.dp-fedavg.noise_multiplier" and axis.values == (0.5, 1.0, 2.0, 4.0)
    points = check_axes(load_config(path), (axis,))
    assert [p.scheme_params("dp-fedavg").noise_multiplier for p in points] == [0.5, 1.0, 2.0, 4.0]
    assert set(points[0].schemes.run) == {"mu-ft", "fedavg", "dp-fedavg"}


def test_paper_config_matches_the_paper():
    cfg = load_config(ROOT / "configs" / "paper.toml")
    assert (cfg.model.d_model, cfg.model.d_state, cfg.data.length, cfg.data.fs) == (128, 64, 4096, 400.0)
    assert (cfg.train.full_epochs, cfg.train.mu_epochs, cfg.train.position, cfg.train.alpha) == (150, 150, "end", 0.8)
    assert cfg.train.self_distill and cfg.finetune.epochs == 50


def test_paper_real_is_the_papers_setting_on_real_data():
    """configs/paper-real.toml: the paper's model, input and pretraining, the server on CODE-15%, the clients from
    CPSC 2018 with the balanced fine-tuning subset (4 clients x 50 = the paper's 200 per class)."""
    path = ROOT / "configs" / "paper-real.toml"
    assert _run("check", str(path)).exit_code == 0
    cfg, paper = load_config(path), load_config(ROOT / "configs" / "paper.toml")
    for section in ("model", "train", "finetune"):
        assert getattr(cfg, section) == getattr(paper, section), section
    assert (cfg.data.fs, cfg.data.length, cfg.data.scale) == (paper.data.fs, paper.data.length, paper.data.scale)
    assert "code15" in cfg.data.path and "cpsc2018" in cfg.cohort.client_data
    assert cfg.cohort.clients * cfg.cohort.balanced_per_class == 200


def test_study_config_is_the_fair_study():
    """configs/study.toml: enough patients, seeds and test positives to decide, matched budgets, attacks on."""
    path = ROOT / "configs" / "study.toml"
    r = _run("check", str(path))
    assert r.exit_code == 0 and r.output == f"ok: {path} (hash {load_config(path).hash()})\n"
    cfg, quick = load_config(path), load_config(ROOT / "configs" / "quickstart.toml")
    assert cfg.cohort.clients >= 16 and cfg.seeds >= 5 and cfg.federation.budget == "matched"
    assert cfg.cohort.test_records >= 100 and cfg.cohort.test_min_positives >= 5
    assert cfg.attacks.enabled and cfg.attacks.budget == "quick"
    for section in ("model", "data", "train", "finetune", "schemes"):
        assert getattr(cfg, section) == getattr(quick, section), section
    assert dataclasses.replace(cfg.cohort, clients=quick.cohort.clients, test_min_positives=0) == quick.cohort


def test_docs_config_md_is_current():
    """docs/config.md embeds `mupriv config explain --markdown` between markers; regenerate it when a key changes."""
    text = (ROOT / "docs" / "config.md").read_text()
    m = re.search(r"<!-- BEGIN mupriv config explain --markdown -->\n(.*)<!-- END mupriv config explain --markdown -->", text, re.S)
    assert m, "docs/config.md lost its generated block markers"
    assert m.group(1) == explain_markdown(lookup("")), (
        "docs/config.md is out of date: replace the block between the markers with `mupriv config explain --markdown`")


def test_cinc_sites_is_one_client_per_source_database():
    """`mupriv config check` passes (test_shipped_config_validates) and the config is what its name says: hospital
    clients, one per CinC database, the server on the largest, at a length that holds a whole 10-s record."""
    cfg = load_config(ROOT / "configs" / "cinc-sites.toml")
    assert cfg.cohort.split == "source" and cfg.cohort.clients == 5
    assert cfg.data.fs * 10 <= cfg.data.length and not cfg.attacks.enabled
    assert _run("check", str(ROOT / "configs" / "cinc-sites.toml")).exit_code == 0
