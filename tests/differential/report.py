#!/usr/bin/env python3
"""Report mode of the differential suite: runs the corpus against every
upstream and prints, per upstream, how many payloads it resolved differently
from the sidecar, how many violate the invariant and how many sidecar
answers differ from SPEC §15; then the violations themselves.

    target/diff-venv/bin/python tests/differential/report.py [--bin PATH]
        [--upstream tomcat --upstream php ...] [--details N] [--spec]
        [--json FILE]

Exit status 0 whatever it finds (the pytest suite is the gate); a counterpart
server that is missing is reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402
import runner  # noqa: E402
import upstreams  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="portcullis binary (default: $PORTCULLIS_BIN or target/release/portcullis)")
    ap.add_argument("--upstream", action="append", choices=upstreams.NAMES, help="only these upstreams")
    ap.add_argument("--details", type=int, default=15, help="violations shown per upstream")
    ap.add_argument("--spec", action="store_true", help="also list the answers that differ from SPEC §15")
    ap.add_argument("--json", help="write the summary as JSON to this file")
    args = ap.parse_args()
    if args.bin:
        os.environ["PORTCULLIS_BIN"] = str(Path(args.bin).resolve())
    payloads = corpus.corpus()
    print(f"corpus: {len(payloads)} payloads x {len(corpus.CREDS)} credentials; binary: {os.environ.get('PORTCULLIS_BIN') or 'target/release/portcullis'}")
    runs = []
    for name in args.upstream or upstreams.NAMES:
        try:
            runs.append(runner.run_upstream(name, payloads))
        except upstreams.Missing as e:
            print(f"!! {name}: SKIPPED, {e}")
        print(f"   {name}: done", flush=True)
    print()
    print(runner.table(runs))
    print()
    print(runner.details(runs, "violations", args.details))
    if args.spec:
        print()
        print(runner.details(runs, "spec", args.details))
    if args.json:
        Path(args.json).write_text(json.dumps([r.summary() for r in runs], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
