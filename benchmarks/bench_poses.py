"""Pose extraction on the 18 real Market crops: ms per crop and PCKh against their reference keypoints.

Runs a backend (default mediapipe) through the extraction loop (`reidaug.pose.extract_poses`) --repeat times
and prints JSON {backend, crops, ms_per_crop (best run, wall clock), ms_per_crop_runs, cpu_ms_per_crop,
setup_seconds, pckh, correct, total, scored_images, no_pose, threads}. Acceptance: PCKh >= 0.75 on real crops.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = Path(os.environ.get("REIDAUG_SHARED", ROOT.parent / "shared")) / "data/market1501-samples"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--images", type=Path, default=DEFAULT, help="crops with an annotation.csv of reference keypoints"
    )
    ap.add_argument("--backend", default="mediapipe")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    args = ap.parse_args()
    ref_csv = args.images / "annotation.csv"
    if not ref_csv.is_file():
        print(f"bench_poses: {ref_csv} not found (set REIDAUG_SHARED)", file=sys.stderr)
        return 2

    from reidaug.config import load_config
    from reidaug.data.keypoints import read_annotations
    from reidaug.errors import ReidaugError
    from reidaug.metrics.pckh import pckh_annotations
    from reidaug.pose.base import PoseConfig, build_backend, extract_poses

    cfg = load_config(PoseConfig, None, [f"backend={args.backend}", *args.set])
    t0 = time.perf_counter()
    try:
        backend = build_backend(cfg)
    except ReidaugError as e:
        print(f"bench_poses: {e}", file=sys.stderr)
        return 2
    setup = time.perf_counter() - t0

    runs, cpu, result = [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(max(1, args.repeat)):
            out = Path(tmp) / f"run{i}.csv"
            c0 = time.process_time()
            s = extract_poses(args.images, out, cfg, backend=backend, show_progress=False)
            cpu.append(1000 * (time.process_time() - c0) / max(1, s.extracted))
            runs.append(s.ms_per_image)
            pred = read_annotations(out)
            result = (s, pckh_annotations(pred, read_annotations(ref_csv)))
    s, r = result
    print(json.dumps({
        "backend": s.backend,
        "crops": s.extracted,
        "ms_per_crop": round(min(runs), 2),
        "ms_per_crop_runs": [round(v, 2) for v in runs],
        "cpu_ms_per_crop": round(min(cpu), 2),  # process CPU time: less sensitive to a busy machine
        "setup_seconds": round(setup, 3),
        "pckh": round(r.value, 4),
        "correct": r.correct,
        "total": r.total,
        "scored_images": r.images,
        "no_pose": s.no_pose,
        "threads": cfg.mediapipe.num_threads if cfg.backend == "mediapipe" else None,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
