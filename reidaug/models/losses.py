"""Loss terms shared by the methods: adversarial, perceptual / style on the shared VGG-19 (notes 2.5, 8.2), and
the image history pool that feeds the discriminators' fake inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reidaug.errors import ReidaugError
from reidaug.models.blocks import check_choice
from reidaug.models.vgg import VGG19Features, feature_distance, gram

GAN_MODES = ("bce", "lsgan")
DISTANCES = ("l1", "l2")


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


class PerceptualLoss(nn.Module):
    """sum_l w_l * mean |phi_l(fake) - phi_l(real)| over VGG-19 layers l (L1, or L2), plus, with `style_layers`,
    sum_l mean |G(phi_l(fake)) - G(phi_l(real))| of Gram matrices (notes 8.2). The PATN family uses relu1_2
    alone (Eq. 10). Target features are computed without gradients; the VGG is frozen and stays in eval mode.
    `extra_layers`: more layers `self.vgg` returns for other losses on the same features (sampling correctness);
    `compare` scores features computed once for several losses."""

    def __init__(self, weights: str = "auto", distance: str = "l1", layers=("relu1_2",), layer_weights=None,
                 style_layers=(), extra_layers=()):  # fmt: skip
        super().__init__()
        check_choice("loss.perceptual_distance", distance, DISTANCES)
        self.distance, self.layers, self.style_layers = distance, tuple(layers), tuple(style_layers)
        self.layer_weights = tuple(layer_weights) if layer_weights is not None else (1.0,) * len(self.layers)
        if len(self.layer_weights) != len(self.layers):
            raise ReidaugError(f"{len(self.layers)} perceptual layers but {len(self.layer_weights)} weights")
        self.vgg = VGG19Features(tuple(dict.fromkeys(self.layers + self.style_layers + tuple(extra_layers))), weights)

    def forward(self, fake: torch.Tensor, real: torch.Tensor, with_style: bool = False):
        f = self.vgg(fake)
        with torch.no_grad():
            r = self.vgg(real)
        return self.compare(f, r, with_style)

    def compare(self, f: dict, r: dict, with_style: bool = False):
        """The content loss (and the style loss) of features `f` (fake) against `r` (real) from `self.vgg`."""
        content = sum(w * feature_distance(f[k], r[k], self.distance) for k, w in zip(self.layers, self.layer_weights))
        if not with_style:
            return content
        style = sum(F.l1_loss(gram(f[k]), gram(r[k])) for k in self.style_layers)
        return content, style


class ImagePool(nn.Module):
    """History of generated samples for a discriminator (CycleGAN-style, notes 2.5).

    Until `size` samples are stored, each incoming sample is stored and returned; afterwards, with
    probability 1/2, a random stored sample is returned and replaced by the incoming one, otherwise the
    incoming one is returned. `size` 0 returns the input unchanged. Draws use `generator` (CPU torch
    generator) or torch's global RNG. Its contents are module state (`get_extra_state`), so checkpoints hold
    them (unlike the reference code) and a resumed run continues exactly.
    """

    def __init__(self, size: int = 50, generator: torch.Generator | None = None):
        super().__init__()
        if size < 0:
            raise ReidaugError(f"loss.pool_size must be >= 0, got {size}")
        self.size = size
        self.generator = generator
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def get_extra_state(self) -> dict:
        return {"images": [t.detach().to("cpu", copy=True) for t in self.images],
                "generator": None if self.generator is None else self.generator.get_state()}  # fmt: skip

    def set_extra_state(self, state: dict) -> None:
        device = next(iter(self.images), torch.empty(0)).device if self.images else None
        self.images = [t if device is None else t.to(device) for t in state["images"]]
        if state.get("generator") is not None and self.generator is not None:
            self.generator.set_state(state["generator"])

    def _apply(self, fn, recurse=True):  # .to(device) moves the stored images too
        self.images = [fn(t) for t in self.images]
        return super()._apply(fn, recurse)

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
                out.append(self.images[i] if self.images[i].device == img.device else self.images[i].to(img.device))
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)
