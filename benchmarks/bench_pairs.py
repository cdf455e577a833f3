"""Time `reidaug pairs` on the real Market train annotations: read the CSV + build the pairs (target < 3 s).

Prints JSON {pairs, seconds, read_seconds, pairs_seconds, cli_seconds}: `seconds` is the best of --repeat
in-process runs, `cli_seconds` one whole `python -m reidaug pairs` process (imports and CSV writing included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = Path(os.environ.get("REIDAUG_SHARED", ROOT.parent / "shared")) / "data/market1501-keypoints"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--annotations", type=Path, default=DEFAULT / "market-annotation-train.csv")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not args.annotations.is_file():
        print(
            f"bench_pairs: annotation file {args.annotations} not found (set REIDAUG_SHARED)", file=sys.stderr
        )
        return 2

    from reidaug.data.keypoints import read_annotations
    from reidaug.data.pairs import make_pairs

    best = None
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        ann = read_annotations(args.annotations)
        t1 = time.perf_counter()
        df = make_pairs(ann)
        t2 = time.perf_counter()
        if best is None or t2 - t0 < best[0]:
            best = (t2 - t0, t1 - t0, t2 - t1)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "reidaug",
            "pairs",
            "-a",
            str(args.annotations),
            "-o",
            f"{tmp}/pairs.csv",
        ]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        cli = time.perf_counter() - t0
        if r.returncode != 0:
            print(f"bench_pairs: reidaug pairs failed: {r.stderr.strip()}", file=sys.stderr)
            return 1
        cli_pairs = sum(1 for _ in open(f"{tmp}/pairs.csv")) - 1
    print(json.dumps({"pairs": len(df), "cli_pairs": cli_pairs, "seconds": round(best[0], 3),
                      "read_seconds": round(best[1], 3), "pairs_seconds": round(best[2], 3),
                      "cli_seconds": round(cli, 3), "target_seconds": 3.0}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
