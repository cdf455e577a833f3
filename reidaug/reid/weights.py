"""Initial weights and checkpoints, without downloads and without unpickling untrusted files.

* `--pretrained`: ImageNet weights of the ResNet family from torchvision's cache
  (`<torch hub dir>/checkpoints/<file>`, torchvision's file name or torchreid's older one); the file must already be
  there: we never download (torchreid's `pretrained=True` would). Other backbones need `weights`.
* `weights`: a state dict or a torchreid checkpoint (`{"state_dict": ...}`); layers are matched by name and shape.
* torchreid's own checkpoints pickle a numpy scalar (`rank1`), which `torch.load` refuses since torch 2.6
  (`weights_only=True`). `load_checkpoint` allows exactly numpy scalars and dtypes (safe globals); full unpickling
  (`weights_only=False`) only with `trusted=True`. Our checkpoints hold tensors and Python numbers only.
"""

from __future__ import annotations

import importlib
import pickle
from collections import OrderedDict
from pathlib import Path

import torch

from reidaug.errors import ReidaugError, first_line
from reidaug.utils.io import atomic_path, check_torch_file

# torchreid backbone -> (torchvision architecture, its weights enum); the ResNet family shares layer names.
TORCHVISION_BACKBONES = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
    "resnet152": "ResNet152_Weights",
    "resnext50_32x4d": "ResNeXt50_32X4D_Weights",
    "resnext101_32x8d": "ResNeXt101_32X8D_Weights",
    "resnet50_fc512": "ResNet50_Weights",
}
_NUMPY_SAFE = ("numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar", "numpy.dtype")


def imagenet_candidates(backbone: str) -> list[Path]:
    """Where torchvision (and torchreid) would have cached this backbone's ImageNet weights."""
    if backbone not in TORCHVISION_BACKBONES:
        return []
    import torchvision.models as tvm

    from reidaug.reid._torchreid import reid

    ckpt_dir = Path(torch.hub.get_dir()) / "checkpoints"
    names = [getattr(tvm, TORCHVISION_BACKBONES[backbone]).IMAGENET1K_V1.url.rsplit("/", 1)[-1]]
    arch = "resnet50" if backbone == "resnet50_fc512" else backbone
    legacy = reid.models.resnet.model_urls.get(arch)
    if legacy:
        names.append(legacy.rsplit("/", 1)[-1])
    return [ckpt_dir / n for n in dict.fromkeys(names)]


def _numpy_globals(names: list[str]):
    """The objects behind `names` if every one is a numpy scalar/dtype constructor, else None."""
    objs = []
    for name in names:
        if not (name in _NUMPY_SAFE or (name.startswith("numpy.dtypes.") and name.endswith("DType"))):
            return None
        module, attr = name.rsplit(".", 1)
        try:
            objs.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            return None
    import numpy as np

    # unpickling np.dtype("float32") also builds its class (numpy.dtypes.Float32DType), unlisted in `names`
    return objs + [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]


def load_checkpoint(path: str | Path, trusted: bool = False, map_location="cpu"):
    """torch.load that works on torch >= 2.6 for torchreid checkpoints, safely unless `trusted`."""
    path = Path(path)
    if not path.is_file():
        raise ReidaugError(f"weights file {path} not found")
    check_torch_file(path, "weights")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        pass
    except Exception as e:
        raise ReidaugError(
            f"cannot read weights {path}: {type(e).__name__}: {first_line(e)}"
        ) from None
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:  # not a zip archive: a legacy pickle, random bytes, a torn file
        raise ReidaugError(f"cannot read weights {path}: not a PyTorch checkpoint ({first_line(e)})") from None
    allowed = _numpy_globals(unsafe)
    if allowed is not None:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    if trusted:
        return torch.load(path, map_location=map_location, weights_only=False)
    raise ReidaugError(
        f"{path} needs full unpickling ({', '.join(unsafe[:3])}); set trust_weights=true only if you made it"
    )


def state_dict_of(obj) -> dict:
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ReidaugError("weights file holds no state dict of tensors")
    return OrderedDict((k.removeprefix("module."), v) for k, v in sd.items())


def load_matching(model: torch.nn.Module, state: dict) -> tuple[int, int]:
    """Copy tensors whose name and shape match; returns (loaded, model tensors)."""
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    own.update(matched)
    model.load_state_dict(own)
    return len(matched), len(own)


def init_weights(
    model: torch.nn.Module, backbone: str, pretrained: bool, weights: str | None, trusted: bool
) -> str:
    """Load the requested initial weights; returns one line for the log saying what the model starts from."""
    if weights:
        path = Path(weights).expanduser()
    elif pretrained:
        candidates = imagenet_candidates(backbone)
        if not candidates:
            raise ReidaugError(
                f"no torchvision ImageNet weights for backbone {backbone!r} "
                f"(have: {', '.join(TORCHVISION_BACKBONES)}); pass --weights PATH"
            )
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise ReidaugError(
                f"ImageNet weights for {backbone} are not in torchvision's cache ({candidates[0]}); "
                "no download is attempted: copy the file there or pass --weights PATH"
            )
        path = found[0]
    else:
        return "weights: random initialisation (no pretrained weights)"
    loaded, total = load_matching(model, state_dict_of(load_checkpoint(path, trusted=trusted)))
    if loaded == 0:
        raise ReidaugError(f"no tensor in {path} matches backbone {backbone} by name and shape")
    return f"weights: pretrained from {path} ({loaded}/{total} tensors loaded)"


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Atomic torch.save; numpy scalars become Python numbers so `weights_only=True` loads it."""
    clean = {
        k: (v.item() if hasattr(v, "item") and not isinstance(v, torch.Tensor) else v)
        for k, v in state.items()
    }
    with atomic_path(path) as tmp:
        torch.save(clean, tmp)
    return Path(path)
