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

.PHONY: build demo test bench bench-throughput clean-runs

build:
	$(CARGO) build $(PROFILE) --workspace --bins

demo: build
	$(BIN)/sweep-coordinator --config configs/quickstart --local-workers 2 --exit-when-done

test:
	$(CARGO) test $(PROFILE) --workspace

# Training throughput against PyTorch itself (see BENCHMARKS.md).
bench-throughput: build
	PYTHONPATH=$(dir $(LIBTORCH)) $(BIN)/sweepctl bench --model fc
	PYTHONPATH=$(dir $(LIBTORCH)) $(BIN)/sweepctl bench --model cnn

clean-runs:
	rm -rf runs
