# The two commands of the README: `make demo` runs the quickstart sweep on this
# machine, `make test` runs every test. Both set up libtorch on first use
# (scripts/libtorch.sh) and reuse it, and the build, afterwards.
SHELL := /bin/bash
.DEFAULT_GOAL := demo

# Resolved once per make invocation; honours LIBTORCH and LIBTORCH_USE_PYTORCH.
LIBTORCH := $(shell scripts/libtorch.sh)
ifeq ($(LIBTORCH),)
$(error could not set up libtorch: see the messages above from scripts/libtorch.sh)
endif
export LIBTORCH

CARGO ?= cargo
# One profile for everything, so libtorch's C++ glue is compiled only once.
PROFILE := --release
BIN := target/release

.PHONY: build demo test lint test-deps images bench bench-throughput clean-runs dist

build:
	$(CARGO) build $(PROFILE) --workspace --bins

demo: build
	$(BIN)/sweep-coordinator --config configs/quickstart --local-workers 2 --exit-when-done

# Builds the binaries first: the docker-compose e2e test (tests/docker_compose.rs)
# packs them into the image; it skips itself when no Docker engine answers (and
# fails instead under CI=true).
# The fuzz tests (proptest) draw from a fixed seed here so that CI is
# repeatable; explore further with another seed and more cases, e.g.
#   PROPTEST_RNG_SEED=$$RANDOM SWEEP_FUZZ_CASES=100000 make test
PROPTEST_RNG_SEED ?= 20261127
export PROPTEST_RNG_SEED

# First the style (rustfmt, clippy with warnings as errors), then what the tests
# need from the system (scripts/test-deps.sh installs it when it can), then the
# tests. Under CI=true a test that would skip itself fails (crates/testkit).
test: lint test-deps build
	$(CARGO) test $(PROFILE) --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(PROFILE) --workspace --all-targets -- -D warnings

test-deps:
	scripts/test-deps.sh

# The Docker image sweeprun:latest (GPU=1: sweeprun:gpu) and the compose tokens;
# see deploy/README.md. Rebuilds only when the binaries or configs changed.
images: build
	deploy/build-images.sh

# Training throughput against PyTorch itself (see BENCHMARKS.md).
bench-throughput: build
	PYTHONPATH=$(dir $(LIBTORCH)) $(BIN)/sweepctl bench --model fc
	PYTHONPATH=$(dir $(LIBTORCH)) $(BIN)/sweepctl bench --model cnn

clean-runs:
	rm -rf runs

# The installable worker: dist/sweeprun-<version>-py3-none-linux_x86_64.whl, a
# wheel that depends on torch==2.13.0 and runs the release binaries with the
# installed torch's libtorch (see deploy/colab/README.md). Needs patchelf
# (apt-get install patchelf).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
dist: build
	python3 deploy/dist/build-wheel.py --bin-dir $(BIN) --out dist --version $(VERSION) \
		--commit $$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

