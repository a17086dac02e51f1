# The two commands (see README): `make demo` and `make test`. Each sets up .venv from scratch when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo demo-proxy test setup bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/python -m pyproxy.demo_mesh

demo-proxy: setup
	$(BIN)/python -m pyproxy.demo

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
