"""What a method declares about its optimisation: named optimizers and training stages (config schemas), and the
one optimizer factory methods use in `configure_optimizers`.

In a method config:
  optim:   {generator: {lr: 2e-4, betas: [0.5, 0.999]}, discriminators: {...}}   one entry per named optimizer
  stages:  [{name: flow, until: 20000, train: [flow], loss: {lambda_flow: 20}}, {name: full}]
A stage runs from the previous stage's `until` to its own (the last one to train.iterations); `train` lists the
optimizers that step in it (empty: all), `loss` overrides loss-config values while it runs and `sources` trains
on the first k of each sample's M sources (a generator that takes any M: train at M = 2, fine-tune at M). No stages: one
stage that trains everything with the loss config as it is. The learning-rate schedule (train.decay_start) is
the run's, applied to every optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from reidaug.errors import ReidaugError

OPTIMIZERS = ("adam", "adamw")


@dataclass
class OptimizerConfig:
    kind: str = "adam"  # adam | adamw
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in OPTIMIZERS:
            raise ReidaugError(f"optim kind must be one of {', '.join(OPTIMIZERS)}, got {self.kind!r}")
        if len(self.betas) != 2:
            raise ReidaugError(f"optim betas needs two values, got {list(self.betas)}")
        if self.lr < 0:
            raise ReidaugError(f"optim lr must be >= 0, got {self.lr}")


@dataclass
class StageConfig:
    name: str = "main"
    until: int | None = None  # iteration at which the stage ends (None: train.iterations)
    train: list[str] = field(default_factory=list)  # optimizers stepped in this stage (empty: all)
    loss: dict[str, float] = field(default_factory=dict)  # loss-config overrides while the stage runs
    sources: int | None = None  # train on the first min(sources, M) sources of each sample (None: all M)


def make_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over `params` with the config's learning rate, betas and weight decay."""
    cls = torch.optim.AdamW if cfg.kind == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
