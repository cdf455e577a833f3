"""Pairs of Market images with their keypoints, as batches for training and generation.

Images travel as uint8 CHW tensors (4x less host-to-device traffic than float) and become [-1, 1] floats on
the device (`to_device`); heatmaps are made on the device from the keypoints by the method. Each sample
decodes its two images exactly once. The training order is a function of (seed, iteration) only, PATN-style
uniform sampling with replacement from the pair list, so a resumed run sees the same batches.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from reidaug.data.images import read_image
from reidaug.data.keypoints import Annotations
from reidaug.data.market import SPLITS
from reidaug.errors import ReidaugError, offenders

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def image_index(root: str | Path) -> dict[str, str]:
    """Image name -> path over the split folders of a Market root (train, then gallery, then query)."""
    root = Path(root)
    if not root.is_dir():
        raise ReidaugError(f"Market root {root} is not a folder")
    index: dict[str, str] = {}
    for sub in SPLITS.values():
        folder = root / sub
        if not folder.is_dir():
            continue
        with os.scandir(folder) as it:
            for e in it:
                if e.name.lower().endswith(IMAGE_EXTS) and not e.name.startswith("."):
                    index.setdefault(e.name, e.path)
    if not index:
        raise ReidaugError(f"no images in {root} (expected {', '.join(SPLITS.values())} folders)")
    return index


def merge_annotations(parts: list[Annotations]) -> Annotations:
    """Several annotation files as one (the first file wins for a name listed twice)."""
    if len(parts) == 1:
        return parts[0]
    names, coords, seen = [], [], set()
    for a in parts:
        for n, c in zip(a.names, a.coords):
            if n not in seen:
                seen.add(n)
                names.append(n)
                coords.append(c)
    return Annotations(names, np.array(coords, dtype=np.int32).reshape(-1, 18, 2))


class PairDataset(Dataset):
    """Sample i: source image + keypoints, target keypoints and (when known) the target image.

    `sources`, `targets` are image names; `pose_from` names the image whose keypoints give the target pose
    (the target itself for training pairs). Images are looked up in `paths` (see `image_index`).
    """

    def __init__(self, sources, pose_from, paths: dict[str, str], ann: Annotations, targets=None,
                 image_size: tuple[int, int] = (128, 64)):  # fmt: skip
        sources, pose_from = list(sources), list(pose_from)
        targets = None if targets is None else list(targets)
        check_names(sources + (targets or []), pose_from, paths, ann)
        # One table of distinct images; samples hold int32 indices into it (light to fork into workers).
        names = list(dict.fromkeys(sources + pose_from + (targets or [])))
        self.names = names
        self.paths = [paths.get(n, "") for n in names]
        self.coords = np.stack([ann[n] for n in names]).astype(np.int16) if names else np.zeros((0, 18, 2))
        pos = {n: i for i, n in enumerate(names)}
        self.src = np.array([pos[n] for n in sources], dtype=np.int32)
        self.pose = np.array([pos[n] for n in pose_from], dtype=np.int32)
        self.tgt = None if targets is None else np.array([pos[n] for n in targets], dtype=np.int32)
        self.image_size = tuple(image_size)

    @classmethod
    def from_pairs(cls, pairs: pd.DataFrame, paths, ann, image_size=(128, 64)) -> PairDataset:
        """Training pairs (`from`, `to`): the target is also the pose image."""
        return cls(pairs["from"], pairs["to"], paths, ann, targets=pairs["to"], image_size=image_size)

    def __len__(self) -> int:
        return len(self.src)

    def _image(self, k: int) -> torch.Tensor:
        img = read_image(self.paths[k])
        if img.shape[:2] != self.image_size:
            raise ReidaugError(f"image {self.paths[k]} is {img.shape[0]}x{img.shape[1]}, expected "
                               f"{self.image_size[0]}x{self.image_size[1]} (H x W)")  # fmt: skip
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, p = int(self.src[i]), int(self.pose[i])
        item = {
            "index": torch.tensor(i),
            "src_img": self._image(s),
            "src_kp": torch.from_numpy(self.coords[s].astype(np.int64)),
            "tgt_kp": torch.from_numpy(self.coords[p].astype(np.int64)),
        }
        if self.tgt is not None:
            t = int(self.tgt[i])
            item["tgt_img"] = item["src_img"] if t == s else self._image(t)
        return item


def check_names(images, pose_from, paths: dict[str, str], ann: Annotations) -> None:
    """One error line for images not in the root or without keypoints (before any work starts)."""
    missing = sorted({n for n in images if n not in paths})
    if missing:
        raise ReidaugError(f"{len(missing)} images named in the pairs are not in the Market root: {offenders(missing)}")
    no_kp = sorted({n for n in list(images) + list(pose_from) if n not in ann})
    if no_kp:
        raise ReidaugError(f"{len(no_kp)} images have no keypoints in the annotations: {offenders(no_kp)}")


class IterationSampler(Sampler):
    """Batches for iterations [start, stop): iteration t draws `global_batch` indices uniformly with
    replacement from a generator seeded by (seed, t); DDP rank r takes its slice of that global batch."""

    def __init__(self, n: int, global_batch: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1):
        if n < 1:
            raise ReidaugError("no training pairs")
        if global_batch % world:
            raise ReidaugError(f"train.batch_size {global_batch} is not divisible by {world} processes")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world

    @staticmethod
    def indices(n: int, global_batch: int, seed: int, iteration: int) -> np.ndarray:
        return np.random.default_rng([seed, iteration]).integers(0, n, size=global_batch)

    def __iter__(self):
        b = self.global_batch // self.world
        for t in range(self.start, self.stop):
            idx = self.indices(self.n, self.global_batch, self.seed, t)
            yield idx[self.rank * b : (self.rank + 1) * b].tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "n": self.n, "global_batch": self.global_batch, "start": self.start}


def make_loader(dataset: Dataset, batch_sampler=None, batch_size: int | None = None, num_workers: int = 0,
                pin_memory: bool = False, prefetch_factor: int = 4, seed: int = 0) -> DataLoader:  # fmt: skip
    """A DataLoader with its own torch generator (so it never draws from the global RNG); at most one worker
    per CPU core."""
    num_workers = max(0, min(num_workers, os.cpu_count() or 1))
    kw = {}
    if num_workers > 0:
        kw = {"prefetch_factor": prefetch_factor, "persistent_workers": False}
    if batch_sampler is None:
        kw.update(batch_size=batch_size, shuffle=False)
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed), **kw)  # fmt: skip


def to_device(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool = False) -> dict:
    """Move a loader batch to the device; uint8 images become float in [-1, 1] there."""
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        if v.dtype == torch.uint8:
            v = v.float().div_(127.5).sub_(1.0)
            if channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out
