"""PATN: Progressive Pose Attention Transfer Network (paper 001 §3.2.1; architecture notes §3).

Two encoders map the condition image P_c to the image code F^P_0 and the concatenated poses [S_c, S_t] to the
pose code F^S_0 (256@32x16 each); nine PATBs update both codes; a ConvT decoder turns F^P_9 into P_g.
With IN (non-affine, conv biases on) the generator has 41,358,019 parameters, the paper's 41.36 M.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reidaug.models import registry
from reidaug.models.blocks import ConvBlock, ConvTDecoder, Encoder
from reidaug.models.patn_family import (
    FamilyGenerator,
    FamilyLossConfig,
    FamilyModelConfig,
    PATNFamily,
    family_optimizers,
)


@dataclass
class PATNConfig(FamilyModelConfig):
    n_blocks: int = 9  # PATBs (paper ablation: 5 / 9 / 13)


class PATB(nn.Module):
    """Pose-Attentional Transfer Block. The pose pathway conv^S is a pose-type CB (no identity path, as in the
    code); its input is 256 channels for the first block and [X^S, F^P] = 512 afterwards (Eq. 4)."""

    def __init__(self, dim: int, pose_in: int, norm: str = "batch", dropout: float = 0.5):
        super().__init__()
        self.conv_p = ConvBlock("image", dim, dim, norm, dropout)  # conv^P
        self.conv_s = ConvBlock("pose", pose_in, dim, norm, dropout)  # conv^S

    def forward(self, fp: torch.Tensor, fs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xs = self.conv_s(fs)
        mask = torch.sigmoid(xs)  # Eq. 1: M = sigma(conv^S(F^S)), element-wise over 256 channels
        fp = fp + mask * self.conv_p(fp)  # Eqs. 2-3: F^P_tau = M * conv^P(F^P_{tau-1}) + F^P_{tau-1}
        return fp, torch.cat([xs, fp], 1)  # Eq. 4: F^S_tau = conv^S(F^S_{tau-1}) || F^P_tau


class PATNGenerator(FamilyGenerator):
    """synthesize(P_c (B,3,H,W), S_c (B,18,H,W), S_t (B,18,H,W)) -> P_g (B,3,H,W) in [-1, 1]."""

    def __init__(self, cfg: PATNConfig):
        super().__init__(cfg)
        self.enc_a = Encoder(cfg.image_channels, cfg.ngf, cfg.n_downsampling, cfg.norm)  # E_A
        self.enc_s = Encoder(
            2 * cfg.pose_channels, cfg.ngf, cfg.n_downsampling, cfg.norm
        )  # E_S on [S_c, S_t]
        dim = self.enc_a.out_channels
        self.blocks = nn.ModuleList(
            PATB(dim, dim if i == 0 else 2 * dim, cfg.norm, cfg.dropout) for i in range(cfg.n_blocks)
        )
        self.decoder = ConvTDecoder(dim, cfg.image_channels, cfg.n_downsampling, cfg.norm)

    def synthesize(self, image: torch.Tensor, src_pose: torch.Tensor, tgt_pose: torch.Tensor) -> torch.Tensor:
        fp, fs = self.enc_a(image), self.enc_s(torch.cat([src_pose, tgt_pose], 1))
        for block in self.blocks:
            fp, fs = block(fp, fs)
        return self.decoder(fp)  # F^S_T is discarded


class PATN(PATNFamily):
    def __init__(self, model_cfg: PATNConfig, loss_cfg: FamilyLossConfig):
        super().__init__(PATNGenerator(model_cfg), model_cfg, loss_cfg)


registry.register(registry.MethodSpec(
    name="patn", model_schema=PATNConfig, loss_schema=FamilyLossConfig, build=PATN, generator=PATNGenerator,
    optimizers=family_optimizers,
    paper="Progressive Pose Attention Transfer for Person Image Generation (CVPR'19, journal ext.)",
))  # fmt: skip
