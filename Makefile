# make repro: set up .venv and run the pipeline; make test: set up .venv and run the tests;
# make extended: the extended study as a DVC experiment; make signs: the sign measurement.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The stages call `python`: put the venv first on PATH for every recipe.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test bench lint clean extended signs

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest

# The extended study: controls and SGD beside Adam, under the holdout protocol, as one DVC
# experiment named "extended" (its params and results land in the workspace, as dvc exp run
# leaves them; `git checkout params.yaml dvc.lock metrics plots` returns to the defaults).
EXTENDED := -S data.protocol=holdout \
	-S '+optimizers.shuffled_adam={base: adam, transform: shuffle}' \
	-S '+optimizers.permuted_adam={base: adam, transform: permute}' \
	-S '+optimizers.sgd={base: sgd, transform: none, kwargs: {momentum: 0.9}}' \
	-S '+optimizers.sorted_sgd={base: sgd, transform: sort, kwargs: {momentum: 0.9}}'

extended: $(STAMP)
	$(BIN)/dvc exp run -n extended $(EXTENDED)

signs: $(STAMP)
	$(BIN)/python scripts/sign_consistency.py

bench: $(STAMP)
	$(BIN)/python benchmarks/step_time.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) dvc_plots
