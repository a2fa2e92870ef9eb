# vggtctl: `make demo` and `make test` work on a fresh machine (they create .venv and install).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU build of torch by default; GPU users: see docs/install.md (TORCH_SPEC='torch==2.13.*' with the CUDA index).
TORCH_SPEC ?= torch==2.13.0
OUT ?= gpu-results

.PHONY: venv demo test test-fast bench gpu-check lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	bash examples/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu" tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu and not slow" tests

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --out benchmarks/results

gpu-check:
	bash benchmarks/gpu_check.sh "$(OUT)"

lint: $(STAMP)
	$(BIN)/ruff check vggtctl tests benchmarks examples
	$(BIN)/ruff format --check vggtctl tests benchmarks examples

clean:
	rm -rf demo_out .pytest_cache
