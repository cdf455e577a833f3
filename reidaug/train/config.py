"""The training recipe (`train:` section of a method config) and the composed method config:

  method, image_size (the [H, W] the generator trains and generates at: images and keypoints are resized on the
  device, generated images back to the data's size, so names and manifests do not change), model (the method's
  schema), loss (its schema), optim (its named optimizers, reidaug.models.optim), stages (its training stages),
  train (this file: the loop, devices, schedule, logging, checkpoints).

Every section's defaults live in its schema (the PATN Market recipe, architecture notes 2.6, for the PATN
family): a YAML file in configs/methods/ states only what differs, and `--set a.b=c` overrides any value.
Batch 32, 87,500 iterations, learning rate constant until iteration 62,375 then linear to 0 at 87,500.
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
from reidaug.data.market import IMAGE_SIZE as DATA_IMAGE_SIZE
from reidaug.errors import ReidaugError


@dataclass
class TrainConfig:
    iterations: int = 87_500  # 700 pseudo-epochs x 125 iterations
    batch_size: int = 32  # global batch: split evenly over DDP processes
    decay_start: int = 62_375  # every optimizer: constant lr before this iteration, then linear to 0 at `iterations`
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


MIN_IMAGE_SIDE = 16  # the generators downsample by up to 8 and attend at the bottleneck


@functools.cache
def method_config_schema(name: str) -> type:
    """The dataclass of a whole method config (one class per method, so configs compare equal)."""
    from reidaug.models import registry
    from reidaug.models.optim import OptimizerConfig, StageConfig

    spec = registry.get(name)
    return dataclasses.make_dataclass(
        f"{spec.model_schema.__name__}MethodConfig",
        [
            ("method", str, field(default=name)),
            ("image_size", list[int], field(default_factory=lambda: list(DATA_IMAGE_SIZE))),
            ("model", spec.model_schema, field(default_factory=spec.model_schema)),
            ("loss", spec.loss_schema, field(default_factory=spec.loss_schema)),
            ("optim", dict[str, OptimizerConfig], field(default_factory=spec.optimizers)),
            ("stages", list[StageConfig], field(default_factory=spec.stages)),
            ("train", TrainConfig, field(default_factory=functools.partial(TrainConfig, **spec.train))),
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
    from reidaug.models import registry

    if cfg.method != name:
        raise ReidaugError(f"config is for method {cfg.method!r}, not {name!r}")
    size = list(cfg.image_size)
    if len(size) != 2 or min(size) < MIN_IMAGE_SIDE:
        raise ReidaugError(f"image_size must be [H, W] with both at least {MIN_IMAGE_SIDE}, got {size}")
    t = cfg.train
    if t.iterations < 1 or t.batch_size < 1:
        raise ReidaugError("train.iterations and train.batch_size must be at least 1")
    if t.decay_start < 0:
        raise ReidaugError(f"train.decay_start must be >= 0, got {t.decay_start}")
    if t.amp_dtype not in ("bf16", "fp16"):
        raise ReidaugError(f"train.amp_dtype must be bf16 or fp16, got {t.amp_dtype!r}")
    for key in ("checkpoint_every", "log_every", "prefetch_factor", "sample_count"):
        if getattr(t, key) < 1:
            raise ReidaugError(f"train.{key} must be at least 1")
    for key in ("num_workers", "keep_every", "sample_every"):
        if getattr(t, key) < 0:
            raise ReidaugError(f"train.{key} must be >= 0, got {getattr(t, key)}")
    declared = set(registry.get(name).optimizers())
    if set(cfg.optim) != declared:
        raise ReidaugError(f"optim names {sorted(cfg.optim)} differ from method {name}'s optimizers {sorted(declared)}")
    registry.num_sources(cfg.model)
    stage_spans(cfg)


def stage_spans(cfg) -> list[tuple[int, int, object, object]]:
    """(start, stop, stage, loss config of the stage) for every stage of a method config, validated."""
    from reidaug.models.optim import StageConfig

    stages = list(cfg.stages) or [StageConfig()]
    iterations, start, spans = cfg.train.iterations, 0, []
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ReidaugError(f"stage names must be unique, got {names}")
    loss_fields = {f.name for f in dataclasses.fields(cfg.loss)}
    for i, st in enumerate(stages):
        last = i == len(stages) - 1
        if st.until is None and not last:
            raise ReidaugError(f"stage {st.name!r}: only the last stage may leave 'until' unset")
        stop = iterations if last else int(st.until)  # the last stage runs to the end of training
        if stop <= start and not last:
            raise ReidaugError(f"stage {st.name!r} ends at iteration {stop}, not after its start {start}")
        unknown = sorted(set(st.train) - set(cfg.optim))
        if unknown:
            raise ReidaugError(f"stage {st.name!r} trains unknown optimizers {unknown}; the method has {sorted(cfg.optim)}")
        if st.sources is not None and st.sources < 1:
            raise ReidaugError(f"stage {st.name!r}: sources must be at least 1, got {st.sources}")
        bad = sorted(set(st.loss) - loss_fields)
        if bad:
            raise ReidaugError(f"stage {st.name!r} overrides unknown loss settings {bad}")
        try:
            loss = dataclasses.replace(cfg.loss, **dict(st.loss)) if st.loss else cfg.loss
        except TypeError as e:
            raise ReidaugError(f"stage {st.name!r}: bad loss override: {e}") from None
        spans.append((start, stop, st, loss))
        start = stop
    return spans
