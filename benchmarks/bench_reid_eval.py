"""Time the Market ranking evaluation at Market-1501 size: ours (vectorised) against torchreid's Python fallback.

A random distance matrix of 3,368 queries x 19,732 gallery images (Market's test split: 751 identities, junk
and distractors included) is ranked by `evaluate_market`; torchreid's `eval_market1501` (what torchreid 0.2.5
runs, its Cython module being absent from the wheel) is timed on `--torchreid-queries` of the queries on the
gallery without junk (torchreid's Market1501 drops it) and extrapolated. Both must agree on those queries.
Prints JSON {ours_seconds, torchreid_seconds_extrapolated, speedup, max_abs_map_diff, ...}. Target: ours < 5 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=int, default=3368)
    ap.add_argument("--gallery", type=int, default=19732)
    ap.add_argument("--torchreid-queries", type=int, default=300, help="0 skips torchreid")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from reidaug.reid._torchreid import reid
    from reidaug.reid.evaluate import evaluate_market

    rng = np.random.default_rng(args.seed)
    ids = rng.permutation(np.arange(1, 1502))[:751]
    q_pids = rng.choice(ids, args.queries)
    g_pids = rng.choice(np.concatenate([ids, [0, -1]]), args.gallery)  # some distractors and junk
    q_cams, g_cams = rng.integers(1, 7, args.queries), rng.integers(1, 7, args.gallery)
    dist = rng.random((args.queries, args.gallery))  # float64: no ties, so both rankings are the same

    t0 = time.perf_counter()
    res = evaluate_market(dist, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    ours = time.perf_counter() - t0
    out = {"queries": args.queries, "gallery": args.gallery, "ours_seconds": round(ours, 3), "mAP": res.mAP}

    n = min(args.torchreid_queries, args.queries)
    if n > 0:
        keep = g_pids != -1
        sub = dist[:n][:, keep]
        t0 = time.perf_counter()
        cmc_ref, map_ref = reid.metrics.rank.eval_market1501(
            sub, q_pids[:n], g_pids[keep], q_cams[:n], g_cams[keep], 50
        )
        theirs = (time.perf_counter() - t0) * args.queries / n
        mine = evaluate_market(dist[:n], q_pids[:n], g_pids, q_cams[:n], g_cams, max_rank=50)
        out.update(
            {
                "torchreid_queries_timed": n,
                "torchreid_seconds_extrapolated": round(theirs, 1),
                "speedup": round(theirs / ours, 1),
                "max_abs_map_diff": abs(mine.mAP - map_ref),
                "max_abs_cmc_diff": float(np.abs(mine.cmc - cmc_ref).max()),
            }
        )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
