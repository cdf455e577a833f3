"""The time of a whole Table 6 run (`reidaug experiment --config experiments/table6`), estimated from the outputs
of bench_train.py, bench_generate.py and bench_reid_train.py (JSON lines files) measured on one device.

The sweep (reidaug/experiment.py): one generator training (the method's default schedule), then for every seed
and portion p < 1 an augmentation generating the (1 - p) N removed images, a re-ID training on M_p^R (p N images)
and one on M_p^A (N images), and for p = 1 one re-ID training on the real set; every cell ends with an evaluation.
N = 12,936 (Market train). Re-ID time per training = epochs x images / train_img_per_s; generation at the
end-to-end rate when bench_generate measured one, else at the model-only rate.

  python benchmarks/table6_estimate.py --train train.jsonl --generate generate.jsonl --reid reid.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys

N_TRAIN = 12936
PORTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def pick(path: str, key: str, value: str) -> dict:
    found = [r for r in rows(path) if r.get(key) == value]
    if not found:
        sys.exit(f"{path} has no row with {key} = {value}")
    return found[0]


def estimate(train: dict, gen: dict, reid: dict, seeds: int = 3, portions=PORTIONS, n: int = N_TRAIN) -> dict:
    """Hours of each part and in total (see module doc)."""
    train_s = train["schedule_iterations"] * train["schedule_batch_size"] / train["train_img_per_s"]
    e2e = gen.get("end_to_end") or {}
    gen_rate = e2e.get("fast_img_per_s") or gen["img_per_s"]
    reid_rate, epochs = reid["train_img_per_s"], reid["epochs"]
    generated = sum((1 - p) * n for p in portions if p < 1)
    reid_images = sum(p * n + n for p in portions if p < 1) + (n if 1.0 in portions else 0)
    cells = 2 * sum(p < 1 for p in portions) + (1.0 in portions)
    parts = {
        "generator_training_h": train_s / 3600,
        "generation_h": seeds * generated / gen_rate / 3600,
        "reid_training_h": seeds * epochs * reid_images / reid_rate / 3600,
        "evaluation_h": seeds * cells * reid["eval_seconds"] / 3600,
    }
    out = {k: round(v, 3) for k, v in parts.items()}
    out.update({"total_h": round(sum(parts.values()), 2), "seeds": seeds, "portions": list(portions), "cells": seeds *
                cells, "generated_images": int(seeds * generated), "reid_cell_minutes_full_set": round(epochs * n /
                reid_rate / 60, 2), "generation_rate_img_per_s": gen_rate, "generation_rate_kind": "end_to_end" if
                e2e.get("fast_img_per_s") else "model_only", "device": reid.get("device")})  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="bench_train.py output")
    ap.add_argument("--generate", required=True, help="bench_generate.py output")
    ap.add_argument("--reid", required=True, help="bench_reid_train.py output")
    ap.add_argument("--method", default="patn")
    ap.add_argument("--recipe", default="reid/resnet50-softmax")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    res = estimate(pick(args.train, "method", args.method), pick(args.generate, "method", args.method),
                   pick(args.reid, "recipe", args.recipe), args.seeds)  # fmt: skip
    print(json.dumps({"method": args.method, "recipe": args.recipe, **res}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
