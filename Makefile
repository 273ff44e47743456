# Two entry points (README): `make repro` runs the pipeline, `make test` type-checks
# (mypy, configured in pyproject.toml) and runs the tests.
# Both create .venv on first use. torch is pinned to 2.13.0 so a CPU machine gets the CPU
# build; a GPU user installs a CUDA build of torch 2.13.0 into .venv first (README).
VENV := .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: setup repro test bench clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

repro: setup
	dvc repro

test: setup
	mypy
	pytest

# speed, not correctness: every model's throughput, then the whole pipeline from a clean cache
bench: setup
	dvc repro neighbors
	python benchmarks/throughput.py
	python benchmarks/pipeline.py

clean-venv:
	rm -rf $(VENV)
