"""A tiny Market-style root for trainer and generator tests: a few identities, each image a skeleton drawn
in the identity's colours at its own pose over a grey background, plus annotations/train.csv.

Also the tiny PATN configuration the tests train (few channels, one block, no pool, random VGG), and
`meta_count`, parameter counts of full-size models for free.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from reidaug.data.images import write_image
from reidaug.data.keypoints import LIMBS, Annotations, write_annotations

TINY_PATN = [
    "model.ngf=4", "model.n_blocks=1", "model.discriminator.ndf=4", "model.discriminator.n_blocks=1",
    "loss.vgg_weights=none", "loss.lambda_perceptual=0", "loss.pool_size=4",
    "train.batch_size=2", "train.num_workers=0", "train.tensorboard=false", "train.sample_count=2",
    "train.log_every=1", "train.checkpoint_every=1000", "train.sample_every=0",
]  # fmt: skip


def pose(rng: np.random.Generator, h: int = 128, w: int = 64) -> np.ndarray:
    """A plausible upright COCO-18 pose [y, x] with every joint inside the crop."""
    cx, top = rng.integers(26, 38), rng.integers(8, 16)
    s = rng.uniform(0.85, 1.0)
    base = np.array([
        [0, 0], [12, 0], [12, -9], [30, -11], [46, -12], [12, 9], [30, 11], [46, 12],
        [50, -6], [75, -7], [100, -7], [50, 6], [75, 7], [100, 7], [-3, -3], [-3, 3], [-1, -6], [-1, 6],
    ], dtype=float)  # fmt: skip
    kp = base * s + rng.normal(0, 1.5, base.shape) + [top + 4, cx]
    kp[:, 0] = kp[:, 0].clip(0, h - 1)
    kp[:, 1] = kp[:, 1].clip(0, w - 1)
    return kp.round().astype(np.int32)


def render(kp: np.ndarray, colours: np.ndarray, h: int = 128, w: int = 64) -> np.ndarray:
    img = np.full((h, w, 3), 110, np.uint8)
    for i, (a, b) in enumerate(LIMBS):
        c = tuple(int(v) for v in colours[i % len(colours)])
        cv2.line(img, (int(kp[a, 1]), int(kp[a, 0])), (int(kp[b, 1]), int(kp[b, 0])), c, 5)
    return img


def make_root(root: Path, ids: int = 3, per_id: int = 3, seed: int = 0, missing_joint: bool = True) -> Path:
    """ROOT/bounding_box_train/*.jpg and ROOT/annotations/train.csv; returns the root."""
    rng = np.random.default_rng(seed)
    names, coords = [], []
    for pid in range(1, ids + 1):
        colours = rng.integers(30, 255, (3, 3))
        for k in range(per_id):
            name = f"{pid:04d}_c{k % 6 + 1}s1_{100 * pid + k:06d}_01.jpg"
            kp = pose(rng)
            write_image(root / "bounding_box_train" / name, render(kp, colours))
            if missing_joint and k == 0:
                kp[0] = -1  # nose missing: still a valid (torso-complete) pair image
            names.append(name)
            coords.append(kp)
    write_annotations(root / "annotations" / "train.csv", Annotations(names, np.stack(coords)))
    return root


def meta_count(make) -> int:
    """Parameters of a module built on the meta device (no memory, no init): counting full-size models is free."""
    import torch

    from reidaug.models.blocks import count_parameters

    with torch.device("meta"):
        return count_parameters(make())


class Killed(Exception):
    """Raised by `kill_at`: a run interrupted on purpose."""


def kill_at(iteration: int):
    """A trainer callback that interrupts the run after `iteration` completed iterations."""

    def callback(done, logs):
        if done == iteration:
            raise Killed

    return callback
