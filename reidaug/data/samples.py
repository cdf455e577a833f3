"""Samples of pose-guided generation: one target (a pose, and its image when known) plus M >= 1 source images of
the same person with their keypoints, for training and generation alike.

Images travel as uint8 CHW tensors (4x less host-to-device traffic than float) and become [-1, 1] floats on the
device (`to_device`); heatmaps are made on the device from the keypoints by the model. An item is

  src_img (M, 3, H, W) uint8, src_kp (M, 18, 2), tgt_kp (18, 2) [y, x] (-1 = missing), tgt_img (3, H, W) when
  the target image is known, and index (the row);

a loader batch adds the batch dimension in front (src_img (B, M, 3, H, W)). M = 1 is a pair.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from reidaug.data.images import read_image
from reidaug.data.keypoints import Annotations
from reidaug.data.market import IMAGE_EXTS, SPLITS, check_cameras, check_root
from reidaug.errors import ReidaugError, offenders


def image_index(root: str | Path) -> dict[str, str]:
    """Image name -> path over the split folders of a Market root (train, then gallery, then query)."""
    root = check_root(root)
    index: dict[str, str] = {}
    for sub in SPLITS.values():
        folder = root / sub
        if not folder.is_dir():
            continue
        with os.scandir(folder) as it:
            for e in it:
                if e.name.lower().endswith(IMAGE_EXTS) and not e.name.startswith("."):
                    index.setdefault(e.name, e.path)
    check_cameras(index, root)
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


def check_names(images, pose_from, paths: dict[str, str], ann: Annotations) -> None:
    """One error line for images not in the root or without keypoints (before any work starts)."""
    images = [str(n) for n in np.asarray(images, dtype=object).ravel()]
    missing = sorted({n for n in images if n not in paths})
    if missing:
        raise ReidaugError(f"{len(missing)} images named in the pairs are not in the Market root: {offenders(missing)}")
    no_kp = sorted({n for n in images + list(pose_from) if n not in ann})
    if no_kp:
        raise ReidaugError(f"{len(no_kp)} images have no keypoints in the annotations: {offenders(no_kp)}")


def check_inside(names: list[str], coords: np.ndarray, size: tuple[int, int]) -> None:
    """Every present joint (not -1) lies inside an image of `size` (H, W); one line names the first that does
    not: a keypoint file of another dataset or resolution would otherwise train silently on garbage poses."""
    from reidaug.data.keypoints import JOINTS

    if not len(coords):
        return
    h, w = size
    present = coords >= 0
    bad = present & (coords >= np.array([h, w]))
    if bad.any():
        i, j, axis = (int(v[0]) for v in np.nonzero(bad))
        raise ReidaugError(f"keypoints of {names[i]} lie outside its {h}x{w} image: {JOINTS[j]} at "
                           f"{'yx'[axis]} = {int(coords[i, j, axis])}")  # fmt: skip


class SampleDataset(Dataset):
    """Item i: the M source images + keypoints of row i, the target keypoints and (when known) the target image.

    `sources` is (N, M) image names (or a length-N list of names: M = 1); `pose_from` names the image whose
    keypoints give the target pose (the target itself for training); `targets` the ground-truth images.
    """

    def __init__(self, sources, pose_from, paths: dict[str, str], ann: Annotations, targets=None,
                 image_size: tuple[int, int] = (128, 64)):  # fmt: skip
        src = np.asarray(sources, dtype=object)
        src = src.reshape(len(src), -1) if src.size else src.reshape(0, 1)
        pose_from = list(pose_from)
        targets = None if targets is None else list(targets)
        check_names(src.ravel().tolist() + (targets or []), pose_from, paths, ann)
        # One table of distinct images; samples hold int32 indices into it (light to fork into workers).
        names = list(dict.fromkeys(src.ravel().tolist() + pose_from + (targets or [])))
        self.names = names
        self.paths = [paths.get(n, "") for n in names]
        self.coords = np.stack([ann[n] for n in names]).astype(np.int16) if names else np.zeros((0, 18, 2))
        pos = {n: i for i, n in enumerate(names)}
        self.src = np.vectorize(pos.__getitem__, otypes=[np.int32])(src) if src.size else src.astype(np.int32)
        self.pose = np.array([pos[n] for n in pose_from], dtype=np.int32)
        self.tgt = None if targets is None else np.array([pos[n] for n in targets], dtype=np.int32)
        self.image_size = tuple(image_size)
        check_inside(names, self.coords, self.image_size)

    @property
    def num_sources(self) -> int:
        return self.src.shape[1]

    @classmethod
    def from_table(cls, table: pd.DataFrame, paths, ann, num_sources: int = 1, image_size=(128, 64)) -> SampleDataset:
        """Training rows of a pairs (`from`, `to`) or tuples (`from_0..`, `to`) table: the target is also the
        pose image; the first `num_sources` source columns are used."""
        from reidaug.data.pairs import source_names

        src = source_names(table, num_sources)
        return cls(src, table["to"], paths, ann, targets=table["to"], image_size=image_size)

    def __len__(self) -> int:
        return len(self.src)

    def _image(self, k: int) -> torch.Tensor:
        img = read_image(self.paths[k])
        if img.shape[:2] != self.image_size:
            raise ReidaugError(f"image {self.paths[k]} is {img.shape[0]}x{img.shape[1]}, expected "
                               f"{self.image_size[0]}x{self.image_size[1]} (H x W)")  # fmt: skip
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        src, p = [int(s) for s in self.src[i]], int(self.pose[i])
        decoded = {s: self._image(s) for s in dict.fromkeys(src)}  # each distinct image decoded once
        item = {
            "index": torch.tensor(i),
            "src_img": torch.stack([decoded[s] for s in src]),
            "src_kp": torch.from_numpy(self.coords[src].astype(np.int64)),
            "tgt_kp": torch.from_numpy(self.coords[p].astype(np.int64)),
        }
        if self.tgt is not None:
            t = int(self.tgt[i])
            item["tgt_img"] = decoded[t] if t in decoded else self._image(t)
        return item


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


def resize_images(x: torch.Tensor, size) -> torch.Tensor:
    """Float images (..., C, H, W) at `size` (H, W): bilinear, antialiased when shrinking."""
    (h, w), (nh, nw) = x.shape[-2:], size
    if (h, w) == (nh, nw):
        return x
    flat = x.reshape(-1, *x.shape[-3:])
    out = torch.nn.functional.interpolate(flat, size=(nh, nw), mode="bilinear", align_corners=False,
                                          antialias=nh < h or nw < w)  # fmt: skip
    return out.reshape(*x.shape[:-2], nh, nw)


def resize_batch(batch: dict[str, torch.Tensor], size) -> dict[str, torch.Tensor]:
    """A device batch at a generator's working size (H, W): every `*_img` resized (bilinear, antialiased when
    shrinking), every `*_kp` joint moved to the pixel that holds its centre (-1 stays missing)."""
    imgs = [v for k, v in batch.items() if k.endswith("_img")]
    if size is None or not imgs or tuple(imgs[0].shape[-2:]) == tuple(size):
        return batch
    (h, w), (nh, nw) = imgs[0].shape[-2:], size
    scale = torch.tensor([nh / h, nw / w])
    out = {}
    for k, v in batch.items():
        if k.endswith("_img"):
            v = resize_images(v, (nh, nw))
        elif k.endswith("_kp"):
            top = torch.tensor([nh - 1, nw - 1], device=v.device)
            moved = ((v + 0.5) * scale.to(v.device)).floor().long().clamp(min=torch.zeros_like(top), max=top)
            v = torch.where((v >= 0).all(-1, keepdim=True), moved, torch.full_like(v, -1))
        out[k] = v
    return out


def to_device(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool = False, size=None) -> dict:
    """Move a loader batch to the device; uint8 images become float in [-1, 1] there, at `size` (H, W) when given
    (`resize_batch`); with `channels_last` every (B, 3, H, W) image, each source of src_img included, is NHWC."""
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        if v.dtype == torch.uint8:
            v = v.float().div_(127.5).sub_(1.0)
        out[k] = v
    out = resize_batch(out, size)
    if channels_last:
        for k, v in out.items():
            if k.endswith("_img") and v.dim() == 4:
                out[k] = v.contiguous(memory_format=torch.channels_last)
            elif k.endswith("_img") and v.dim() == 5:  # (B, M, C, H, W) stored as (M, B, H, W, C): each v[:, m] is NHWC
                out[k] = v.permute(1, 0, 3, 4, 2).contiguous().permute(1, 0, 4, 2, 3)
    return out
