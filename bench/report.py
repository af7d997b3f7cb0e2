"""Turns bench/run.sh's per-round results into the medians, the ratios and
the targets of issue 8; prints them and writes BENCHMARKS.md."""
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

rows = {}
with open(args.results) as f:
    for r in csv.DictReader(f, delimiter="\t"):
        rows.setdefault(r["case"], []).append(r)


def med(case, key):
    return statistics.median(float(r[key]) for r in rows[case])


def rps(case):
    return statistics.median(float(r["requests"]) / float(r["seconds"]) for r in rows[case])


m = {}
for case in LABELS:
    if case not in rows:
        sys.exit(f"no results for {case}")
    m[case] = dict(
        rps=rps(case), p50=med(case, "p50"), p99=med(case, "p99"), p999=med(case, "p999"),
        cpu=med(case, "cpu_us"), logins=med(case, "logins"),
        errs=sum(int(r["non2xx"]) + int(r["errors"]) for r in rows[case]),
    )

c = lambda n: m[next(k for k in m if k.startswith(f"{n}_"))]
name = lambda n: next(k for k in m if k.startswith(f"{n}_"))


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
    "| case | requests/s | p50 | p99 | p99.9 | server CPU µs/request | vs case 2 rps | vs case 2 CPU |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]
for case, label in LABELS.items():
    x = m[case]
    extra = f" ({x['logins']:.0f} logins/s)" if case.startswith("8_") else ""
    lines.append(
        f"| {label}{extra} | {x['rps']:,.0f} | {us(x['p50'])} | {us(x['p99'])} | {us(x['p999'])} "
        f"| {x['cpu']:.1f} | {x['rps'] / c(2)['rps']:.2f}× | {x['cpu'] / c(2)['cpu']:.2f}× |"
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
  pingora proxy) before and after,
  divided by the requests wrk completed. The shared upstream's own CPU
  (case 1) is not in cases 2–8.
- Case 7: every request carries a different EdDSA access token
  (`bench/wrk/tokens.lua`, tokens minted up front by rotating a refresh
  token); median JWT cache miss ratio during case 7:
  {(statistics.median(permille) / 10 if permille else float('nan')):.1f} %.
- Case 8: `wrk -c{args.login_connections}` of `POST /auth/login` (argon2id
  each) runs alongside case 5's load; logins/s counts 2xx answers only;
  its p99 is compared with case 5's (idle) p99.
- Whole run: {args.elapsed} s. Reproduce: `cargo build --release && bench/run.sh`
  (`ROUNDS`, `DURATION`, `CONNECTIONS`, `THREADS`, `PORTCULLIS_BIN` override the defaults).

## Results

{table}

## Targets

{ttable}

Reference: {reference}
"""
if errors:
    out += f"\nNon-2xx answers or socket errors (summed over rounds): {errors}\n"
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
