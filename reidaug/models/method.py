"""The contract between a method and the rest of reidaug.

A method is two things, built from its config alone:

* a **generator** (`PoseGenerator`): what `generate` and `augment` run. `generator(batch)` returns a dict with
  "image" (B, 3, H, W) in [-1, 1] and whatever else the forward pass makes (flow fields, attention, warped
  features) for the losses. It is built from the model config only (`MethodSpec.generator`): no
  discriminator, no VGG, no loss setting.
* a **training method** (`Method`, an nn.Module): the generator plus its discriminators, loss networks, EMA
  copies and buffers (image pools), all standard module state, so `state_dict()` is the whole method.
  `configure_optimizers(optim)` returns its named optimizers (`optim`: name -> OptimizerConfig, from the config);
  `training_step(batch, step)` performs one iteration in the method's own order with the trainer's `step`
  helper (reidaug.train.steps.Steps: autocast, `frozen(...)` parts, `step(names, loss)`, the current stage and
  its loss weights) and returns the values to log. `inference_module()` is the module `generate` uses (the EMA
  copy where the method keeps one). `parts` names the submodules that train (DDP wraps each of them).

A batch is a dict of tensors on the device (reidaug.data.samples): src_img (B, M, 3, H, W) in [-1, 1],
src_kp (B, M, 18, 2), tgt_kp (B, 18, 2) [y, x] with -1 for missing joints, tgt_img (B, 3, H, W) when known
(always in training). M (`model.num_sources`, default 1) sources per target; heatmaps are made from keypoints on
the device by the method (reidaug.data.keypoints.heatmaps).
"""

from __future__ import annotations

import torch
from torch import nn


class PoseGenerator(nn.Module):
    """Base of every inference module: `forward(batch) -> {"image": ..., ...}` for M = `num_sources` sources."""

    num_sources: int = 1
    variable_sources: bool = False  # True: any M >= 1 at generation time (attention over sources)
    image_size: tuple[int, int] | None = None  # (H, W) it works at (the method config's image_size); None: the data's

    def accepts_sources(self, m: int) -> bool:
        return m == self.num_sources or (self.variable_sources and m >= 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class Method(nn.Module):
    """A pose-guided generator with its discriminators, losses and optimisation, as one paper defines them."""

    generator: PoseGenerator
    parts: tuple[str, ...] = ("generator",)  # submodule paths that train (wrapped by DDP, SyncBN on CUDA)
    progress_keys: tuple[str, ...] = ()  # logged values the progress bar shows (default: the first three)

    def configure_optimizers(self, optim: dict) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def training_step(self, batch: dict[str, torch.Tensor], step) -> dict[str, torch.Tensor | float]:
        """One iteration; returns the values to log (0-d tensors stay on the device: the trainer reads them every
        `log_every` iterations, so the hot loop never waits for the device)."""
        raise NotImplementedError

    def inference_module(self) -> nn.Module:
        return self.generator


def ema(module: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of `module`'s parameters and buffers (torch's AveragedModel);
    update it with `.update_parameters(module)` after each step, generate with `.module`."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def logged(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Loss terms as detached fp32 scalars for the log, without a device sync."""
    return {k: t.detach().float().reshape(()) for k, t in terms.items()}
