# Two commands for a fresh machine (Python >= 3.10 with venv; nothing else set up):
#   make demo   installs jaxplain in .venv and explains the shipped digits CNN with five
#               methods: the comparison grid and the metrics table land in out/demo
#   make test   installs the test dependencies in .venv, lints with ruff and runs the tests
#               (CI runs this)
# Day to day, `make test-fast` runs the default tier: every test not marked slow.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := jaxplain evaluate --model checkpoints/digits_cnn --data digits --n 16 --metrics completeness,infidelity,faithfulness_correlation,deletion_auc,insertion_auc,randomisation --out out/demo

.PHONY: demo test test-fast

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
