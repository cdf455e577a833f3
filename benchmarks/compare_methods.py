"""Every method at the PATN demo generator's budget, side by side (docs/methods.md).

For each method: train `configs/methods/<method>-demo.yaml` (patn: patn-demo) on the synthetic dataset (skipped
when its run folder is complete), then measure on 500 seeded test pairs of unseen identities the SSIM of the
generated images and of "copy the source" (benchmarks/ssim_vs_copy.py), the training wall time and iterations/s
of the demo run (from its log.jsonl), generated images/s at the demo size (model only, CPU, batch 50), and the
generator parameters at the demo size and at full size. Prints one JSON object per method and writes the last
sample grid to OUT/<method>.jpg. A method whose generator fuses any number of sources (multisource) trains on
M-source tuples of the training annotations (its model.num_sources; same images and identity distribution as
the pairs) and is scored once per M of `--sources` (default 1, 2, 5): one JSON object each.

  python benchmarks/compare_methods.py --data data/synth --pairs data/pairs.csv --runs runs/compare   # synth/default
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ssim_vs_copy import evaluate  # noqa: E402


def generate_speed(checkpoint: Path, batch: int = 50, repeats: int = 3) -> float:
    from reidaug.models.checkpoint import load_generator

    gen, _ = load_generator(checkpoint)
    g = torch.Generator().manual_seed(0)
    data = {"src_img": torch.rand(batch, 1, 3, 128, 64, generator=g) * 2 - 1,
            "src_kp": torch.randint(0, 60, (batch, 1, 18, 2), generator=g),
            "tgt_kp": torch.randint(0, 60, (batch, 18, 2), generator=g)}  # fmt: skip
    with torch.no_grad():
        gen(data)
        t0 = time.perf_counter()
        for _ in range(repeats):
            gen(data)
    return batch * repeats / (time.perf_counter() - t0)


def main() -> int:
    from reidaug.models import registry
    from reidaug.models.blocks import count_parameters
    from reidaug.models.checkpoint import load_checkpoint
    from reidaug.train.config import load_method_config
    from reidaug.train.trainer import train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--pairs", required=True, type=Path)
    ap.add_argument("--runs", default=Path("runs/compare"), type=Path)
    ap.add_argument("--out", default=ROOT / "docs" / "methods", type=Path)
    ap.add_argument("--methods", default=",".join(registry.names()))
    ap.add_argument("--sources", default="1,2,5", help="M values a variable-source generator is scored at")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.methods.split(","):
        config = "methods/patn-demo" if name == "patn" else f"methods/{name}-demo"
        cfg = load_method_config(name, config, ["train.tensorboard=false"])
        run = args.runs / name
        latest = run / "checkpoints" / "latest.pt"
        multi = registry.num_sources(cfg.model) > 1  # trains on tuples made from the training annotations
        t0 = time.time()
        if not (latest.is_file() and load_checkpoint(latest)["iteration"] >= cfg.train.iterations):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                train(cfg, args.data, run, pairs=None if multi else args.pairs, device="cpu", overwrite=True,
                      show_progress=False)  # fmt: skip
        wall = time.time() - t0
        log = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
        finite = all(all(v == v and abs(v) != float("inf") for v in r.values()) for r in log)
        with torch.device("meta"):
            full = count_parameters(registry.get(name).generator(registry.get(name).model_schema()))
            demo = count_parameters(registry.get(name).generator(cfg.model))
        extra = {"train_seconds": round(wall, 1), "train_it_per_s": round(sum(r["it_per_s"] for r in log) / len(log), 3),
                 "finite_losses": finite, "generate_img_per_s": round(generate_speed(latest), 1),
                 "parameters_demo": demo, "parameters_full": full}  # fmt: skip
        variable = registry.get(name).generator.variable_sources
        for m in [int(v) for v in args.sources.split(",")] if variable else [1]:
            print(json.dumps({**evaluate(latest, args.data, sources=m), **extra}), flush=True)
        grids = sorted((run / "samples").glob("iter_*.png"))
        if grids:  # a JPEG copy of the last grid (small enough for docs/)
            from reidaug.data.images import read_image, write_image

            write_image(args.out / f"{name}.jpg", read_image(grids[-1]), 90)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
