"""Writing training checkpoints (everything a resumed run needs to continue exactly, atomically) and the RNG
state they hold. The format, and reading it: reidaug.models.checkpoint."""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from reidaug.models.checkpoint import FORMAT
from reidaug.utils.io import atomic_path


def rng_state() -> dict:
    """The generators a training step draws from: Python, NumPy, torch CPU (dropout) and every CUDA device."""
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


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """torch.save to a temporary file beside `path`, then rename: never a truncated checkpoint."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.save({"format": FORMAT, **state}, tmp)
        except RuntimeError as e:  # torch's stream writer reports a failed write() as a RuntimeError
            if "write" not in str(e).lower():
                raise
            full = shutil.disk_usage(tmp.parent).free < (1 << 20)
            raise OSError(errno.ENOSPC if full else errno.EIO, os.strerror(errno.ENOSPC if full else errno.EIO),
                          str(path)) from None  # fmt: skip
    return path
