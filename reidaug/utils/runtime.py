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
