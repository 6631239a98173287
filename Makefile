# Two commands for a fresh machine (Python >= 3.10 with venv; nothing else set up):
#   make demo   installs jaxplain in .venv and explains the shipped digits CNN with five
#               methods: the comparison grid and the metrics table land in out/demo
#   make test   installs the test dependencies in .venv, lints with ruff and runs the tests
#               (CI runs this)
# Day to day, `make test-fast` runs the default tier: every test not marked slow.
# `make test-lowest-flax` runs the model and layer tests against the lowest flax that
# pyproject.toml allows (FLAX_FLOOR), in its own environment (CI runs it after make test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := jaxplain evaluate --model checkpoints/digits_cnn --data digits --n 16 --metrics completeness,infidelity,faithfulness_correlation,deletion_auc,insertion_auc,randomisation --out out/demo

FLAX_FLOOR ?= 0.10.0
FLOOR_VENV ?= .venv-lowest-flax

.PHONY: demo test test-fast test-lowest-flax

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/$(DEMO)

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

test-fast: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

test-lowest-flax:
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FLOOR_VENV)/bin/python -m pip install --quiet "flax==$(FLAX_FLOOR)" pytest pytest-xdist scipy -e .
	$(FLOOR_VENV)/bin/python -m pytest -q -m "not slow" tests/test_nnx.py tests/test_layers.py tests/test_model.py
