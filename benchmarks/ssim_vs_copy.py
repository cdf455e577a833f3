"""SSIM of a trained generator against the trivial baseline "copy the source image", on test pairs.

    python benchmarks/ssim_vs_copy.py --checkpoint demo-out/patn --data demo-out/synth [--pairs 500] [--sources M]

Test pairs are drawn by the PATN rule from ROOT/annotations/test.csv (identities unseen in training), seed 0.
With `--sources M` (a generator that fuses any number of sources) each pair's source is joined by M - 1 other
images of its identity, seeded (reidaug.data.pairs.tuples_from_pairs): M = 1 scores the very same pairs, and
"copy" is always the pair's own source. Prints JSON: mean SSIM (notes 11.1, data range of the generated image) of generated vs target and of source vs
target, the same with data range 255, and mask-SSIM (both images masked by the target's body mask, notes 11.2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reidaug.data.images import read_image, to_tensor, to_uint8  # noqa: E402
from reidaug.data.keypoints import read_annotations  # noqa: E402
from reidaug.data.pairs import make_pairs, sample_pairs, tuples_from_pairs  # noqa: E402
from reidaug.metrics.masks import apply_mask, pose_mask  # noqa: E402
from reidaug.metrics.ssim import mean_ssim  # noqa: E402
from reidaug.models.checkpoint import load_generator  # noqa: E402


def evaluate(checkpoint, data: Path, n_pairs: int = 500, batch_size: int = 50, sources: int = 1) -> dict:
    """Mean SSIM of generated vs target and of source vs target on `n_pairs` seeded test pairs of `data` (the
    generator sees `sources` images of the person: the pair's source first)."""
    ann = read_annotations(data / "annotations" / "test.csv")
    pairs = sample_pairs(make_pairs(ann), n_pairs, seed=0)
    cols = [f"from_{i}" for i in range(sources)]
    pairs = pd.concat([pairs.reset_index(drop=True), tuples_from_pairs(pairs, ann, sources, seed=0)[cols]], axis=1)
    generator, ckpt = load_generator(checkpoint)
    folder = data / "bounding_box_test"
    t0 = time.time()
    gen, src, tgt = [], [], []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs.iloc[i : i + batch_size]
        s = [read_image(folder / n) for n in chunk["from"]]
        t = [read_image(folder / n) for n in chunk["to"]]
        names = chunk[cols].to_numpy()  # (b, M)
        batch = {"src_img": torch.stack([torch.stack([to_tensor(read_image(folder / n)) for n in row]) for row in names]),
                 "src_kp": torch.from_numpy(np.stack([[ann[n] for n in row] for row in names])),
                 "tgt_kp": torch.from_numpy(np.stack([ann[n] for n in chunk["to"]]))}  # fmt: skip
        with torch.no_grad():
            gen.extend(to_uint8(generator(batch)["image"]))
        src.extend(s)
        tgt.extend(t)
    masks = [pose_mask(ann[n]) for n in pairs["to"]]
    masked = lambda images: [apply_mask(x, m) for x, m in zip(images, masks)]  # noqa: E731
    return {
        "method": ckpt["method"], "iteration": int(ckpt["iteration"]), "pairs": len(pairs), "sources": sources,
        "ssim_generated": round(mean_ssim(zip(gen, tgt)), 4),
        "ssim_copy_source": round(mean_ssim(zip(src, tgt)), 4),
        "ssim255_generated": round(mean_ssim(zip(gen, tgt), "255"), 4),
        "ssim255_copy_source": round(mean_ssim(zip(src, tgt), "255"), 4),
        "mask_ssim_generated": round(mean_ssim(zip(masked(gen), masked(tgt))), 4),
        "mask_ssim_copy_source": round(mean_ssim(zip(masked(src), masked(tgt))), 4),
        "seconds": round(time.time() - t0, 1),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--sources", type=int, default=1)
    args = ap.parse_args()
    print(json.dumps(evaluate(args.checkpoint, Path(args.data), args.pairs, args.batch_size, args.sources)))


if __name__ == "__main__":
    main()
