"""Loss terms of the PATN family (architecture notes 2.5): adversarial, perceptual (VGG-19 relu1_2), and the
image history pool that feeds the discriminators' fake inputs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from reidaug.errors import ReidaugError, first_line
from reidaug.models.blocks import check_choice

GAN_MODES = ("bce", "lsgan")
DISTANCES = ("l1", "l2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GANLoss(nn.Module):
    """Adversarial loss against an all-real / all-fake target, averaged over every element of D's map.

    "bce": binary cross-entropy on logits (the code's sigmoid + BCELoss, computed stably and autocast-safe);
    "lsgan": mean squared error of the raw map against 1 / 0.
    """

    def __init__(self, mode: str = "bce"):
        super().__init__()
        check_choice("loss.gan_mode", mode, GAN_MODES)
        self.mode = mode

    def forward(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        logits = logits.float()
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        if self.mode == "bce":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.mse_loss(logits, target)


def vgg19_relu1_2() -> nn.Sequential:
    """The first four modules of torchvision's VGG-19 `features`: conv1_1, ReLU, conv1_2, ReLU."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()
    )


def vgg19_hub_file() -> Path:
    """Where torchvision keeps the VGG-19 ImageNet weights once downloaded (torch hub cache)."""
    from torchvision.models import VGG19_Weights

    name = Path(urlparse(VGG19_Weights.IMAGENET1K_V1.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def load_vgg19_relu1_2(weights: str) -> dict[str, torch.Tensor] | None:
    """The state dict of `vgg19_relu1_2()` from "auto" (torch hub cache, never downloads), a weights file
    (a full VGG-19 state dict, or one of `features`), or None for "none" (random features, with a warning)."""
    if weights == "none":
        warnings.warn("perceptual loss uses a randomly initialised VGG-19 (loss.vgg_weights=none): "
                      "fine for tests, not for real training", stacklevel=3)  # fmt: skip
        return None
    if weights == "auto":
        path = vgg19_hub_file()
        if not path.is_file():
            raise ReidaugError(f"VGG-19 ImageNet weights not in the torch hub cache ({path}); set "
                               "loss.vgg_weights to a weights file, or to none for random features")  # fmt: skip
        from torchvision.models import VGG19_Weights

        state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ReidaugError(f"VGG-19 weights file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ReidaugError(f"cannot read VGG-19 weights {path}: {first_line(e)}") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ReidaugError(f"VGG-19 weights {path} are not a state dict")
    out = {}
    for idx in (0, 2):  # conv1_1, conv1_2
        for p in ("weight", "bias"):
            key = next((k for k in (f"features.{idx}.{p}", f"{idx}.{p}") if k in state), None)
            if key is None:
                raise ReidaugError(f"VGG-19 weights {path} lack features.{idx}.{p}")
            out[f"{idx}.{p}"] = state[key]
    return out


class PerceptualLoss(nn.Module):
    """Mean L1 (or L2) distance of VGG-19 relu1_2 features (64@128x64) of two images in [-1, 1] (Eq. 10).

    Images go [-1, 1] -> [0, 1] -> ImageNet normalisation; the VGG part is frozen and stays in eval mode;
    target features are computed without gradients.
    """

    def __init__(self, weights: str = "auto", distance: str = "l1"):
        super().__init__()
        check_choice("loss.perceptual_distance", distance, DISTANCES)
        self.distance = distance
        self.vgg = vgg19_relu1_2()
        state = load_vgg19_relu1_2(weights)
        if state is not None:
            try:
                self.vgg.load_state_dict(state)
            except RuntimeError as e:
                raise ReidaugError(
                    f"VGG-19 weights do not fit conv1_1/conv1_2: {str(e).splitlines()[-1]}"
                ) from None
        self.vgg.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.train(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # frozen feature extractor: always eval

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.vgg(((x + 1) / 2 - self.mean) / self.std)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        f = self.features(fake).float()
        with torch.no_grad():
            r = self.features(real).float()
        return F.l1_loss(f, r) if self.distance == "l1" else F.mse_loss(f, r)


class ImagePool:
    """History of generated samples for the discriminators (CycleGAN-style, notes 2.5).

    Until `size` samples are stored, each incoming sample is stored and returned; afterwards, with
    probability 1/2, a random stored sample is returned and replaced by the incoming one, otherwise the
    incoming one is returned. `size` 0 returns the input unchanged. Draws use `generator` (CPU torch
    generator) or torch's global RNG. The trainer saves its contents in checkpoints (unlike the reference code),
    so that a resumed run continues exactly.
    """

    def __init__(self, size: int = 50, generator: torch.Generator | None = None):
        if size < 0:
            raise ReidaugError(f"loss.pool_size must be >= 0, got {size}")
        self.size = size
        self.generator = generator
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach().unbind(0):
            if len(self.images) < self.size:
                self.images.append(img.clone())  # a copy: a view would keep the whole batch alive
                out.append(img)
            elif torch.rand((), generator=self.generator).item() < 0.5:
                i = int(torch.randint(len(self.images), (), generator=self.generator))
                out.append(self.images[i])
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)
