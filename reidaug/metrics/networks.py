"""The networks behind IS, FID, KID and LPIPS, with their weights from the libraries' caches or a file, never
downloaded and never random unless asked for.

* Inception: torch-fidelity's "inception-v3-compat" (the TF graph of the reference IS/FID scripts), through
  torchmetrics' NoTrainInceptionV3; weights `weights-inception-2015-12-05-6726825d.pth` from the torch hub
  cache or `--weights inception=PATH`. Input uint8 RGB; resized to 299x299 with torch-fidelity's
  TF1-compatible bilinear interpolation (no antialiasing), as the reference graph does.
* LPIPS: the `lpips` package (v0.1, AlexNet trunk, its shipped linear layers); the AlexNet ImageNet weights
  from torchvision's hub cache or `--weights lpips=PATH` (a torchvision AlexNet state dict).
Random weights (`allow_random=True`): a seeded random Inception-v3 / AlexNet trunk, marked in every output.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from reidaug.errors import ReidaugError, first_line
from reidaug.utils.io import load_weights

WEIGHT_NAMES = ("inception", "lpips")


@dataclass
class Network:
    module: nn.Module | None  # None: skipped
    source: str  # where the weights came from, or why the metric is skipped
    random: bool = False


def hub_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _weights_path(name: str, weights: dict[str, str], cached: Path) -> Path | None:
    if name in weights:
        path = Path(weights[name]).expanduser()
        if not path.is_file():
            raise ReidaugError(f"--weights {name}={path}: file not found")
        return path
    return cached if cached.is_file() else None


class _RandomInception(nn.Module):
    """A seeded random Inception-v3 (torchvision's layout, He-initialised convolutions) with the input handling of
    the compat network: uint8 in, bilinear 299x299, (x - 128) / 128; returns pool features (2048) or logits."""

    def __init__(self, logits: bool):
        super().__init__()
        from torchvision.models import inception_v3

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.net = inception_v3(weights=None, aux_logits=False, init_weights=True).eval()
            for m in self.net.modules():  # variance-preserving, so features stay finite through 90 layers
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        self.logits = logits
        if not logits:
            self.net.fc = nn.Identity()

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - 128) / 128)


def inception(feature: str, weights: dict[str, str], allow_random: bool) -> Network:
    """The Inception network for `feature` ("2048": FID/KID pool features, "logits_unbiased": IS)."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    path = _weights_path("inception", weights, hub_file(URL_INCEPTION_V3))
    if path is None:
        if allow_random:
            return Network(_RandomInception(feature != "2048"), "random (seeded torchvision Inception-v3)", True)
        return Network(None, f"Inception weights not in the torch hub cache ({hub_file(URL_INCEPTION_V3)}); pass "
                             "--weights inception=PATH or --allow-random-weights")  # fmt: skip
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        net = NoTrainInceptionV3("inception-v3-compat", [feature], str(path), antialias=False)
    except Exception as e:
        raise ReidaugError(f"cannot load Inception weights {path}: {first_line(e)}") from None
    return Network(net, str(path))


def lpips_network(weights: dict[str, str], allow_random: bool) -> Network:
    """LPIPS v0.1 with the AlexNet trunk."""
    import lpips
    from torchvision.models import AlexNet_Weights

    cached = hub_file(AlexNet_Weights.IMAGENET1K_V1.url)
    path = _weights_path("lpips", weights, cached)
    if path is None and not allow_random:
        return Network(None, f"AlexNet weights for LPIPS not in the torch hub cache ({cached}); pass "
                             "--weights lpips=PATH or --allow-random-weights")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    if path is None:
        return Network(model.eval(), "random AlexNet trunk (seeded), the package's linear layers", True)
    state = load_weights(path, what="AlexNet weights")
    for slice_ in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5):
        for idx, layer in slice_.named_children():
            if isinstance(layer, nn.Conv2d):
                for p in ("weight", "bias"):
                    key = f"features.{idx}.{p}"
                    if key not in state:
                        raise ReidaugError(f"AlexNet weights {path} lack {key}")
                    getattr(layer, p).data.copy_(state[key])
    return Network(model.eval(), str(path))
