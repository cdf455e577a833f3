"""Device choice and seeding, shared by training, generation, re-ID and pose extraction."""

from __future__ import annotations

import random

import numpy as np
import torch

from reidaug.errors import ReidaugError


def resolve_device(pref: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` -> the GPU of this (DDP) rank when CUDA is available, else the CPU; `cpu`, `cuda`, `cuda:N` checked."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(pref)
    except (RuntimeError, ValueError):
        raise ReidaugError(f"unknown device {pref!r} (auto, cpu, cuda, cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise ReidaugError(f"unknown device {pref!r} (auto, cpu, cuda, cuda:N)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ReidaugError(f"device {pref} requested but no CUDA device is available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    return dev


def seed_all(seed: int) -> None:
    """Python, numpy and torch (every CUDA device too) from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every global generator a training step or a data loader draws from: Python, NumPy, torch CPU and every
    CUDA device (a checkpoint holds it, so a resumed run draws what the uninterrupted one drew)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},  # fmt: skip
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))  # fmt: skip
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Amp:
    """The mixed-precision policy of train, generate and reid-eval: autocast to `dtype` on CUDA when enabled
    (never on the CPU, where it is slower), and loss scaling only for fp16."""

    def __init__(self, device: torch.device, enabled: bool = True, dtype: str = "bf16"):
        if dtype not in AMP_DTYPES:
            raise ReidaugError(f"amp_dtype must be one of {', '.join(AMP_DTYPES)}, got {dtype!r}")
        self.device_type = torch.device(device).type
        self.enabled = bool(enabled) and self.device_type == "cuda"
        self.dtype = AMP_DTYPES[dtype]

    @property
    def needs_scaler(self) -> bool:
        return self.enabled and self.dtype == torch.float16

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_scaler)

    def __repr__(self) -> str:
        return f"Amp({self.device_type}, {'off' if not self.enabled else self.dtype})"


def package_versions(packages=("torch", "torchvision", "torchreid", "torchmetrics", "torch-fidelity", "lpips",
                               "numpy")) -> dict[str, str]:  # fmt: skip
    """Python, reidaug and the given packages' versions, for the outputs that must say how they were made."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from reidaug import __version__

    out = {"python": platform.python_version(), "reidaug": __version__}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
