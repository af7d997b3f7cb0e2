"""Summarises one `hey -o csv` run for bench/paced.sh: prints
`RESULT requests=… ok=… non2xx=… rps=… p50=… p90=… p99=…` (latencies in µs).

    hey_stats.py CSV SECONDS

hey writes one row per answered request (requests that got no answer are
not in the CSV; they show as a lower achieved rate) with the response time
rounded to 0.1 ms (`%4.4f` seconds). Percentiles are therefore interpolated
within that rounding: a row of 0.0003 stands for a time somewhere in
[250, 350) µs, spread evenly, which keeps differences of a few tens of µs
between two runs visible instead of collapsing them onto 100 µs steps.
"""
import sys

path, seconds = sys.argv[1], float(sys.argv[2])
STEP = 100  # µs: hey's rounding
bins = {}
n = ok = 0
with open(path) as f:
    for line in f:
        if not line[:1].isdigit():
            continue  # the header
        cols = line.split(",")
        if len(cols) < 8:
            continue
        n += 1
        if cols[6].startswith("2"):
            ok += 1
        k = round(float(cols[0]) * 1e6 / STEP)
        bins[k] = bins.get(k, 0) + 1


def pct(q):
    """The q-th percentile, interpolated within the bin it falls in."""
    if not n:
        return 0
    want, seen = n * q / 100, 0
    for k in sorted(bins):
        c = bins[k]
        if seen + c >= want:
            lo = max(0.0, (k - 0.5) * STEP)
            hi = (k + 0.5) * STEP
            return lo + (hi - lo) * (want - seen) / c
        seen += c
    return (max(bins) + 0.5) * STEP


print(f"RESULT requests={n} ok={ok} non2xx={n - ok} rps={n / seconds:.1f} "
      f"p50={pct(50):.0f} p90={pct(90):.0f} p99={pct(99):.0f}")
