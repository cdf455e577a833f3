"""2s-ATN: Two-Stream Appearance Transfer Network (paper 003; architecture notes §7, §14.3 item 16).

No official code: this is the notes' reconstruction as PATN with each PATB replaced by an AT-block, which gives the
paper's size to the parameter (43,281,292 with non-affine IN; paper 43.28 M). The source stream encodes
[I_s, P_s] (21 ch), the target stream P_t (18 ch). In each of the nine AT-blocks the target stream queries the
source stream (AT-module), then two fusion modules update both streams; PATN's decoder turns the final target
features into the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reidaug.models import registry
from reidaug.models.blocks import ConvBlock, ConvTDecoder, Encoder, check_choice, conv1x1, cross_attention
from reidaug.models.optim import OptimizerConfig
from reidaug.models.patn_family import FamilyGenerator, FamilyLossConfig, FamilyModelConfig, PATNFamily

FUSIONS = ("cat", "add")


@dataclass
class TwoStreamConfig(FamilyModelConfig):
    norm: str = "instance"  # the paper's IN (notes 14.1.1)
    n_blocks: int = 9  # AT-blocks (paper ablation: 5 / 7 / 9 / 11 / 13)
    qk_ratio: int = 8  # C~ = C / 8 (32)
    value_ratio: int = 2  # C^ = C / 2 (128)
    attn_scale: bool = False  # no 1/sqrt(C~) in the paper
    at_module: bool = True  # ablation "w/o AT-module": A' = T
    target_fusion: str = "cat"  # cat: F'_t = F_t + conv1x1([A' || S]) | add: F'_t = F_t + A' + S
    source_fusion: str = "cat"  # cat: F'_s = [S || F'_t] (512 ch) | add: F'_s = S + F'_t (256 ch)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("model.target_fusion", self.target_fusion, FUSIONS)
        check_choice("model.source_fusion", self.source_fusion, FUSIONS)


@dataclass
class TwoStreamLossConfig(FamilyLossConfig):
    """(alpha_g, alpha_1, alpha_p) = (20, 17, 17), stated for both datasets (§7.1)."""

    lambda_gan: float = 20.0
    lambda_l1: float = 17.0
    lambda_perceptual: float = 17.0


class ATBlock(nn.Module):
    """AT-block on the target features F_t (dim) and source features F_s (src_in = dim or 2 dim) (§7.2)."""

    def __init__(self, dim: int, src_in: int, cfg: TwoStreamConfig):
        super().__init__()
        self.conv_t = ConvBlock("image", dim, dim, cfg.norm, cfg.dropout)  # T
        self.conv_s = ConvBlock("pose", src_in, dim, cfg.norm, cfg.dropout)  # S
        qk = dim // cfg.qk_ratio
        self.at = cfg.at_module
        if self.at:
            self.q, self.k = conv1x1(dim, qk), conv1x1(dim, qk)  # Q = W_q T, K = W_k S
            self.v, self.w_o = conv1x1(dim, dim // cfg.value_ratio), conv1x1(dim // cfg.value_ratio, dim)
            self.sigma = nn.Parameter(torch.zeros(1))
        self.scale = qk**-0.5 if cfg.attn_scale else None
        self.fuse_t = conv1x1(2 * dim, dim) if cfg.target_fusion == "cat" else None
        self.cat_s = cfg.source_fusion == "cat"

    def forward(self, ft: torch.Tensor, fs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t, s = self.conv_t(ft), self.conv_s(fs)
        if self.at:  # D = softmax over source positions of Q^T K; A = W_o V D^T; A' = sigma A + T
            a = self.sigma * self.w_o(cross_attention(self.q(t), self.k(s), self.v(s), self.scale)) + t
        else:
            a = t
        ft = ft + (self.fuse_t(torch.cat([a, s], 1)) if self.fuse_t is not None else a + s)  # target fusion
        return ft, torch.cat([s, ft], 1) if self.cat_s else s + ft  # source fusion


class TwoStreamGenerator(FamilyGenerator):
    """synthesize(I_s, P_s, P_t) -> image: source encoder on [I_s, P_s], target encoder on P_t, AT-blocks, decoder."""

    def __init__(self, cfg: TwoStreamConfig):
        super().__init__(cfg)
        self.enc_s = Encoder(cfg.image_channels + cfg.pose_channels, cfg.ngf, cfg.n_downsampling, cfg.norm)
        self.enc_t = Encoder(cfg.pose_channels, cfg.ngf, cfg.n_downsampling, cfg.norm)
        dim = self.enc_t.out_channels
        src_in = 2 * dim if cfg.source_fusion == "cat" else dim
        self.blocks = nn.ModuleList(ATBlock(dim, dim if i == 0 else src_in, cfg) for i in range(cfg.n_blocks))
        self.decoder = ConvTDecoder(dim, cfg.image_channels, cfg.n_downsampling, cfg.norm)

    def synthesize(self, image, src_pose, tgt_pose):
        fs, ft = self.enc_s(torch.cat([image, src_pose], 1)), self.enc_t(tgt_pose)
        for block in self.blocks:
            ft, fs = block(ft, fs)
        return self.decoder(ft)  # F'_s of the last block is discarded


class TwoStream(PATNFamily):
    def __init__(self, model_cfg: TwoStreamConfig, loss_cfg: TwoStreamLossConfig):
        super().__init__(TwoStreamGenerator(model_cfg), model_cfg, loss_cfg)


def optimizers() -> dict[str, OptimizerConfig]:
    """Adam 1e-4, betas (0.5, 0.999) for G and the Ds (§7.1)."""
    return {"generator": OptimizerConfig(lr=1e-4), "discriminators": OptimizerConfig(lr=1e-4)}


registry.register(registry.MethodSpec(
    name="twostream", model_schema=TwoStreamConfig, loss_schema=TwoStreamLossConfig, build=TwoStream,
    generator=TwoStreamGenerator, optimizers=optimizers,
    train={"iterations": 90_000, "decay_start": 60_000},  # constant 60 K, then linear to 0 over 30 K (§7.1)
    paper="Two-Stream Appearance Transfer Network for Person Image Generation (2s-ATN, reconstructed)",
))  # fmt: skip
