# Two commands for a fresh machine (Python >= 3.10 with venv; nothing else set up):
#   make demo   installs jaxplain in .venv and explains the shipped digits CNN with five
#               methods: the comparison grid and the metrics table land in out/demo
#   make test   installs the test dependencies in .venv and runs the tests (CI runs this)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := jaxplain evaluate --model checkpoints/digits_cnn --data digits --n 16 --metrics completeness,infidelity,faithfulness_correlation,deletion_auc,insertion_auc,randomisation --out out/demo

.PHONY: demo test

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
	$(BIN)/python -m pytest -q
