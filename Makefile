# `make demo` and `make test` each create or refresh .venv, always installing
# with -c constraints.txt so that torch stays the CPU build on disk.
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/python -m pip
PIPFLAGS := -q -c constraints.txt
STAMP := $(VENV)/.installed

.PHONY: demo test install install-dev clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install $(PIPFLAGS) --upgrade pip
	$(PIP) install $(PIPFLAGS) "torch==2.13.0+cpu" numpy
	$(PIP) install $(PIPFLAGS) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/deepstrata fit --data digits --out runs/demo --overwrite

test: $(STAMP)
	$(VENV)/bin/lint-imports
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) runs build src/*.egg-info
