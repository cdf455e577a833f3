"""The device-resident training data of reid-eval (`train_data: device`): no CPU loader in the hot loop.

The training set is decoded once into one uint8 tensor (N, 3, h, w) on the device (Market: 12,936 x 3 x 128 x 64,
318 MB); every batch is gathered from it and augmented there, with the recipe's torchreid transforms rebuilt as
batched tensor operations in torchreid's order (torchreid/data/transforms.py, build_transforms):

  resize to (height, width) [bilinear, antialiased like PIL], random_flip [p 0.5], random_crop [p 0.5: resize to
  1.125x and crop at a uniformly drawn offset, Random2DTranslation], to [0, 1], normalise (ImageNet mean, std),
  random_erase [p 0.5: area in [0.02, 0.4] of the image, aspect in [0.3, 1/0.3], first of 100 draws that fits,
  filled with the normalisation *mean* values, as torchreid does].

The index order of each epoch comes from the very sampler torchreid's loader uses (RandomSampler or
RandomIdentitySampler, drawn once per epoch, last incomplete batch dropped): only the random numbers of the
augmentations differ from the loader path (a torch generator on the device, seeded from the run's seed).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from reidaug.errors import ReidaugError

TRANSFORMS = ("random_flip", "random_crop", "random_erase")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchreid's defaults (ImageNet)
CROP_SCALE, CROP_P, FLIP_P = 1.125, 0.5, 0.5  # Random2DTranslation, RandomHorizontalFlip
ERASE_P, ERASE_AREA, ERASE_R1, ERASE_TRIES = 0.5, (0.02, 0.4), 0.3, 100  # RandomErasing


def check_transforms(transforms) -> None:
    bad = [t for t in transforms if t.lower() not in TRANSFORMS]
    if bad:
        raise ReidaugError(f"train_data=device supports the transforms {', '.join(TRANSFORMS)}, not "
                           f"{', '.join(bad)}; use train_data=loader")  # fmt: skip


def decode_all(paths: list[str], workers: int = 8) -> torch.Tensor:
    """Every image as uint8 (N, 3, h, w) on the CPU, at the size most of them have (others resized, bilinear)."""
    from reidaug.data.images import read_image

    with ThreadPoolExecutor(max(1, workers)) as pool:  # cv2 releases the GIL
        images = list(pool.map(read_image, paths))
    if not images:
        raise ReidaugError("no training images to decode")
    sizes = [im.shape[:2] for im in images]
    h, w = max(set(sizes), key=sizes.count)
    if any(s != (h, w) for s in sizes):
        import cv2

        images = [im if im.shape[:2] == (h, w) else cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)
                  for im in images]  # fmt: skip
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


class DeviceAugment:
    """The recipe's train transforms on a uint8 batch (B, 3, h, w) on the device -> float (B, 3, H, W)."""

    def __init__(self, height: int, width: int, transforms, device: torch.device, seed: int):
        check_transforms(transforms)
        self.size, self.transforms = (height, width), {t.lower() for t in transforms}
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.device = device

    def rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.gen, device=self.device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        if "random_flip" in self.transforms:
            x = torch.where((self.rand(len(x)) < FLIP_P).view(-1, 1, 1, 1), x.flip(-1), x)
        if "random_crop" in self.transforms:
            x = self.random_crop(x)
        x = (x - self.mean) / self.std
        if "random_erase" in self.transforms:
            x = self.random_erase(x)
        return x

    def random_crop(self, x: torch.Tensor) -> torch.Tensor:
        """Random2DTranslation: with p 0.5, enlarge by 1.125 and crop (height, width) at a random offset."""
        b, (h, w) = len(x), self.size
        big_h, big_w = int(round(h * CROP_SCALE)), int(round(w * CROP_SCALE))
        big = F.interpolate(x, size=(big_h, big_w), mode="bilinear", align_corners=False, antialias=True)
        x1 = torch.round(self.rand(b) * (big_w - w)).long()
        y1 = torch.round(self.rand(b) * (big_h - h)).long()
        rows = (y1[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
        cols = (x1[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
        bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        ci = torch.arange(3, device=x.device).view(1, 3, 1, 1)
        crop = big[bi, ci, rows, cols]
        return torch.where((self.rand(b) < CROP_P).view(-1, 1, 1, 1), crop, x)

    def random_erase(self, x: torch.Tensor) -> torch.Tensor:
        """RandomErasing: with p 0.5, the first of 100 random rectangles that fits is set to the mean values."""
        b, (h, w) = len(x), self.size
        area = ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * self.rand(b, ERASE_TRIES)
        aspect = ERASE_R1 + (1 / ERASE_R1 - ERASE_R1) * self.rand(b, ERASE_TRIES)
        eh = torch.round(torch.sqrt(area * h * w * aspect)).long()
        ew = torch.round(torch.sqrt(area * h * w / aspect)).long()
        fits = (eh < h) & (ew < w)
        first = fits.long().argmax(1, keepdim=True)  # the first attempt that fits (0 when none does)
        eh, ew = eh.gather(1, first)[:, 0], ew.gather(1, first)[:, 0]
        y = (self.rand(b) * (h - eh + 1)).floor().long()  # random.randint(0, h - eh), both ends included
        x0 = (self.rand(b) * (w - ew + 1)).floor().long()
        r, c = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        inside = (((r[None] >= y[:, None]) & (r[None] < (y + eh)[:, None]))[:, :, None]
                  & ((c[None] >= x0[:, None]) & (c[None] < (x0 + ew)[:, None]))[:, None, :])  # fmt: skip
        erase = inside & ((self.rand(b) < ERASE_P) & fits.any(1))[:, None, None]
        return torch.where(erase[:, None], self.mean.expand_as(x), x)


class DeviceTrainLoader:
    """Iterates like torchreid's train loader ({"img", "pid"} batches), from the device-resident images."""

    def __init__(self, images: torch.Tensor, pids, sampler, batch_size: int, augment: DeviceAugment,
                 device: torch.device):  # fmt: skip
        """`images` uint8 (N, 3, h, w) (moved to `device`), `pids` (N,), `sampler` yields indices into them."""
        self.images = (images.pin_memory() if device.type == "cuda" else images).to(device, non_blocking=True)
        self.pids = torch.as_tensor(pids, dtype=torch.long).to(device)
        self.sampler, self.batch_size, self.augment = sampler, batch_size, augment
        self.device = device

    @classmethod
    def from_items(cls, data: list, sampler, batch_size: int, augment: DeviceAugment, device: torch.device,
                   workers: int = 8) -> DeviceTrainLoader:  # fmt: skip
        """From torchreid's dataset items (path, pid, camid, ...), decoded once with `workers` threads."""
        images = decode_all([item[0] for item in data], workers)
        return cls(images, [int(item[1]) for item in data], sampler, batch_size, augment, device)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size  # torchreid's loader drops the last incomplete batch

    def __iter__(self):
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long).to(self.device, non_blocking=True)
        for k in range(len(self)):
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]
            yield {"img": self.augment(self.images[idx]), "pid": self.pids[idx]}

    @property
    def nbytes(self) -> int:
        return self.images.numel()
