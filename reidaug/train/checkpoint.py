"""Training checkpoints: everything a resumed run needs to continue exactly, written atomically.

A checkpoint is a dict loadable with `torch.load(weights_only=True)` (tensors and plain Python values only):
  format, reidaug_version, method, config (the resolved config as a plain dict), iteration (completed),
  models {generator, discriminators {name: state}, pools {attr: {images, generator}}},
  optimizers {generator, discriminators}, schedulers {generator, discriminators}, scaler,
  rng [per DDP rank: {python, numpy, torch, cuda}], sampler {seed, n, global_batch, start}.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from reidaug.errors import ReidaugError, first_line
from reidaug.utils.io import atomic_path

FORMAT = "reidaug-gan-checkpoint/1"


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


def find_pools(method) -> dict:
    """Image history pools held by a method (attributes, or values of dict attributes), by attribute path."""
    from reidaug.models.losses import ImagePool

    pools = {}
    for name, value in vars(method).items():
        if isinstance(value, ImagePool):
            pools[name] = value
        elif isinstance(value, dict):
            pools.update({f"{name}.{k}": v for k, v in value.items() if isinstance(v, ImagePool)})
    return pools


def pool_states(method) -> dict:
    return {
        name: {
            "images": [t.detach().to("cpu", copy=True) for t in pool.images],
            "generator": None if pool.generator is None else pool.generator.get_state(),
        }
        for name, pool in find_pools(method).items()
    }


def load_pool_states(method, states: dict, device) -> None:
    pools = find_pools(method)
    if set(pools) != set(states):
        raise ReidaugError(f"checkpoint image pools {sorted(states)} do not match the method's {sorted(pools)}")
    for name, st in states.items():
        pool = pools[name]
        pool.images = [t.to(device) for t in st["images"]]
        if st["generator"] is not None and pool.generator is not None:
            pool.generator.set_state(st["generator"])


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """torch.save to a temporary file beside `path`, then rename: never a truncated checkpoint."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load and check a training checkpoint; one error line for a missing, unreadable or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise ReidaugError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ReidaugError(f"cannot read checkpoint {path}: {first_line(e)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ReidaugError(f"{path} is not a reidaug training checkpoint")
    return ckpt


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its checkpoints/latest.pt)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "latest.pt"
    if not path.is_file():
        raise ReidaugError(f"checkpoint {path} not found")
    return path
