"""XingGAN and XingGAN++ (paper 000: "XingGAN for Person Image Generation", ECCV'20, and its journal extension
"Enhanced Multi-Scale Cross-Attention"; architecture notes §5, §6, §14.3 items 14-15).

Both encode P_c into the appearance code F^I_0 and [S_c, S_t] into the shape code F^S_0 (PATN's encoders), then
update both codes in T blocks. Each block applies an image-type CB to F^I and a pose-type CB to F^S, then two
cross-attention branches: SA (shape-guided appearance, F^I_t = X^I + gamma * Att(X^I <- X^S)) and AS
(appearance-guided shape, S^_t = X^S + gamma * Att(X^S <- X^I)); F^S_t = [F^I_t, S^_t] (§5.2). The output head
fuses 2N intermediate images and the input image with 2N + 1 softmax co-attention maps (§5.3): CAF on the last
block (XingGAN) or DCCAF on all blocks (XingGAN++, §6.5).

XingGAN (official code): full-resolution attention, W_q, W_k, W_v and gamma shared by SA and AS, no identity
skip from the block input, 9 blocks: 44,844,634 generator parameters with non-affine IN (paper 44.85 M).
XingGAN++ (reconstructed, no code): multi-scale attention over pyramid-pooled codes (bins 1, 2, 3, 6), the
Enhanced Attention (EA) refinement of each correlation map, separate EMSA / EMAS weights, DCCAF, 5 blocks.
Every open choice of the reconstruction is a config value; the ablations of the journal (B1 SA only ... B6
EMSA+EMAS+DCCAF, multi-head instead of multi-scale, EA off, block count) are configs in configs/methods/.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from reidaug.errors import ReidaugError
from reidaug.models import registry
from reidaug.models.blocks import (
    ConvBlock,
    ConvTDecoder,
    Encoder,
    check_choice,
    conv1x1,
    conv_bias,
    cross_attention,
    norm_act,
    up_layers,
)
from reidaug.models.patn_family import (
    FamilyGenerator,
    FamilyLossConfig,
    FamilyModelConfig,
    PATNFamily,
    family_optimizers,
)

ATTENTIONS = ("xing", "multiscale", "multihead")
FUSIONS = ("none", "caf", "dccaf")
BRANCHES = ("sa", "as")


@dataclass
class XingGANConfig(FamilyModelConfig):
    n_blocks: int = 9  # Xing blocks (paper ablation: 1 / 5 / 9 / 13)
    branches: list[str] = field(default_factory=lambda: ["sa", "as"])  # B1: [sa], B2: [as]
    attention: str = "xing"  # xing (full resolution, §5.2) | multiscale (EMSA/EMAS, §6.3) | multihead (HSA/HAS)
    qk_ratio: int = 8  # query/key channels = code width / 8 (32 for 256, hard-coded in the code)
    share_qkv: bool = True  # one W_q, W_k, W_v, gamma for SA and AS in a block (XingGAN code)
    block_input_skip: bool = False  # add F^I_{t-1} to F^I_t (the paper's wording; the code has no such skip)
    attn_scale: bool = False  # 1/sqrt(d) in the softmax (none of the papers scales)
    fusion: str = "caf"  # none (PATN decoder on F^I: B3) | caf (last block, §5.3) | dccaf (all blocks, §6.5)
    n_images: int = 10  # intermediate images per decoder (2N + 1 co-attention maps)
    # multi-scale attention (XingGAN++)
    bins: list[int] = field(default_factory=lambda: [1, 2, 3, 6])  # PSPNet pyramid levels [inferred]
    square_bins: bool = True  # b x b bins (paper); False: 2b x b, the 2:1 aspect of the code
    level_ratio: int = 4  # value channels per level = width / 4 (4 levels x 64 = 256)
    identity_level: bool = False  # an extra full-resolution level
    ea: bool = False  # Enhanced Attention on each correlation map (§6.4)
    ea_width: int = 32  # EA token width D = min(N_s, ea_width)
    ea_min_positions: int = 5  # EA only where a level has at least this many positions (skips 1x1 and 2x2)
    heads: int = 4  # multihead attention

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("model.attention", self.attention, ATTENTIONS)
        check_choice("model.fusion", self.fusion, FUSIONS)
        for b in self.branches:
            check_choice("model.branches", b, BRANCHES)


@dataclass
class XingGANPPConfig(XingGANConfig):
    """XingGAN++: EMSA + EMAS (multi-scale, EA, own weights), DCCAF, 5 blocks (§6.1)."""

    n_blocks: int = 5
    attention: str = "multiscale"
    share_qkv: bool = False
    fusion: str = "dccaf"
    ea: bool = True


@dataclass
class XingLossConfig(FamilyLossConfig):
    """Market (train_market.sh, §5.4): GAN 5, L1 50, perceptual 50."""

    lambda_l1: float = 50.0
    lambda_perceptual: float = 50.0


# -- cross-attention branches: forward(target, guide) -> scale * update of the target ----------------------------
class XingAttention(nn.Module):
    """Full-resolution cross-attention (§5.2): Q = W_q X_t, K = W_k X_g, V = W_v X_t; A = softmax_j(Q_i . K_j);
    O_i = sum_j A_ij V_j; returns gamma * O (gamma learnable, initialised to 0)."""

    def __init__(self, dim: int, qk: int, scale: float | None):
        super().__init__()
        self.q, self.k, self.v = conv1x1(dim, qk), conv1x1(dim, qk), conv1x1(dim, dim)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.scale = scale

    def forward(self, target: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return self.gamma * cross_attention(self.q(target), self.k(guide), self.v(target), self.scale)


class MultiHeadAttention(XingAttention):
    """HSA / HAS: the same projections split into heads, then a 1x1 output projection (the journal's ablation)."""

    def __init__(self, dim: int, qk: int, scale: float | None, heads: int):
        super().__init__(dim, qk, scale)
        if qk % heads or dim % heads:
            raise ReidaugError(f"model.heads={heads} must divide the query width {qk} and the code width {dim}")
        self.heads, self.out = heads, conv1x1(dim, dim)

    def forward(self, target, guide):
        o = cross_attention(self.q(target), self.k(guide), self.v(target), self.scale, heads=self.heads)
        return self.gamma * self.out(o)


class EnhancedAttention(nn.Module):
    """EA (§6.4): each column of a correlation map E (N_q x N_k), a key's profile over the queries, is a token;
    R^T = softmax(Q'K'^T / sqrt(D)) V' with Q', K' from LayerNorm(E^T W_in) and V' = LayerNorm(E^T); E* = E + R."""

    def __init__(self, n: int, width: int):
        super().__init__()
        d = min(n, width)
        self.reduce, self.norm_x = nn.Linear(n, d), nn.LayerNorm(d)
        self.q, self.k, self.norm_v = nn.Linear(d, d), nn.Linear(d, d), nn.LayerNorm(n)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        cols = e.transpose(1, 2)  # (B, N_k, N_q)
        x = self.norm_x(self.reduce(cols))
        r = F.scaled_dot_product_attention(self.q(x), self.k(x), self.norm_v(cols))  # 1/sqrt(D) (a transformer)
        return e + r.transpose(1, 2)


class PyramidLevel(nn.Module):
    """One level of MSA (§6.3): pool target and guide to `bins`, Q/K (qk ch) and V (`value` ch) by 1x1 convs,
    C = softmax_keys(EA(Q^T K)), O = V C^T, bilinear back to the code's size."""

    def __init__(self, dim: int, qk: int, value: int, bins: tuple[int, int] | None, scale, ea: nn.Module | None):
        super().__init__()
        self.bins, self.scale, self.ea = bins, scale, ea
        self.q, self.k, self.v = conv1x1(dim, qk), conv1x1(dim, qk), conv1x1(dim, value)

    def forward(self, target, guide):
        h, w = target.shape[-2:]
        pool = (lambda x: x) if self.bins is None else (lambda x: F.adaptive_avg_pool2d(x, self.bins))
        pt, pg = pool(target), pool(guide)
        q, k, v = self.q(pt).flatten(2), self.k(pg).flatten(2), self.v(pt)
        energy = torch.bmm(q.transpose(1, 2).float(), k.float())  # (B, N, N), fp32 under autocast
        if self.ea is not None:
            energy = self.ea(energy)
        attn = torch.softmax(energy * (self.scale or 1.0), dim=-1)
        o = torch.bmm(v.flatten(2), attn.transpose(1, 2).to(v.dtype)).view_as(v)
        return o if self.bins is None else F.interpolate(o, size=(h, w), mode="bilinear", align_corners=False)


class MultiScaleAttention(nn.Module):
    """MSA(target <- guide) (§6.3): the pyramid levels concatenated, a 1x1 conv, times alpha (initialised to 0)."""

    def __init__(self, dim: int, qk: int, scale, cfg: XingGANConfig):
        super().__init__()
        value = dim // cfg.level_ratio
        levels = []
        for b in cfg.bins:
            bins = (b, b) if cfg.square_bins else (2 * b, b)
            n = bins[0] * bins[1]
            ea = EnhancedAttention(n, cfg.ea_width) if cfg.ea and n >= cfg.ea_min_positions else None
            levels.append(PyramidLevel(dim, qk, value, bins, scale, ea))
        if cfg.identity_level:
            levels.append(PyramidLevel(dim, qk, value, None, scale, None))
        self.levels = nn.ModuleList(levels)
        self.out = conv1x1(value * len(levels), dim)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, target, guide):
        return self.gamma * self.out(torch.cat([lvl(target, guide) for lvl in self.levels], 1))


def make_attention(dim: int, cfg: XingGANConfig) -> nn.Module:
    qk, scale = dim // cfg.qk_ratio, (dim // cfg.qk_ratio) ** -0.5 if cfg.attn_scale else None
    if cfg.attention == "multiscale":
        return MultiScaleAttention(dim, qk, scale, cfg)
    if cfg.attention == "multihead":
        return MultiHeadAttention(dim, qk, scale, cfg.heads)
    return XingAttention(dim, qk, scale)


class XingBlock(nn.Module):
    """One Xing (or Xing++) block on the appearance code F^I (dim) and shape code F^S (pose_in = dim or 2 dim)."""

    def __init__(self, dim: int, pose_in: int, cfg: XingGANConfig):
        super().__init__()
        self.conv_i = ConvBlock("image", dim, dim, cfg.norm, cfg.dropout)
        self.conv_s = ConvBlock("pose", pose_in, dim, cfg.norm, cfg.dropout)
        self.sa = make_attention(dim, cfg) if "sa" in cfg.branches else None
        self.shared = cfg.share_qkv and self.sa is not None  # AS reuses SA's projections and gamma
        self.as_ = make_attention(dim, cfg) if "as" in cfg.branches and not self.shared else None
        self.use_as = "as" in cfg.branches
        self.skip = cfg.block_input_skip

    def forward(self, fi, fs):
        xi, xs = self.conv_i(fi), self.conv_s(fs)
        new_i = xi if self.sa is None else xi + self.sa(xi, xs)  # SA: appearance <- shape
        if self.skip:
            new_i = new_i + fi
        as_ = self.sa if self.shared else self.as_
        s_hat = xs + as_(xs, xi) if self.use_as else xs  # AS: shape <- appearance (pre-update X^I)
        return new_i, s_hat


class CoAttentionFusion(nn.Module):
    """2N intermediate images from the appearance and shape decoders, fused with the input image by 2N + 1
    softmax co-attention maps (§5.3 CAF on one block; §6.5 DCCAF on the codes of every block)."""

    def __init__(self, dim: int, cfg: XingGANConfig):
        super().__init__()
        n, norm, self.n = cfg.n_images, cfg.norm, cfg.n_images
        bias = conv_bias(norm)
        if cfg.fusion == "caf":  # F^I (dim), F^S = [F^I, S^] (2 dim) of the last block
            self.app = ConvTDecoder(dim, 3 * n, cfg.n_downsampling, norm)
            self.shape = nn.Sequential(*norm_act(nn.ConvTranspose2d(2 * dim, dim, 1, bias=bias), dim, norm),
                                       ConvTDecoder(dim, 3 * n, cfg.n_downsampling, norm))  # fmt: skip
            head, c = [], 3 * dim
        else:  # dccaf: A = [F^I_1..F^I_T], S = [S^_1..S^_T]
            t = cfg.n_blocks
            self.app, self.shape = (nn.Sequential(*norm_act(conv1x1(t * dim, dim, bias), dim, norm),
                                                  ConvTDecoder(dim, 3 * n, cfg.n_downsampling, norm))
                                    for _ in range(2))  # fmt: skip
            head, c = norm_act(conv1x1(2 * t * dim, 2 * dim, bias), 2 * dim, norm), 2 * dim
        for _ in range(cfg.n_downsampling):
            nxt = dim if c > dim else c // 2
            head += up_layers(c, nxt, norm)
            c = nxt
        head.append(nn.ConvTranspose2d(c, 2 * n + 1, 1, bias=bias) if cfg.fusion == "caf"  # no bias under BN (code)
                    else conv1x1(c, 2 * n + 1))
        self.attention = nn.Sequential(*head)
        self.dense = cfg.fusion == "dccaf"

    def forward(self, image: torch.Tensor, codes_i: list, codes_s: list) -> torch.Tensor:
        if self.dense:
            a, s = torch.cat(codes_i, 1), torch.cat(codes_s, 1)
        else:
            a, s = codes_i[-1], torch.cat([codes_i[-1], codes_s[-1]], 1)  # F^S_T = [F^I_T, S^_T]
        joint = torch.cat([a, s], 1)
        b, n = image.shape[0], self.n
        imgs = torch.cat([self.app(a), self.shape(s)], 1).view(b, 2 * n, 3, *image.shape[-2:])
        maps = torch.softmax(self.attention(joint).float(), dim=1).to(imgs.dtype)  # (B, 2N + 1, H, W)
        return (imgs * maps[:, : 2 * n, None]).sum(1) + image * maps[:, 2 * n :]


class XingGANGenerator(FamilyGenerator):
    """synthesize(P_c, S_c, S_t) -> P_g: encoders, T Xing blocks, co-attention fusion (or PATN's decoder)."""

    def __init__(self, cfg: XingGANConfig):
        super().__init__(cfg)
        self.enc_a = Encoder(cfg.image_channels, cfg.ngf, cfg.n_downsampling, cfg.norm)  # appearance: P_c
        self.enc_s = Encoder(2 * cfg.pose_channels, cfg.ngf, cfg.n_downsampling, cfg.norm)  # shape: [S_c, S_t]
        dim = self.enc_a.out_channels
        self.blocks = nn.ModuleList(XingBlock(dim, dim if i == 0 else 2 * dim, cfg) for i in range(cfg.n_blocks))
        if cfg.fusion == "none":
            self.decoder = ConvTDecoder(dim, cfg.image_channels, cfg.n_downsampling, cfg.norm)
        else:
            self.fusion = CoAttentionFusion(dim, cfg)
        self.mode = cfg.fusion

    def synthesize(self, image, src_pose, tgt_pose):
        fi, fs = self.enc_a(image), self.enc_s(torch.cat([src_pose, tgt_pose], 1))
        codes_i, codes_s = [], []
        for block in self.blocks:
            fi, s_hat = block(fi, fs)
            fs = torch.cat([fi, s_hat], 1)  # F^S_t = [F^I_t, S^_t]
            codes_i.append(fi)
            codes_s.append(s_hat)
        if self.mode == "none":
            return self.decoder(fi)
        return self.fusion(image, codes_i, codes_s)


class XingGAN(PATNFamily):
    def __init__(self, model_cfg: XingGANConfig, loss_cfg: XingLossConfig):
        super().__init__(XingGANGenerator(model_cfg), model_cfg, loss_cfg)


registry.register(registry.MethodSpec(
    name="xinggan", model_schema=XingGANConfig, loss_schema=XingLossConfig, build=XingGAN,
    generator=XingGANGenerator, optimizers=family_optimizers,
    paper="XingGAN for Person Image Generation (ECCV'20)",
))  # fmt: skip
registry.register(registry.MethodSpec(
    name="xingganpp", model_schema=XingGANPPConfig, loss_schema=XingLossConfig, build=XingGAN,
    generator=XingGANGenerator, optimizers=family_optimizers,
    paper="XingGAN++: enhanced multi-scale cross-attention (journal extension of XingGAN, reconstructed)",
))  # fmt: skip
