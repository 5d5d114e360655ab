# Two commands for a fresh machine (README): `make demo` runs the default pipeline end to end,
# `make test` runs the test suite. Both create .venv with the pinned, tested versions first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Page-fault storms made fresh models 2-3x slower on CPU (shared/NOTES.md); keep freed memory mapped.
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 100000000000
# Idle OpenMP threads sleep instead of spinning: spinning collapses throughput on busy cores.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: venv demo full test test-fast lint clean

$(BIN)/edgekd: requirements/lock.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, from the pinned pair, so no package drags in another torch build
	$(BIN)/pip install -q $$(grep -E '^(torch|torchvision)==' requirements/lock.txt)
	$(BIN)/pip install -q -r requirements/lock.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(BIN)/edgekd

venv: $(BIN)/edgekd

demo: venv  ## the default pipeline (quick preset, ELPV) end to end
	# exit 3 = a quality gate failed: every result is written and the report says which gate;
	# the demo still counts as having run end to end.
	$(BIN)/edgekd run --preset quick --out runs/demo || { rc=$$?; [ $$rc -eq 3 ] && \
	  echo "edgekd: demo finished; a quality gate failed (see runs/demo/report.md)"; [ $$rc -eq 3 ]; }

full: venv  ## the quality preset whose numbers README records
	$(BIN)/edgekd run --preset full --out runs/elpv-full

lint: venv  ## layers (import-linter, see pyproject.toml), ruff lint and format
	$(BIN)/python tools/lint_imports.py
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint  ## lint, then the whole test suite
	$(BIN)/python -m pytest -q

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf runs .pytest_cache
