"""`ReidConfig`: everything `reid-eval` needs to train and evaluate one torchreid model on a Market root."""

from __future__ import annotations

from dataclasses import dataclass, field

from reidaug.errors import ReidaugError
from reidaug.utils.runtime import AMP_DTYPES

LOSSES = ("softmax", "triplet", "circle")
SAMPLERS = ("auto", "RandomSampler", "RandomIdentitySampler")
SCHEDULERS = ("none", "single_step", "multi_step", "cosine")
OPTIMIZERS = ("adam", "amsgrad", "sgd", "rmsprop", "radam")
DEVICES = ("auto", "cpu", "cuda")
TRANSFORMS = ("random_flip", "random_crop", "random_patch", "color_jitter", "random_erase")  # torchreid's
TRAIN_DATA = ("auto", "loader", "device")


@dataclass
class ReidConfig:
    # model
    backbone: str = "resnet50"  # any torchreid model name (resnet50, osnet_x1_0, osnet_x0_25, ...)
    loss: str = "softmax"  # softmax | triplet (+ softmax) | circle (+ softmax)
    pretrained: bool = False  # ImageNet weights from torchvision's cache (never downloaded) or `weights`
    weights: str | None = None  # a state dict or torchreid checkpoint to initialise from (implies pretrained)
    trust_weights: bool = False  # allow full unpickling of `weights` (only for files you made yourself)
    # data
    height: int = 256
    width: int = 128
    transforms: list[str] = field(default_factory=lambda: ["random_flip"])  # torchreid transform names
    batch_size: int = 32
    num_instances: int = 4  # images per identity in a batch (identity-balanced sampler)
    sampler: str = "auto"  # auto: RandomSampler for softmax, RandomIdentitySampler for triplet/circle
    workers: int = 2
    train_data: str = "auto"  # loader (torchreid's DataLoader) | device (decoded once onto the device, augmented
    #                           there: reidaug.reid.device_data) | auto: device on CUDA, loader on the CPU
    # optimisation
    epochs: int = 60
    optimizer: str = "adam"
    lr: float = 3e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = False
    staged_lr: bool = False  # new layers at lr, the (pretrained) rest at lr * base_lr_mult
    new_layers: list[str] = field(default_factory=lambda: ["classifier"])
    base_lr_mult: float = 0.1
    scheduler: str = "single_step"  # none | single_step | multi_step | cosine
    stepsize: list[int] = field(default_factory=lambda: [20])
    lr_gamma: float = 0.1
    fixbase_epoch: int = 0  # epochs training only `new_layers` first
    # losses
    label_smooth: bool = True
    margin: float = 0.3  # triplet margin
    metric_weight: float = 1.0  # weight of the triplet / circle term
    softmax_weight: float = 1.0  # weight of the cross-entropy term in triplet / circle
    circle_m: float = 0.25  # Circle loss relaxation margin m
    circle_gamma: float = 128.0  # Circle loss scale gamma (the paper's re-ID value)
    # evaluation
    eval_batch_size: int = 128
    dist_metric: str = "euclidean"  # euclidean (squared) | cosine
    normalize_feature: bool = False
    max_rank: int = 50
    # run
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads for torch (0: torch's default); 1 is much faster on a busy machine
    amp: bool = True  # autocast on the GPU (the shared policy, reidaug.utils.runtime.Amp); ignored on the CPU
    amp_dtype: str = "bf16"  # bf16 | fp16 (fp16 adds loss scaling)
    save_checkpoint: bool = True  # final model in the run folder
    checkpoint_every: int = 1  # epochs between resumable checkpoints (0: none)
    log_every: int = 20  # steps between reads of the losses (progress bar, TensorBoard); each read waits for the GPU


def validate(cfg: ReidConfig) -> ReidConfig:
    """Reject values torchreid would turn into an assertion or a silent no-op."""
    checks = [
        (cfg.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {cfg.loss!r}"),
        (cfg.sampler in SAMPLERS, f"sampler must be one of {', '.join(SAMPLERS)}, got {cfg.sampler!r}"),
        (cfg.amp_dtype in AMP_DTYPES, f"amp_dtype must be one of {', '.join(AMP_DTYPES)}, got {cfg.amp_dtype!r}"),
        (
            cfg.scheduler in SCHEDULERS,
            f"scheduler must be one of {', '.join(SCHEDULERS)}, got {cfg.scheduler!r}",
        ),
        (
            cfg.optimizer in OPTIMIZERS,
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}",
        ),
        (cfg.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {cfg.device!r}"),
        (cfg.train_data in TRAIN_DATA, f"train_data must be one of {', '.join(TRAIN_DATA)}, got {cfg.train_data!r}"),
        (cfg.log_every >= 1, f"log_every must be >= 1, got {cfg.log_every}"),
        (
            set(cfg.transforms) <= set(TRANSFORMS),
            f"transforms must be among {', '.join(TRANSFORMS)}, got {list(cfg.transforms)}",
        ),
        (
            cfg.dist_metric in ("euclidean", "cosine"),
            f"dist_metric must be euclidean or cosine, got {cfg.dist_metric!r}",
        ),
        (cfg.epochs >= 1, f"epochs must be >= 1, got {cfg.epochs}"),
        (cfg.batch_size >= 2, f"batch_size must be >= 2, got {cfg.batch_size}"),
        (
            cfg.height >= 16 and cfg.width >= 16,
            f"image size {cfg.height}x{cfg.width} is too small (min 16x16)",
        ),
        (cfg.num_instances >= 2, f"num_instances must be >= 2, got {cfg.num_instances}"),
        (cfg.lr > 0, f"lr must be > 0, got {cfg.lr}"),
        (cfg.workers >= 0 and cfg.threads >= 0, "workers and threads must be >= 0"),
        (cfg.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {cfg.eval_batch_size}"),
        (cfg.max_rank >= 10, f"max_rank must be >= 10 (rank-10 is reported), got {cfg.max_rank}"),
        (cfg.metric_weight >= 0 and cfg.softmax_weight >= 0, "loss weights must be >= 0"),
        (cfg.loss == "softmax" or cfg.metric_weight + cfg.softmax_weight > 0, "loss weights are both 0"),
        (cfg.circle_gamma > 0 and 0 <= cfg.circle_m < 1, "circle_gamma must be > 0 and circle_m in [0, 1)"),
        (cfg.scheduler != "single_step" or len(cfg.stepsize) == 1, "single_step takes one stepsize"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ReidaugError(msg)
    if cfg.train_data == "device":
        from reidaug.reid.device_data import check_transforms

        check_transforms(cfg.transforms)
    return cfg


def train_data_on_device(cfg: ReidConfig, use_gpu: bool) -> bool:
    """`train_data` resolved: auto puts the training set on the GPU (when the transforms allow it)."""
    if cfg.train_data == "auto":
        from reidaug.reid.device_data import TRANSFORMS

        return use_gpu and all(t.lower() in TRANSFORMS for t in cfg.transforms)
    return cfg.train_data == "device"


def train_sampler(cfg: ReidConfig) -> str:
    if cfg.sampler != "auto":
        return cfg.sampler
    return "RandomSampler" if cfg.loss == "softmax" else "RandomIdentitySampler"
