# Two commands matter: `make demo` (the main job) and `make test` (the suite).
# Both build .venv from nothing with only Python >= 3.10 and pip on the machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test bench costs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch 2.13.0 first, so the range in pyproject.toml is
	# already met and pip does not pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	# rllib: Ray RLlib for the multi-machine path; Ray pins the Gymnasium release
	# (1.2.2 for Ray 2.60), which pyproject.toml's range admits.
	$(PY) -m pip install --quiet -e ".[dev,rllib]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hffm demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) tests/check_asserts.py tests
	$(PY) -m pytest -q -n 2

costs: $(STAMP)
	$(VENV)/bin/hffm costs --preset paper

bench: $(STAMP)
	$(VENV)/bin/hffm bench network

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
