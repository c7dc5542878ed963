# Two entry points for a new user: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export FLWR_TELEMETRY_ENABLED := 0

.PHONY: setup demo test test-ray bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned exactly, so nothing can pull a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	# The whole comparison on the synthetic cohort: pretrain once, every scheme, attacks, report.
	$(VENV)/bin/mupriv simulate configs/quickstart.toml --name demo

test: setup
	$(PY) -m pytest -q

test-ray: setup
	# Ray is an extra (~1.6 GB per run): install it, then run only the tests marked `ray`
	# (every scheme inline vs Ray, tests/test_engine_ray_parity.py: 3.5-5 min on 2 cores, 2.6 GiB).
	$(PIP) install -q -c constraints.txt -e ".[ray]"
	$(PY) -m pytest -q -m ray

bench: setup
	$(PY) bench/bench_model.py

clean:
	rm -rf $(VENV) .mupriv-cache
