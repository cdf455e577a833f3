"""The contract between a method (generator + discriminators + its losses) and the generic trainer.

A batch is a dict of tensors on the training device:
  src_img (B, 3, H, W) in [-1, 1]; src_kp, tgt_kp (B, 18, 2) [y, x] with -1 for missing joints;
  tgt_img (B, 3, H, W) in [-1, 1] during training (absent at generation time).
Multi-source methods add src_imgs (B, M, 3, H, W) and src_kps (B, M, 18, 2).
Heatmaps are made from keypoints on the device inside the method (reidaug.data.keypoints.heatmaps).
"""

from __future__ import annotations

import torch
from torch import nn


class GANMethod(nn.Module):
    """A pose-guided generator with its discriminators and loss terms, as one paper defines them.

    The trainer calls, once per iteration and under autocast when enabled:
      fake = method.generate(batch)
      g_total, g_logs = method.generator_loss(batch, fake)      # then G optimiser step
      d_total, d_logs = method.discriminator_loss(batch, fake.detach())  # then D optimiser step
    """

    generator: nn.Module
    discriminators: nn.ModuleDict

    def generate(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def generator_loss(self, batch, fake) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def discriminator_loss(self, batch, fake) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError
