"""APATN: Aligned Pose-Attentional Transfer Network (paper 001 §3.2.2-3.3; architecture notes §4).

No official code: this is the notes' reconstruction, which reproduces the paper's sizes (one APATB 2.755 M vs
2.76 M; generator 16,976,067 with IN vs 16.93 M). The condition and target poses are encoded separately by
one shared 18-channel encoder; each of the five APATBs aligns the two pose codes with a 512x512 softmax
attention at 32x16, moves condition-image features to target positions with it, and updates both pose codes
with one shared residual block. A bilinear + residual-block decoder produces P_g.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reidaug.errors import ReidaugError
from reidaug.models import registry
from reidaug.models.blocks import Encoder, ResidualBlock, ResidualDecoder, attend, check_choice
from reidaug.models.patn_family import (
    FamilyGenerator,
    FamilyLossConfig,
    FamilyModelConfig,
    PATNFamily,
    family_optimizers,
)


@dataclass
class APATNConfig(FamilyModelConfig):
    n_blocks: int = 5  # APATBs (paper: 1 clearly worse, 9 ~ 5)
    attn_channels: int = 256  # C of theta/phi (Eq. 5)
    value_channels: int = 256  # C' of gamma (Eq. 6)
    attn_scale: bool = False  # scale theta.phi by 1/sqrt(C) (not in the paper)
    out_projection: bool = True  # W_z: 1x1 conv C' -> 256 after the attention (non-local style)
    fuse: str = "cat"  # cat (paper) | add (ablation "cat -> add")
    shared_pose_encoder: bool = True  # one E_S for S_c and S_t (matches the parameter count)
    light_decoder: bool = False  # residual blocks 256->128->64 instead of 256->256->256

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("model.fuse", self.fuse, ("cat", "add"))


class APATB(nn.Module):
    """Aligned Pose-Attentional Transfer Block on the image code F^P and the pose codes F^Sc, F^St."""

    def __init__(self, dim: int, attn_ch: int = 256, value_ch: int = 256, norm: str = "batch",
                 dropout: float = 0.5, out_projection: bool = True, fuse: str = "cat",
                 attn_scale: bool = False):  # fmt: skip
        super().__init__()
        self.theta = nn.Conv2d(dim, attn_ch, 1)  # on the target pose code
        self.phi = nn.Conv2d(dim, attn_ch, 1)  # on the condition pose code
        self.gamma = nn.Conv2d(dim, value_ch, 1)  # on the image code
        self.w_z = nn.Conv2d(value_ch, dim, 1) if out_projection else nn.Identity()
        moved = dim if out_projection else value_ch
        if fuse == "add" and moved != dim:
            raise ReidaugError(
                "model.fuse=add needs out_projection or value_channels equal to the code width"
            )
        self.fuse = fuse
        # conv^P: a 1x1 conv on [F^ || F^P] (PATB's is 3x3, hence the lighter block), then a residual block
        self.conv_u = nn.Conv2d(moved + dim if fuse == "cat" else dim, dim, 1)
        self.res_p = ResidualBlock(dim, dim, norm, dropout)
        self.res_s = ResidualBlock(dim, dim, norm, dropout)  # conv^S, shared by both pose codes
        self.scale = attn_ch**-0.5 if attn_scale else None

    def attention(self, fp, fsc, fst) -> tuple[torch.Tensor, torch.Tensor]:
        """F^_tau (attended image code) and A_tau (B, HW, HW), rows = target positions summing to 1."""
        # Eq. 5: A = softmax_row(theta(F^St) x phi(F^Sc)^T);  Eq. 6: F^ = A x gamma(F^P)
        moved, attn = attend(self.theta(fst), self.phi(fsc), self.gamma(fp), self.scale)
        return self.w_z(moved), attn

    def forward(self, fp, fsc, fst) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        moved, _ = self.attention(fp, fsc, fst)  # alignment from the incoming pose codes (index tau-1)
        fused = torch.cat([moved, fp], 1) if self.fuse == "cat" else moved + fp
        fp = self.res_p(self.conv_u(fused))  # Eq. 7: F^P_tau = conv^P(F^ || F^P_{tau-1})
        return fp, self.res_s(fsc), self.res_s(fst)  # Eq. 8: same residual block, applied separately


class APATNGenerator(FamilyGenerator):
    """synthesize(P_c (B,3,H,W), S_c (B,18,H,W), S_t (B,18,H,W)) -> P_g (B,3,H,W) in [-1, 1]."""

    def __init__(self, cfg: APATNConfig):
        super().__init__(cfg)
        self.enc_a = Encoder(cfg.image_channels, cfg.ngf, cfg.n_downsampling, cfg.norm)  # E_A
        # E_S: one encoder for both poses (index 0 and -1 coincide), or one each.
        self.enc_s = nn.ModuleList(Encoder(cfg.pose_channels, cfg.ngf, cfg.n_downsampling, cfg.norm)
                                   for _ in range(1 if cfg.shared_pose_encoder else 2))  # fmt: skip
        dim = self.enc_a.out_channels
        self.blocks = nn.ModuleList(
            APATB(dim, cfg.attn_channels, cfg.value_channels, cfg.norm, cfg.dropout, cfg.out_projection,
                  cfg.fuse, cfg.attn_scale)
            for _ in range(cfg.n_blocks)
        )  # fmt: skip
        self.decoder = ResidualDecoder(
            dim, cfg.image_channels, cfg.n_downsampling, cfg.norm, cfg.light_decoder
        )

    def synthesize(self, image: torch.Tensor, src_pose: torch.Tensor, tgt_pose: torch.Tensor) -> torch.Tensor:
        fp, fsc, fst = self.enc_a(image), self.enc_s[0](src_pose), self.enc_s[-1](tgt_pose)
        for block in self.blocks:
            fp, fsc, fst = block(fp, fsc, fst)
        return self.decoder(fp)


class APATN(PATNFamily):
    def __init__(self, model_cfg: APATNConfig, loss_cfg: FamilyLossConfig):
        super().__init__(APATNGenerator(model_cfg), model_cfg, loss_cfg)


registry.register(registry.MethodSpec(
    name="apatn", model_schema=APATNConfig, loss_schema=FamilyLossConfig, build=APATN, generator=APATNGenerator,
    optimizers=family_optimizers,
    paper="Progressive and Aligned Pose Attention Transfer for Person Image Generation (TPAMI, APATN)",
))  # fmt: skip
