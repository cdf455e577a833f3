"""One frozen VGG-19 feature extractor for every loss that needs one (perceptual L1 at any layers, Gram-matrix
style terms, GFLA's sampling-correctness loss, the multi-source nearest-neighbour loss).

Layers are torchvision's `vgg19().features` with its indices (so a torchvision state dict loads as is) and named
conv1_1 ... relu5_4 / pool1 ... pool5; only the layers up to the deepest one asked for are built. Weights come
from torchvision's hub cache ("auto", never downloaded), a file, or "none" (random, with a warning). They are
non-persistent buffers: a method's state dict, and so its checkpoints, never carry them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from reidaug.errors import ReidaugError
from reidaug.utils.io import load_weights

# torchvision's VGG-19 ("E") configuration: output channels per 3x3 conv, "M" for a 2x2 max-pool.
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_names() -> list[str]:
    """Names of `features[i]`: conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ..."""
    names, block, k = [], 1, 1
    for v in VGG19_LAYOUT:
        if v == "M":
            names.append(f"pool{block}")
            block, k = block + 1, 1
        else:
            names += [f"conv{block}_{k}", f"relu{block}_{k}"]
            k += 1
    return names


LAYERS = layer_names()


def vgg19_hub_file() -> Path:
    """Where torchvision keeps the VGG-19 ImageNet weights once downloaded (torch hub cache)."""
    from torchvision.models import VGG19_Weights

    name = Path(urlparse(VGG19_Weights.IMAGENET1K_V1.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _read_state(weights: str) -> dict[str, torch.Tensor] | None:
    if weights == "none":
        warnings.warn("VGG-19 features are randomly initialised (vgg_weights=none): fine for tests, "
                      "not for real training", stacklevel=4)  # fmt: skip
        return None
    if weights == "auto":
        path = vgg19_hub_file()
        if not path.is_file():
            raise ReidaugError(f"VGG-19 ImageNet weights not in the torch hub cache ({path}); set "
                               "vgg_weights to a weights file, or to none for random features")  # fmt: skip
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ReidaugError(f"VGG-19 weights file not found: {path}")
    state = load_weights(path, what="VGG-19 weights")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ReidaugError(f"VGG-19 weights {path} are not a state dict")
    return state


class VGG19Features(nn.Module):
    """Frozen VGG-19 (always eval): images in [-1, 1] -> {layer name: features}, ImageNet-normalised input."""

    def __init__(self, layers=("relu1_2",), weights: str = "auto"):
        super().__init__()
        unknown = [name for name in layers if name not in LAYERS]
        if unknown or not layers:
            raise ReidaugError(f"unknown VGG-19 layers {unknown}; choose from {', '.join(LAYERS)}")
        self.layers = tuple(layers)
        depth = max(LAYERS.index(name) for name in layers) + 1
        seq, c = [], 3
        for v in VGG19_LAYOUT:
            if v == "M":
                seq.append(nn.MaxPool2d(2, 2))
            else:
                seq += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*seq[:depth])
        self._load(_read_state(weights), weights)
        for conv in self.features:
            if isinstance(conv, nn.Conv2d):  # frozen weights as non-persistent buffers
                for p in ("weight", "bias"):
                    t = getattr(conv, p).detach()
                    delattr(conv, p)
                    conv.register_buffer(p, t, persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.train(False)

    def _load(self, state, source: str) -> None:
        if state is None:
            return
        out = {}
        for i, m in enumerate(self.features):
            if isinstance(m, nn.Conv2d):
                for p in ("weight", "bias"):
                    key = next((k for k in (f"features.{i}.{p}", f"{i}.{p}") if k in state), None)
                    if key is None:
                        raise ReidaugError(f"VGG-19 weights {source} lack features.{i}.{p}")
                    out[f"{i}.{p}"] = state[key]
        try:
            self.features.load_state_dict(out)
        except RuntimeError as e:
            raise ReidaugError(f"VGG-19 weights do not fit the VGG-19 layers: {str(e).splitlines()[-1]}") from None

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std
        out = {}
        for name, layer in zip(LAYERS, self.features):
            x = layer(x)
            if name in self.layers:
                out[name] = x
        return out


def gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrix of features (B, C, H, W) normalised by C * H * W (B, C, C), in float32."""
    b, c, h, w = f.shape
    f = f.float().flatten(2)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def feature_distance(a: torch.Tensor, b: torch.Tensor, distance: str = "l1") -> torch.Tensor:
    a, b = a.float(), b.float()
    return F.l1_loss(a, b) if distance == "l1" else F.mse_loss(a, b)
