"""The differential suite: the corpus through portcullis in front of each
real upstream; the invariant (invariant.py) must hold for every payload and
credential, and the sidecar's answers must be SPEC §15's (oracle.py).

DIFF_REPORT=1 turns the failures into a report (the table and the
violations are printed at the end either way).
"""

from __future__ import annotations

import pytest

import corpus
import oracle
import runner
import upstreams
from conftest import REPORT_ONLY


def _gate(problems: list[str], what: str):
    if problems and not REPORT_ONLY:
        pytest.fail(f"{len(problems)} {what}:\n" + "\n".join(problems[:60]), pytrace=False)


def test_corpus_has_at_least_200_payloads_including_the_issue_14_cases():
    c = corpus.corpus()
    assert len(c) >= 200, len(c)
    ids = {p.id for p in c}
    assert len(ids) == len(c)
    targets = {p.target for p in c}
    for t in ("/public/..;/admin-area/x", "/ADMIN-AREA/x", "/%41dmin-area/x", "/PUBLIC/x", "/a/;x/b", "/public/%C0%AE%C0%AE/admin-area/x"):
        assert t in targets, t
    groups = {p.group for p in c}
    assert {"path", "identity", "credential", "forwarding", "connection", "framing"} <= groups


@pytest.mark.parametrize(
    "target,cred,want",
    [
        # SPEC §15's own examples
        ("/public/..;/admin", "none", 400),
        ("/a/;x/b", "member", 400),
        ("/ADMIN-AREA/x", "member", 403),
        ("/ADMIN-AREA/x", "admin", 200),
        ("/PUBLIC/x", "none", 401),
        ("/PUBLIC/x", "member", 200),
        ("/public/%C0%AE%C0%AE/x", "admin", 400),
        ("/public/a%5Cb", "admin", 400),
        ("/public/a\\b", "admin", 400),
        ("/public/%2e%2e/admin-area/x", "member", 403),
        ("/public/../admin", "none", 401),
        ("/public/x", "none", 200),
        ("http://h/admin-area/x", "member", 403),
    ],
)
def test_oracle_reads_spec_examples(target, cred, want):
    assert oracle.expected_for_path(target, cred) == want


@pytest.mark.parametrize("name", upstreams.NAMES)
def test_invariant_holds(upstream_run, name):
    run = upstream_run(name)
    problems = [f"[{name}] {p}" for p in run.baseline_problems]
    problems += [runner.show(v) for v in run.violations()]
    _gate(problems, f"violations of the invariant through {name}")


@pytest.mark.parametrize("name", upstreams.NAMES)
def test_sidecar_answers_as_spec_15_says(upstream_run, name):
    run = upstream_run(name)
    _gate([runner.show(v) for v in run.spec_mismatches()], f"answers differing from SPEC §15 through {name}")
