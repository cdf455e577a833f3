"""The training recipe (`train:` section of configs/methods/<method>.yaml) and the composed method config.

Defaults are the PATN Market recipe (architecture notes 2.6): Adam 2e-4, betas (0.5, 0.999) for G and D,
batch 32, 87,500 iterations, learning rate constant until iteration 62,375 then linear to 0 at 87,500.
The reference code decays once per 125-iteration pseudo-epoch with factor 1 - max(0, e + 2 - 500) / 201
after e epochs, i.e. the first decayed epoch starts at 499 * 125 = 62,375; here the decay is per iteration
(identical within one pseudo-epoch).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path

from reidaug.config import CONFIG_DIR, load_config
from reidaug.errors import ReidaugError


@dataclass
class TrainConfig:
    iterations: int = 87_500  # 700 pseudo-epochs x 125 iterations
    batch_size: int = 32  # global batch: split evenly over DDP processes
    lr: float = 2e-4  # generator
    lr_d: float | None = None  # discriminators (None: same as lr)
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    decay_start: int = 62_375  # constant lr before this iteration, then linear to 0 at `iterations` (>= it: none)
    seed: int = 0  # model init, dropout, image pool and the pair order (a function of seed and iteration)
    num_workers: int = 4  # DataLoader worker processes decoding images
    pin_memory: bool = True  # page-locked host batches (CUDA only)
    prefetch_factor: int = 4  # batches each worker keeps ready
    amp: bool = True  # autocast on CUDA (ignored on the CPU)
    amp_dtype: str = "bf16"  # bf16 (no loss scaling) or fp16 (with a GradScaler)
    channels_last: bool = True  # NHWC memory format on CUDA
    compile: bool = False  # torch.compile the generator and discriminators
    deterministic: bool = False  # torch.use_deterministic_algorithms and no cuDNN autotuning
    sync_bn: bool = True  # SyncBatchNorm under multi-GPU DDP (CUDA only)
    find_unused_parameters: bool = False  # DDP option for generators with unused branches
    checkpoint_every: int = 2_500  # write checkpoints/latest.pt every this many iterations (and at the end)
    keep_every: int = 12_500  # also keep checkpoints/iter_XXXXXX.pt every this many iterations (0: never)
    sample_every: int = 1_000  # sample grid PNG every this many iterations (0: only at the end)
    sample_count: int = 8  # rows of the sample grid (fixed pairs, chosen with the seed)
    log_every: int = 50  # JSONL/TensorBoard line with mean losses every this many iterations
    tensorboard: bool = True


def lr_factor(iteration: int, iterations: int, decay_start: int) -> float:
    """Multiplier of the base learning rate used at (0-based) `iteration`: 1 before `decay_start`, then
    linear to 0 at `iterations`."""
    if iteration < decay_start:
        return 1.0
    span = max(1, iterations - decay_start)
    return max(0.0, 1.0 - (iteration - decay_start) / span)


@functools.cache
def method_config_schema(name: str) -> type:
    """The dataclass of a whole method config: method, model (the method's schema), loss, train (one class
    per method, so configs compare equal)."""
    from reidaug.models import registry

    spec = registry.get(name)
    return dataclasses.make_dataclass(
        f"{spec.model_schema.__name__}MethodConfig",
        [
            ("method", str, field(default=name)),
            ("model", spec.model_schema, field(default_factory=spec.model_schema)),
            ("loss", spec.loss_schema, field(default_factory=spec.loss_schema)),
            ("train", TrainConfig, field(default_factory=TrainConfig)),
        ],
    )


def default_config_path(name: str) -> Path | None:
    path = CONFIG_DIR / "methods" / f"{name}.yaml"
    return path if path.is_file() else None


def load_method_config(name: str, source: str | Path | None = None, overrides=()):
    """schema defaults <- `source` (default configs/methods/<name>.yaml) <- overrides; checks the method."""
    cfg = load_config(method_config_schema(name), source or default_config_path(name), overrides)
    check_method_config(cfg, name)
    return cfg


def config_from_dict(name: str, data: dict, overrides=()):
    """A method config from a checkpoint's plain dict (plus overrides)."""
    cfg = load_config(method_config_schema(name), data, overrides)
    check_method_config(cfg, name)
    return cfg


def check_method_config(cfg, name: str) -> None:
    if cfg.method != name:
        raise ReidaugError(f"config is for method {cfg.method!r}, not {name!r}")
    t = cfg.train
    if t.iterations < 1 or t.batch_size < 1:
        raise ReidaugError("train.iterations and train.batch_size must be at least 1")
    if t.decay_start < 0:
        raise ReidaugError(f"train.decay_start must be >= 0, got {t.decay_start}")
    if len(t.betas) != 2:
        raise ReidaugError(f"train.betas needs two values, got {list(t.betas)}")
    if t.amp_dtype not in ("bf16", "fp16"):
        raise ReidaugError(f"train.amp_dtype must be bf16 or fp16, got {t.amp_dtype!r}")
    for key in ("checkpoint_every", "log_every"):
        if getattr(t, key) < 1:
            raise ReidaugError(f"train.{key} must be at least 1")
