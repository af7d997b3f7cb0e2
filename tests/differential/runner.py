"""Runs the corpus through a portcullis in front of one real upstream and
judges every answer (invariant.py). Used by the pytest suite and by
report.py."""

from __future__ import annotations

import collections
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import corpus as corpus_mod
import invariant
import upstreams
from harness import Sidecar, Tap, make_credentials, poll, send_raw

WORKERS = int(os.environ.get("DIFF_WORKERS", "6"))


@dataclass
class Run:
    upstream: str
    binary: str
    verdicts: list[invariant.Verdict] = field(default_factory=list)
    baseline_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def violations(self) -> list[invariant.Verdict]:
        return [v for v in self.verdicts if v.violations]

    def spec_mismatches(self) -> list[invariant.Verdict]:
        return [v for v in self.verdicts if v.spec]

    def payloads_with(self, pred) -> int:
        return len({v.payload for v in self.verdicts if pred(v)})

    def summary(self) -> dict:
        out = collections.Counter(v.outcome for v in self.verdicts)
        return {
            "upstream": self.upstream,
            "requests": len(self.verdicts),
            "payloads": len({v.payload for v in self.verdicts}),
            "refused": out["refused"],
            "served": out["served"],
            "upstream_refused": out["upstream-refused"],
            "dropped": out["dropped"],
            "violating_requests": len(self.violations()),
            "violating_payloads": self.payloads_with(lambda v: v.violations),
            "differs_payloads": self.payloads_with(lambda v: v.differs),
            "unforeseen_payloads": self.payloads_with(lambda v: v.unforeseen),
            "spec_mismatch_payloads": self.payloads_with(lambda v: v.spec),
            "seconds": round(self.seconds, 1),
        }


def run_upstream(name: str, payloads: list[corpus_mod.Payload] | None = None, workdir: Path | None = None) -> Run:
    """Starts `name`, a tap and a portcullis in front of it, sends every
    payload with every credential and judges the answers."""
    payloads = payloads if payloads is not None else corpus_mod.corpus()
    t0 = time.monotonic()
    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix=f"portcullis-diff-{name}-")
        workdir = Path(own_tmp.name)
    up = upstreams.make(name, workdir / name)
    tap = sc = None
    try:
        up.start()
        tap = Tap(up.port)
        sc = Sidecar(workdir / "portcullis", f"127.0.0.1:{tap.port}", name=f"portcullis({name})").start()
        run = Run(name, str(sc.bin))
        creds = make_credentials(sc, name)
        values = {
            "HOST": f"127.0.0.1:{sc.proxy_port}",
            "MEMBER": creds.member_token,
            "ADMIN": creds.admin_token,
            "KEY": creds.member_key,
            "MEMBER_ID": creds.member_id,
            "ADMIN_ID": creds.admin_id,
        }

        # baselines: what this upstream sees of each credential on a clean request
        baselines = {}
        base_payload = corpus_mod.Payload("baseline", "baseline", "/public/baseline")
        key_payload = corpus_mod.Payload("baseline", "baseline", "/public/baseline", headers=[("X-API-Key", "{KEY}")])
        for cred in (*corpus_mod.CREDS, "member-key"):
            marker = f"{name}-baseline-{cred}"
            if cred == "member-key":
                a = send_raw(sc.proxy_port, key_payload.build("none", marker, values))
            else:
                a = send_raw(sc.proxy_port, base_payload.build(cred, marker, values))
            recs = poll(lambda: [r for r in up.records() if r.get("case") == marker], 10, f"{name} baseline {cred}")
            wire = tap.index().get(marker, [])
            if a.status != 200 or not wire:
                raise RuntimeError(f"baseline {cred} through {name}: {a.describe()}")
            baselines[cred] = invariant.Baseline(invariant.identity_view(recs[0]["headers"]), invariant.wire_identity(wire[0]))
            whs = {invariant.norm(n): val for n, val in wire[0].headers()}
            if cred != "none" and baselines[cred].identity.get("x-auth-user-id") != [getattr(creds, f"{cred.split('-')[0]}_id")]:
                run.baseline_problems.append(f"{name} sees X-Auth-User-Id {baselines[cred].identity.get('x-auth-user-id')} for the {cred}")
            if cred == "none" and baselines[cred].identity:
                run.baseline_problems.append(f"{name} sees identity headers without a credential: {baselines[cred].identity}")
            if whs.get("x-forwarded-host") != values["HOST"] and cred == "none":
                run.baseline_problems.append(
                    f"SPEC §15: the sidecar sets X-Forwarded-Host to the request's host; on the wire: {whs.get('x-forwarded-host')!r}"
                )

        jobs = []
        for i, p in enumerate(payloads):
            for cred in corpus_mod.CREDS:
                marker = f"{name}-{i}-{cred}"
                jobs.append((p, cred, marker, p.build(cred, marker, values)))

        def send(job):
            p, cred, marker, raw = job
            return send_raw(sc.proxy_port, raw)

        with ThreadPoolExecutor(WORKERS) as ex:
            answers = list(ex.map(send, jobs))

        # Every answer is in, and the tap holds the bytes of every forwarded
        # request (it relays them before the upstream can answer). An upstream
        # may write its log line after answering (nginx): wait for the line of
        # every answer that came from the upstream's report.
        def from_upstream(a) -> bool:
            body = a.json()
            return isinstance(body, dict) and body.get("server") == name

        want = {marker for (_, _, marker, _), a in zip(jobs, answers) if from_upstream(a)}
        records = collections.defaultdict(list)

        def logged():
            records.clear()
            for r in up.records():
                records[r.get("case")].append(r)
            return want <= records.keys()

        poll(logged, 15, f"{name}'s log lines")
        wire = tap.index()
        for (p, cred, marker, raw), a in zip(jobs, answers):
            v = invariant.check(name, p, cred, raw, a, wire.get(marker, []), records.get(marker, []), baselines, creds, values)
            v.raw = redact(raw, values)
            run.verdicts.append(v)
        # a request smuggled inside another must never be served on its own
        for r in records.get("smuggled", []):
            run.baseline_problems.append(f"{name} served a smuggled request: {r.get('path')} {r.get('uri')}")
        run.seconds = time.monotonic() - t0
        return run
    finally:
        if sc:
            sc.stop()
        if tap:
            tap.close()
        up.stop()
        if own_tmp:
            own_tmp.cleanup()


def redact(raw: bytes, values: dict) -> bytes:
    """The raw request with tokens and keys shown by name."""
    for k in ("MEMBER", "ADMIN", "KEY"):
        raw = raw.replace(values[k].encode(), b"{" + k.encode() + b"}")
    return raw


# --------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------


def table(runs: list[Run]) -> str:
    cols = [
        ("upstream", "upstream"),
        ("payloads", "payloads"),
        ("requests", "requests"),
        ("refused", "refused"),
        ("served", "served"),
        ("upstream_refused", "upstream refused"),
        ("dropped", "dropped"),
        ("differs_payloads", "resolved differently"),
        ("unforeseen_payloads", "outside the 4 readings"),
        ("violating_payloads", "violating"),
        ("violating_requests", "(requests)"),
        ("spec_mismatch_payloads", "!= SPEC"),
        ("seconds", "s"),
    ]
    rows = [[str(r.summary()[k]) for k, _ in cols] for r in runs]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, (_, h) in enumerate(cols)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line([h for _, h in cols]), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def show(v: invariant.Verdict, limit: int = 600) -> str:
    raw = v.raw.decode("latin-1")
    if len(raw) > limit:
        raw = raw[:limit] + "…"
    lines = [f"[{v.upstream}] {v.payload} / credential={v.cred}: {v.outcome} ({v.answer[:160]})"]
    for why in v.violations:
        lines.append(f"    violation: {why}")
    if v.spec:
        lines.append(f"    {v.spec}")
    if v.differs or v.unforeseen:
        lines.append(f"    area: sidecar {v.sidecar_area}, {v.upstream} {v.upstream_area} (forwarded {v.wire_target})")
    lines.append(f"    raw: {raw!r}")
    return "\n".join(lines)


def details(runs: list[Run], what: str = "violations", limit: int = 40) -> str:
    out = []
    for r in runs:
        for p in r.baseline_problems:
            out.append(f"[{r.upstream}] {p}")
        items = r.violations() if what == "violations" else r.spec_mismatches()
        seen = set()
        for v in items:
            if (v.payload, v.cred) in seen:
                continue
            seen.add((v.payload, v.cred))
            if len(seen) > limit:
                out.append(f"[{r.upstream}] … {len(items) - limit} more")
                break
            out.append(show(v))
    return "\n".join(out)
