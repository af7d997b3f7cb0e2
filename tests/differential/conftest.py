"""Fixtures of the differential suite (see README.md beside this file)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import runner  # noqa: E402
import upstreams  # noqa: E402

REPORT_ONLY = bool(os.environ.get("DIFF_REPORT"))
_RUNS: dict[str, "runner.Run"] = {}
_MISSING: list[str] = []


def _missing(what: str):
    msg = f"!!! DIFFERENTIAL SUITE: {what}"
    if harness.in_ci():
        pytest.fail(f"{msg} (CI is set: a missing counterpart fails the run)", pytrace=False)
    if what not in _MISSING:
        _MISSING.append(what)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def counterpart_missing():
    return _missing


@pytest.fixture(scope="session")
def require_binary():
    b = harness.portcullis_bin()
    if not b.is_file():
        # never a silent pass: without the binary nothing was tested
        pytest.fail(f"portcullis binary {b} not found (cargo build --release --locked, or set PORTCULLIS_BIN)", pytrace=False)
    return b


@pytest.fixture(scope="session")
def upstream_run(require_binary, tmp_path_factory):
    """The corpus run through portcullis in front of one upstream, once per session."""

    def get(name: str) -> "runner.Run":
        if name not in _RUNS:
            try:
                _RUNS[name] = runner.run_upstream(name, workdir=tmp_path_factory.mktemp(f"diff-{name}"))
            except upstreams.Missing as e:
                _missing(f"{name}: {e}")
        return _RUNS[name]

    return get


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    if _MISSING:
        tr.section("differential: COUNTERPARTS MISSING, THEIR TESTS SKIPPED", red=True, bold=True)
        for what in _MISSING:
            tr.write_line(f"!!! {what}", red=True, bold=True)
        tr.write_line("(with CI set these are failures)")
    if not _RUNS:
        return
    runs = [_RUNS[n] for n in upstreams.NAMES if n in _RUNS]
    tr.section("differential: per upstream")
    tr.write_line(f"binary: {harness.portcullis_bin()}")
    for line in runner.table(runs).splitlines():
        tr.write_line(line)
    if REPORT_ONLY or any(r.violations() or r.baseline_problems for r in runs):
        tr.section("differential: violations (first per upstream)")
        for line in runner.details(runs, "violations", 12 if not REPORT_ONLY else 40).splitlines():
            tr.write_line(line)
