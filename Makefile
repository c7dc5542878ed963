# Two entry points for a new user: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export FLWR_TELEMETRY_ENABLED := 0

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned exactly, so nothing can pull a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $@

setup: $(VENV)/.installed

DEMO := runs/demo
demo: setup
	# A synthetic source population and two shifted patients, written as WFDB records.
	$(VENV)/bin/mupriv data synth --out $(DEMO)/data --n 320 --clients 2 --per-client 60 --shift 0.6
	# Server: full training then self-distilled µ-Training on the source records.
	$(VENV)/bin/mupriv train -c configs/quickstart.toml --data $(DEMO)/data/source -o $(DEMO)/pretrained.pt --json $(DEMO)/train.json
	# Device: µ-Fine-Tuning on one patient; forgetting measured on the source records.
	$(VENV)/bin/mupriv finetune -c configs/quickstart.toml --checkpoint $(DEMO)/pretrained.pt --data $(DEMO)/data/client-000 \
		--source-data $(DEMO)/data/source -o $(DEMO)/patient-000.pt --json $(DEMO)/finetune.json

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_model.py

clean:
	rm -rf $(VENV) .mupriv-cache
