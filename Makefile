# portcullis — build, test and demo entry points.
#
#   make deps    install missing system packages (cmake, python3-venv)
#   make build   release build
#   make demo    build, then run the sidecar with a built-in echo upstream
#   make test    fmt check, clippy, cargo test, supply-chain checks, then the conformance subset
#   make audit   cargo-deny: licenses, bans, sources, advisories (deny.toml)
#   make fmt | clippy | clean
#
# Widen the conformance subset with e.g.
#   make test CONFORMANCE_K='not otp'      (or CONFORMANCE_K='' for all of it)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build
MAKEFLAGS += --no-print-directory

CARGO ?= cargo
CONFORMANCE ?= ../shared/conformance/run.sh
# pytest -k expression selecting the conformance tests the build must pass.
CONFORMANCE_K ?= (register_login or session or tokens_jwks or service or proxy or tenancy) and not otp and not api_key

# sudo only when not root (and only if there is one).
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || command -v sudo)

.PHONY: all deps build demo test audit conformance fmt clippy clean

all: build

# cmake: pingora -> flate2 -> zlib-ng builds with it.
# python3-venv: the conformance suite makes a virtualenv. On Debian,
# `python3 -m venv --help` works without python3-venv (venv lives in
# libpython3.x-stdlib); ensurepip, which `venv` needs, comes only with it.
deps:
	@missing=(); \
	command -v cmake >/dev/null 2>&1 || missing+=(cmake); \
	{ python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' >/dev/null 2>&1; } \
	  || missing+=(python3-venv); \
	if [ "$${#missing[@]}" -gt 0 ]; then \
	  echo "deps: installing $${missing[*]}"; \
	  $(SUDO) apt-get update; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$${missing[@]}"; \
	else \
	  echo "deps: cmake and python3-venv present"; \
	fi

build: deps
	$(CARGO) build --release --locked

demo: build
	./target/release/portcullis demo

test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets --locked -- -D warnings
	$(CARGO) test --release --locked
	@$(MAKE) audit
	@$(MAKE) conformance

# Advisories are skipped with a message when the RustSec database cannot be fetched.
audit:
	bash .ci/supply-chain

# The suite runs ./target/release/portcullis; the build is incremental after
# `cargo test --release` (same profile), so it costs seconds.
conformance:
	@if [ -f "$(CONFORMANCE)" ]; then \
	  $(CARGO) build --release --locked; \
	  echo "conformance: $(CONFORMANCE) -k \"$(CONFORMANCE_K)\""; \
	  bash "$(CONFORMANCE)" $(if $(strip $(CONFORMANCE_K)),-k "$(CONFORMANCE_K)"); \
	else \
	  echo "note: $(CONFORMANCE) not found; conformance suite skipped"; \
	fi

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --release --all-targets --locked -- -D warnings

clean:
	$(CARGO) clean
