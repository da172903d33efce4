# talkstream: the two commands are `make run` and `make test`.
# Both create .venv when missing and install the project with its dev extra.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-chaos bench install clean schemas

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -qq -e ".[dev]"  # -qq: errors only (setuptools warns about every editable install)
	touch $(STAMP)

install: $(STAMP)

## run: the main job on the embedded defaults (broker, sandboxes, worker); Ctrl-C stops all
run: $(STAMP)
	$(BIN)/talkstream run

## test: the test suite (unit, integration, end to end, bad input, secrets); not the long chaos runs
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile -m "not chaos"

## test-chaos: the long crash and fault runs (ten kill -9s, a dying second worker, faulty systems)
test-chaos: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile -m chaos

## bench: benchmarks; prints a table and writes bench/results/latest.json
bench: $(STAMP)
	$(BIN)/python -m bench

## schemas: regenerate the JSON Schemas of the topic contracts in schemas/
schemas: $(STAMP)
	$(BIN)/python -m schemas.generate

clean:
	rm -rf $(VENV) .talkstream *.egg-info
