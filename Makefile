# imagestore — `make help` lists the targets. `make run` and `make test` set up
# everything they need first (venv, pinned dependencies, Debian packages when
# root, the native extension).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
BUILD := build
CONSTRAINTS := requirements/constraints.txt

DEPS_STAMP := $(VENV)/.deps.stamp
NODE_STAMP := node_modules/.installed.stamp
BUF := node_modules/.bin/buf
PROTOS := $(wildcard protos/imagestore/v1/*.proto)
# The client distribution (client/) holds the generated code; the server its
# descriptor set (for reflection).
GENERATED := client/src/imagestore/v1
NATIVE_STAMP := $(BUILD)/native.stamp
NATIVE_SOURCES := native/imagestore_native.c native/imagestore_native.h native/build_native.py \
	setup.py pyproject.toml client/pyproject.toml
ZLIB_NATIVE := $(BUILD)/zlib/_native.so
ASAN_NATIVE := $(BUILD)/asan/_native.so

# Debian packages: what the native build needs, what the tests use.
BUILD_DEBS := zlib1g-dev libssl-dev
TEST_DEBS := $(BUILD_DEBS) libisal-dev gzip skopeo umoci openssl docker-registry apache2-utils tmux \
	zsh fish systemd postgresql containerd

# Root installs libisal-dev before the first build, so the tests expect ISA-L.
EXPECT_BACKEND := $(shell [ "$$(id -u)" = 0 ] && echo isa-l)
PYTEST := $(PY) -m pytest -p no:cacheprovider
# Fuzzing (tests/fuzz): seconds per harness in `make fuzz`, and in the bounded
# run that `make test` includes (tests/fuzz/test_fuzz.py).
FUZZ_SECONDS ?= 600
CI_FUZZ_SECONDS ?= 20

.PHONY: help
help: ## List the targets
	@on=; off=; if [ -t 1 ]; then on='\033[36m'; off='\033[0m'; fi; \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %s%-14s%s %s\n", on, $$1, off, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: native ## Start the service on the embedded default (SQLite + a local directory)
	$(VENV)/bin/imagestore serve

.PHONY: test
test: native test-debs protos-check $(NODE_STAMP) $(ZLIB_NATIVE) ## Set up what is missing, then run every test
	IMAGESTORE_EXPECT_BACKEND=$(EXPECT_BACKEND) IMAGESTORE_FUZZ_SECONDS=$(CI_FUZZ_SECONDS) $(PYTEST)
	@echo "== native tests again, against the zlib build of the extension"
	IMAGESTORE_TEST_NATIVE=$(ZLIB_NATIVE) IMAGESTORE_EXPECT_BACKEND=zlib \
		$(PYTEST) tests/native -m "not slow" -q
	$(MAKE) sanitize

# Under ASan the resident size includes its quarantine of freed memory, so the
# test that memory stays flat runs on the normal build only (in `make test`).
.PHONY: sanitize
sanitize: native $(ASAN_NATIVE) ## Run the native tests under ASan + UBSan
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:check_initialization_order=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	IMAGESTORE_TEST_NATIVE=$(ASAN_NATIVE) HYPOTHESIS_PROFILE=ci \
		$(PYTEST) tests/native -q \
		--deselect tests/native/test_hashing.py::test_memory_stays_flat_while_streaming_1_gib

.PHONY: fuzz
fuzz: native ## Fuzz each harness (FUZZ=names picks) FUZZ_SECONDS s (600); finds in build/fuzz
	$(PY) -m tests.fuzz.run --seconds $(FUZZ_SECONDS) $(FUZZ)

.PHONY: bench
bench: native test-debs $(ZLIB_NATIVE) ## Benchmarks beside their peers (stdlib, skopeo, floors)
	$(PY) -m tests.bench.bench_native
	IMAGESTORE_TEST_NATIVE=$(ZLIB_NATIVE) $(PY) -m tests.bench.bench_native
	$(PY) -m tests.bench.bench_store
	$(PY) -m tests.bench.bench_api
	$(PY) -m tests.bench.bench_answers
	$(PY) -m tests.bench.bench_clients
	$(PY) -m tests.bench.bench_events
	$(PY) -m tests.bench.bench_registry
	$(PY) -m tests.bench.bench_endpoint
	$(PY) -m tests.bench.bench_pull_through
	$(PY) -m tests.bench.bench_transfer
	$(PY) -m tests.bench.bench_check
	$(PY) -m tests.bench.bench_hostile
	$(PY) -m tests.bench.bench_cli
	$(PY) -m tests.bench.bench_replicas

# The kill trials at length: the replica kills (tests/api/test_replica_kills.py)
# run 30 trials in `make test`; here SOAK_TRIALS (200).
SOAK_TRIALS ?= 200

.PHONY: soak
soak: native test-debs ## SIGKILL trials across replicas, SOAK_TRIALS (200) of them
	IMAGESTORE_SOAK_TRIALS=$(SOAK_TRIALS) $(PYTEST) tests/api/test_replica_kills.py -q

.PHONY: lint
lint: $(DEPS_STAMP) $(NODE_STAMP) ## ruff, mypy --strict, buf lint, buf format, buf breaking
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(MAKE) breaking

# The frozen API: `buf breaking` compares protos/ with the committed baseline, an
# image of the API as released (`buf build`, without comments, which may change),
# under buf.yaml's rule set (FILE; buf.yaml says why). The v1 API is reshaped once
# more before it is frozen: once that reshape lands, `make baseline` takes the
# baseline again (commit it). After that, a change buf breaking refuses belongs in
# a new package (v2).
BASELINE := protos/baseline/imagestore-v1.binpb

.PHONY: breaking
breaking: $(NODE_STAMP) ## Fail when protos/ breaks the committed API baseline (buf breaking)
	$(BUF) breaking --against $(BASELINE)

.PHONY: baseline
baseline: $(NODE_STAMP) ## Take the API baseline again from protos/ (only for an agreed reshape)
	@mkdir -p $(dir $(BASELINE))
	$(BUF) build --exclude-source-info -o $(BASELINE)

# The generated code goes to the client distribution; the descriptor set of
# protos/ with its comments (source info) to the server's package, whose
# reflection serves it so that `grpcurl describe` prints the documentation.
# $(1) is the output root of the code, $(2) the descriptor set's path.
DESCRIPTOR_SET := service/imagestore/api/imagestore.binpb
PROTOC = $(PY) -m grpc_tools.protoc -Iprotos --python_out=$(1) --pyi_out=$(1) \
	--grpc_python_out=$(1) --include_source_info --descriptor_set_out=$(2) $(PROTOS)

.PHONY: protos
protos: $(DEPS_STAMP) ## Regenerate client/src/imagestore/v1 and the server's descriptor set
	$(call PROTOC,client/src,$(DESCRIPTOR_SET))

.PHONY: protos-check
protos-check: $(DEPS_STAMP) ## Fail when the committed generated code or descriptor set is stale
	@rm -rf $(BUILD)/protos-check && mkdir -p $(BUILD)/protos-check
	@$(call PROTOC,$(BUILD)/protos-check,$(BUILD)/protos-check/imagestore.binpb)
	@for f in $(BUILD)/protos-check/imagestore/v1/*; do \
		cmp -s $$f $(GENERATED)/$$(basename $$f) || \
			{ echo "stale: $(GENERATED)/$$(basename $$f) (run make protos)"; exit 1; }; \
	done
	@cmp -s $(BUILD)/protos-check/imagestore.binpb $(DESCRIPTOR_SET) || \
		{ echo "stale: $(DESCRIPTOR_SET) (run make protos)"; exit 1; }
	@echo "generated code and descriptor set are up to date"

.PHONY: fmt
fmt: $(DEPS_STAMP) ## Format and auto-fix what ruff can
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

.PHONY: native
native: $(NATIVE_STAMP) ## Build the native extension in place (ISA-L when available)

.PHONY: venv
venv: $(DEPS_STAMP) ## Create .venv with the pinned dependencies

.PHONY: test-debs
test-debs:
	@scripts/ensure-debs $(TEST_DEBS)

.PHONY: clean
clean: ## Remove build output (keeps .venv)
	rm -rf $(BUILD) service/imagestore/*.so service/*.egg-info client/src/*.egg-info .native-build
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

.PHONY: distclean
distclean: clean ## Remove build output and .venv
	rm -rf $(VENV)

$(NODE_STAMP): package.json package-lock.json
	command -v npm >/dev/null || scripts/ensure-debs npm
	npm ci --silent --no-audit --no-fund
	touch $@

$(DEPS_STAMP): requirements/dev.in $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c $(CONSTRAINTS) pip
	$(PIP) install -c $(CONSTRAINTS) -r requirements/dev.in
	touch $@

# The editable install builds imagestore._native in place through cffi's
# setuptools hook, exactly as `pip install .` does.
$(NATIVE_STAMP): $(DEPS_STAMP) $(NATIVE_SOURCES)
	@scripts/ensure-debs $(BUILD_DEBS)
	@scripts/ensure-debs --optional libisal-dev
	$(PIP) install --no-deps --no-build-isolation -e ./client -e .
	@mkdir -p $(BUILD) && touch $@

$(ZLIB_NATIVE): $(DEPS_STAMP) $(NATIVE_SOURCES)
	IMAGESTORE_GZIP_BACKEND=zlib $(PY) native/build_native.py --output $@

$(ASAN_NATIVE): $(DEPS_STAMP) $(NATIVE_SOURCES)
	IMAGESTORE_NATIVE_SANITIZE=1 $(PY) native/build_native.py --output $@
