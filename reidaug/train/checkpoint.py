"""Writing training checkpoints: everything a resumed run needs to continue exactly (the RNG state through
reidaug.utils.runtime.rng_state), atomically. The format, and reading it: reidaug.models.checkpoint."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import torch

from reidaug.models.checkpoint import FORMAT
from reidaug.utils.io import atomic_path


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
