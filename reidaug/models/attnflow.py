"""Attention + flow (paper 002: Ren, Wu, Li, Liu, Li, "Combining Attention with Flow for Person Image
Synthesis", ACM MM'21; architecture notes §8, §14.3 item 17). No official code: a reconstruction from the paper
and the authors' GFLA components (notes 8.2) at the notes' Market scales (8.3); flagged "reconstructed".

Deformation estimation (§3.1), at every warp scale (16x8 and 32x16 for 128x64 crops):
  k = E_x(x_r), q = E_s(s_t)                                   (Eq. 1; centred and L2-normalised: beta is a cosine)
  C^{i,j} = exp(alpha beta^{i,j}) / sum_i' exp(alpha beta^{i',j}), beta^{i,j} = k^i . q^j, alpha = 100   (Eq. 2)
  W_a(x, C)^j = sum_i C^{i,j} x^i                              (Eq. 3: scaled_dot_product_attention, scale alpha)
  w = F(s_t, s_r, x_r)                                         (Eq. 4: GFLA's PoseFlowNet, a flow head per scale)
  W_f(x, w) = x sampled bilinearly at p + w(p)                 (Eq. 5: grid_sample)
  m = sigmoid(M(W_a(x_r_down, C), W_f(x_r_down, w)))           (Eq. 6)
Image synthesis (§3.2): f_a = m W_a(f_r, C) + (1 - m) W_f(f_r, w) (Eq. 8); f_o = f_t + f_a at the coarse scale
(Eq. 9), the finer f_a added where the decoder reaches its scale.
Losses (§3.3): attention (Eq. 10), sampling correctness (Eq. 11-12) and affine regularisation (Eq. 13-14) on the
flow, perceptual (15), style (17), adversarial (18: LSGAN on GFLA's unconditional spectral-norm discriminator);
GFLA's pixel L1 is a weight (0: not in the paper's objective); the face loss is left out (off for Market, 8.3).
Training: stage "deformation" (the estimator alone: attention, correctness, regularisation), then end to end;
the discriminator steps before the generator (GFLA); an EMA of the generator is what generation runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from reidaug.config import check_choice
from reidaug.data.keypoints import NUM_JOINTS, heatmaps
from reidaug.errors import ReidaugError
from reidaug.models import registry
from reidaug.models.blocks import (
    INITS,
    NORMS,
    activation,
    conv_bias,
    cross_attention,
    init_weights,
    norm_layer,
)
from reidaug.models.discriminators import DiscriminatorConfig, build_discriminator
from reidaug.models.losses import DISTANCES, GAN_MODES, GANLoss, PerceptualLoss
from reidaug.models.method import Method, PoseGenerator, ema, logged
from reidaug.models.optim import OptimizerConfig, StageConfig, make_optimizer
from reidaug.models.vgg import LAYERS

PADDINGS = ("border", "zeros", "reflection")


@dataclass
class AttnFlowConfig:
    """Generator (notes 8.3) and discriminator (8.2) of the Market instantiation; widths for 128x64 crops."""

    image_channels: int = 3
    pose_channels: int = NUM_JOINTS
    heatmap_sigma: float = 6.0  # pixels (notes 1.4)
    norm: str = "instance_affine"  # GFLA's affine IN (notes 14.1.1)
    slope: float = 0.1  # LeakyReLU slope everywhere (GFLA)
    norm_input: bool = False  # True: the first block normalises the raw input (GFLA's pre-activation) [inferred]
    ngf: int = 64  # synthesis encoders: ngf, 2 ngf, 4 ngf channels at 1/2, 1/4, 1/8
    n_downsampling: int = 3  # encoder blocks: 128x64 -> 16x8
    warp_scales: int = 2  # warp at the coarsest this many encoder levels: 16x8 and 32x16
    n_blocks: int = 2  # residual blocks of each combination-map generator M (the paper's "several")
    comb_channels: int = 32  # width of M
    corr_ngf: int = 32  # correlation encoders E_x (image) and E_s (target skeleton)
    corr_dim: int = 64  # K, channels of k and q
    alpha: float = 100.0  # softmax sharpness (Eq. 2; paper: 100 for all experiments)
    corr_centre: bool = True  # subtract each position's channel mean before the L2 norm [rec]
    attn_fp32: bool = True  # the correlation softmax in float32 under autocast (alpha 100 amplifies rounding)
    flow_ngf: int = 32  # PoseFlowNet: encoder blocks flow_ngf, 2 flow_ngf, ... capped at flow_max
    flow_max: int = 256
    flow_depth: int = 5  # its encoder blocks: 128x64 -> 4x2
    flow_padding: str = "border"  # grid_sample outside the map: border (GFLA clamps) | zeros | reflection
    init: str = "orthogonal"  # conv weights: orthogonal (GFLA) | normal
    init_gain: float = 0.02
    ema_decay: float = 0.999  # generation uses this running average of the generator's weights
    discriminator: DiscriminatorConfig = field(default_factory=lambda: DiscriminatorConfig(
        kind="residual", ndf=32, n_downsampling=3, norm="none", activation="lrelu", slope=0.1, spectral_norm=True))

    def __post_init__(self) -> None:
        check_choice("model.norm", self.norm, NORMS)
        check_choice("model.flow_padding", self.flow_padding, PADDINGS)
        check_choice("model.init", self.init, INITS)
        if not 1 <= self.warp_scales <= self.n_downsampling - 1:
            raise ReidaugError(f"model.warp_scales must be 1 to n_downsampling - 1 = {self.n_downsampling - 1}, "
                               f"got {self.warp_scales}")  # fmt: skip
        if self.flow_depth < self.n_downsampling:
            raise ReidaugError(f"model.flow_depth ({self.flow_depth}) must be at least model.n_downsampling "
                               f"({self.n_downsampling})")  # fmt: skip
        if not 0.0 <= self.ema_decay < 1.0:
            raise ReidaugError(f"model.ema_decay must be in [0, 1), got {self.ema_decay}")

    def factors(self) -> list[int]:
        """Down-sampling factor of each warp scale, coarse first: [8, 4]."""
        d = self.n_downsampling
        return [2 ** (d - i) for i in range(self.warp_scales)]


@dataclass
class AttnFlowLossConfig:
    """Notes 8.3: GFLA's Market weights plus lambda_attn 5 per scale (the paper's are unpublished)."""

    gan_mode: str = "lsgan"
    lambda_attn: float = 5.0  # Eq. 10, per warp scale
    lambda_flow: float = 5.0  # Eq. 11, per warp scale (stage 1: 20)
    lambda_regu: float = 0.0025  # Eq. 13, per warp scale (stage 1: 0.01)
    lambda_perceptual: float = 0.5  # Eq. 15
    lambda_style: float = 500.0  # Eq. 17
    lambda_adv: float = 2.0  # Eq. 18, generator term (the discriminator's loss is unweighted, as GFLA)
    lambda_l1: float = 0.0  # pixel L1 (GFLA: 5; not in the paper's objective)
    perceptual_layers: list[str] = field(default_factory=lambda: ["relu1_1", "relu2_1", "relu3_1", "relu4_1",
                                                                  "relu5_1"])  # fmt: skip
    style_layers: list[str] = field(default_factory=lambda: ["relu2_2", "relu3_4", "relu4_4", "relu5_2"])
    perceptual_distance: str = "l1"
    vgg_weights: str = "auto"  # auto (torch hub cache, never downloads) | none (random, warns) | PATH
    regu_size: int = 3  # affine-fit patch n x n (Eq. 13)

    def __post_init__(self) -> None:
        check_choice("loss.gan_mode", self.gan_mode, GAN_MODES)
        check_choice("loss.perceptual_distance", self.perceptual_distance, DISTANCES)
        for name in [*self.perceptual_layers, *self.style_layers]:
            check_choice("loss VGG layer", name, LAYERS)
        if self.regu_size < 2:
            raise ReidaugError(f"loss.regu_size must be at least 2, got {self.regu_size}")


IMAGE_LOSSES = ("lambda_l1", "lambda_perceptual", "lambda_style", "lambda_adv")


# -- GFLA blocks (notes 8.2): pre-activation, LeakyReLU(slope), the configured norm ------------------------------
def act(cfg: AttnFlowConfig) -> nn.Module:
    return activation("lrelu", cfg.slope, inplace=False)


class EncoderBlock(nn.Sequential):
    """EB (in -> out): N(in), act, conv 4x4 s2 p1, N(out), act, conv 3x3 (halves H and W); `first` without the
    leading N, act unless model.norm_input."""

    def __init__(self, in_ch: int, out_ch: int, cfg: AttnFlowConfig, first: bool = False):
        bias = conv_bias(cfg.norm)
        pre = [] if first and not cfg.norm_input else [norm_layer(cfg.norm, in_ch), act(cfg)]
        super().__init__(*pre, nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=bias), norm_layer(cfg.norm, out_ch), act(cfg),
                         nn.Conv2d(out_ch, out_ch, 3, 1, 1))  # fmt: skip


class ResBlock(nn.Module):
    """RB (c): x + [N, act, conv 3x3, N, act, conv 3x3](x)."""

    def __init__(self, ch: int, cfg: AttnFlowConfig):
        super().__init__()
        bias = conv_bias(cfg.norm)
        self.body = nn.Sequential(norm_layer(cfg.norm, ch), act(cfg), nn.Conv2d(ch, ch, 3, 1, 1, bias=bias),
                                  norm_layer(cfg.norm, ch), act(cfg), nn.Conv2d(ch, ch, 3, 1, 1))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def up_conv(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(in_ch, out_ch, 3, 2, 1, output_padding=1)


class ResUpBlock(nn.Module):
    """RUB (in -> out, hidden out [inferred]): [N, act, conv 3x3, N, act, ConvT 3x3 s2](x) + ConvT 3x3 s2 (x)."""

    def __init__(self, in_ch: int, out_ch: int, cfg: AttnFlowConfig):
        super().__init__()
        self.body = nn.Sequential(norm_layer(cfg.norm, in_ch), act(cfg),
                                  nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=conv_bias(cfg.norm)),
                                  norm_layer(cfg.norm, out_ch), act(cfg), up_conv(out_ch, out_ch))  # fmt: skip
        self.shortcut = up_conv(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


def head(in_ch: int, out_ch: int, cfg: AttnFlowConfig) -> list[nn.Module]:
    """act, RP(1), conv 3x3 with bias: GFLA's Jump (skip projection) and the body of its output layers."""
    return [act(cfg), nn.ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3)]


class PyramidEncoder(nn.ModuleList):
    """`depth` EBs; forward returns every level's features, finest first (level i at 1 / 2^(i+1))."""

    def __init__(self, in_ch: int, widths: list[int], cfg: AttnFlowConfig):
        super().__init__(EncoderBlock(c_in, c_out, cfg, first=i == 0)
                         for i, (c_in, c_out) in enumerate(zip([in_ch, *widths], widths)))  # fmt: skip
        self.widths = widths

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self:
            x = block(x)
            out.append(x)
        return out


# -- the two warping operators and the correlation ---------------------------------------------------------------
def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """W_f(x, w) (Eq. 5): x (B, C, H, W) sampled bilinearly at p + w(p); w (B, 2, H, W) in pixels of x's grid,
    channel 0 horizontal, channel 1 vertical. A zero flow returns x."""
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w)
    flow = flow.float()
    gx = (2 * (xs + flow[:, 0]) + 1) / w - 1  # pixel centres in [-1, 1] (align_corners=False)
    gy = (2 * (ys + flow[:, 1]) + 1) / h - 1
    grid = torch.stack([gx, gy], -1)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode=padding, align_corners=False).to(x.dtype)


def unit_features(x: torch.Tensor, centre: bool = True) -> torch.Tensor:
    """k or q for Eq. 2: each position's K-vector, centred over channels, L2-normalised (beta is a cosine), in
    float32."""
    x = x.float()
    if centre:
        x = x - x.mean(1, keepdim=True)
    return F.normalize(x, dim=1, eps=1e-6)


def correlation(key: torch.Tensor, query: torch.Tensor, alpha: float) -> torch.Tensor:
    """C (Eq. 2) explicitly, as (B, N_target, N_source): row j is softmax over source positions i of
    alpha k^i . q^j, so every row sums to 1."""
    beta = torch.bmm(query.float().flatten(2).transpose(1, 2), key.float().flatten(2))  # (B, N_t, N_s)
    return torch.softmax(alpha * beta, dim=-1)


def attention_warp(x: torch.Tensor, key: torch.Tensor, query: torch.Tensor, alpha: float,
                   fp32: bool = True) -> torch.Tensor:  # fmt: skip
    """W_a(x, C)^j = sum_i C^{i,j} x^i (Eq. 3) without forming C: scaled_dot_product_attention with the query q
    (target), key k and value x (source) and scale alpha. x, key (B, ., H_s, W_s), query (B, K, H_t, W_t)."""
    if not fp32:
        return cross_attention(query.to(x.dtype), key.to(x.dtype), x, alpha)
    with torch.autocast(x.device.type, enabled=False):
        return cross_attention(query.float(), key.float(), x.float(), alpha).to(x.dtype)


# -- the estimators ----------------------------------------------------------------------------------------------
class CorrelationEncoder(nn.Module):
    """E_x or E_s (Eq. 1): EBs of widths corr_ngf, 2 corr_ngf, ... and a 1x1 projection to K at each warp scale
    (coarse first), unit vectors per position (projected in float32 with model.attn_fp32: alpha 100 turns a
    bfloat16 rounding of a cosine, ~0.004, into a logit error of ~0.4)."""

    def __init__(self, in_ch: int, cfg: AttnFlowConfig):
        super().__init__()
        widths = [cfg.corr_ngf * 2**i for i in range(cfg.n_downsampling)]
        self.encoder = PyramidEncoder(in_ch, widths, cfg)
        self.levels = [cfg.n_downsampling - 1 - s for s in range(cfg.warp_scales)]  # encoder index per scale
        self.project = nn.ModuleList(nn.Conv2d(widths[i], cfg.corr_dim, 1) for i in self.levels)
        self.centre, self.fp32 = cfg.corr_centre, cfg.attn_fp32

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.encoder(x)
        with torch.autocast(x.device.type, enabled=not self.fp32):
            return [unit_features(p(feats[i].float() if self.fp32 else feats[i]), self.centre)
                    for i, p in zip(self.levels, self.project)]  # fmt: skip


class FlowEstimator(nn.Module):
    """F(s_t, s_r, x_r) (Eq. 4), GFLA's PoseFlowNet (notes 8.2): EBs on [x_r, s_r, s_t] down to 1/2^flow_depth,
    then RUBs back up, each plus a Jump of the encoder level it reaches; a flow head (act, RP(1), conv 3x3 -> 2)
    at every warp scale. Returns the flows coarse first, in pixels of their own grid."""

    def __init__(self, cfg: AttnFlowConfig):
        super().__init__()
        widths = [min(cfg.flow_ngf * 2**i, cfg.flow_max) for i in range(cfg.flow_depth)]
        self.encoder = PyramidEncoder(cfg.image_channels + 2 * cfg.pose_channels, widths, cfg)
        finest = cfg.n_downsampling - cfg.warp_scales  # encoder index of the finest warp scale
        self.up, self.jump, self.heads = nn.ModuleList(), nn.ModuleList(), nn.ModuleDict()
        flow_levels = {cfg.n_downsampling - 1 - s for s in range(cfg.warp_scales)}
        self.steps = list(range(cfg.flow_depth - 2, finest - 1, -1))  # encoder index each RUB reaches
        for i in self.steps:
            self.up.append(ResUpBlock(widths[i + 1], widths[i], cfg))
            self.jump.append(nn.Sequential(*head(widths[i], widths[i], cfg)))
            if i in flow_levels:
                self.heads[str(i)] = nn.Sequential(*head(widths[i], 2, cfg))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.encoder(x)
        y, flows = feats[-1], []
        for i, up, jump in zip(self.steps, self.up, self.jump):
            y = up(y) + jump(feats[i])
            if str(i) in self.heads:
                flows.append(self.heads[str(i)](y))
        return flows


class CombinationMap(nn.Sequential):
    """M (Eq. 6): conv 3x3 (6 -> c), n_blocks RBs, act, conv 3x3 -> 1, sigmoid, on the two warped images."""

    def __init__(self, cfg: AttnFlowConfig):
        c = cfg.comb_channels
        super().__init__(nn.Conv2d(2 * cfg.image_channels, c, 3, 1, 1),
                         *(ResBlock(c, cfg) for _ in range(cfg.n_blocks)),
                         act(cfg), nn.Conv2d(c, 1, 3, 1, 1), nn.Sigmoid())  # fmt: skip


# -- the generator -----------------------------------------------------------------------------------------------
class AttnFlowGenerator(PoseGenerator):
    """x_r, s_r, s_t -> x^_t: deformation estimation (attention and flow at each warp scale, combination maps),
    then the image synthesis module. `forward(batch, synthesize=False)` stops after the deformations (stage 1)."""

    def __init__(self, cfg: AttnFlowConfig):
        super().__init__()
        self.cfg = cfg
        img, pose, d = cfg.image_channels, cfg.pose_channels, cfg.n_downsampling
        self.key_encoder = CorrelationEncoder(img, cfg)  # E_x
        self.query_encoder = CorrelationEncoder(pose, cfg)  # E_s
        self.flow = FlowEstimator(cfg)
        self.combination = nn.ModuleList(CombinationMap(cfg) for _ in range(cfg.warp_scales))
        widths = [cfg.ngf * 2**i for i in range(d)]  # 64, 128, 256
        self.source_encoder = PyramidEncoder(img, widths, cfg)  # f_r
        self.target_encoder = PyramidEncoder(pose, widths, cfg)  # f_t (its coarsest level)
        # Decoder, coarse to fine: RB and RUB per level (notes 8.3), f_a added where a warp scale is reached.
        outs = [cfg.ngf, *widths[:-1]]  # each RUB's output width: 128, 64, 64
        self.decoder = nn.ModuleList(nn.Sequential(ResBlock(widths[i], cfg), ResUpBlock(widths[i], outs[i], cfg))
                                     for i in range(d - 1, -1, -1))  # fmt: skip
        self.output = nn.Sequential(*head(cfg.ngf, img, cfg), nn.Tanh())
        init_weights(self, cfg.init_gain, cfg.init)

    def pose_maps(self, kp: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return heatmaps(kp, tuple(like.shape[-2:]), self.cfg.heatmap_sigma)

    def forward(self, batch: dict[str, torch.Tensor], synthesize: bool = True) -> dict:
        """{"image" (when synthesised), per warp scale, coarse first: "flows" w, "attn_images" W_a(x_r_down, C),
        "flow_images" W_f(x_r_down, w), "masks" m, "keys" k, "queries" q}."""
        cfg = self.cfg
        x_r, src_kp = batch["src_img"][:, 0], batch["src_kp"][:, 0]
        s_r, s_t = self.pose_maps(src_kp, x_r).to(x_r.dtype), self.pose_maps(batch["tgt_kp"], x_r).to(x_r.dtype)
        keys, queries = self.key_encoder(x_r), self.query_encoder(s_t)
        flows = self.flow(torch.cat([x_r, s_r, s_t], 1))
        f_r = self.source_encoder(x_r) if synthesize else None
        out = {"flows": flows, "keys": keys, "queries": queries, "attn_images": [], "flow_images": [], "masks": []}
        aligned = []
        for s, factor in enumerate(cfg.factors()):
            small = F.avg_pool2d(x_r, factor)  # x_r_down
            values = small if f_r is None else torch.cat([small, f_r[cfg.n_downsampling - 1 - s].to(small.dtype)], 1)
            by_attn = attention_warp(values, keys[s], queries[s], cfg.alpha, cfg.attn_fp32)  # Eq. 3
            by_flow = flow_warp(values, flows[s], cfg.flow_padding)  # Eq. 5
            c = cfg.image_channels
            m = self.combination[s](torch.cat([by_attn[:, :c], by_flow[:, :c]], 1))  # Eq. 6
            out["attn_images"].append(by_attn[:, :c])
            out["flow_images"].append(by_flow[:, :c])
            out["masks"].append(m)
            if f_r is not None:
                aligned.append(m * by_attn[:, c:] + (1 - m) * by_flow[:, c:])  # f_a, Eq. 8
        if f_r is None:
            return out
        y = self.target_encoder(s_t)[-1] + aligned[0]  # f_o = f_t + f_a, Eq. 9
        for level, block in enumerate(self.decoder):
            y = block(y)
            if level + 1 < len(aligned):
                y = y + aligned[level + 1]  # the next warp scale's f_a
        out["image"] = self.output(y)
        return out


# -- losses ------------------------------------------------------------------------------------------------------
def sampling_correctness(flow: torch.Tensor, v_src: torch.Tensor, v_tgt: torch.Tensor, padding: str = "border",
                         eps: float = 1e-8) -> torch.Tensor:  # fmt: skip
    """L_flow at one scale (Eq. 11-12): mean over target positions l of exp(-mu(W_f(v_r, w)^l, v_t^l) /
    mu(v_r^{l_max}, v_t^l)) - e^-1, mu the cosine, l_max the source position most similar to v_t^l (0 at best)."""
    warped = F.normalize(flow_warp(v_src, flow, padding).float().flatten(2), dim=1, eps=eps)
    tgt = F.normalize(v_tgt.float().flatten(2), dim=1, eps=eps)
    src = F.normalize(v_src.float().flatten(2), dim=1, eps=eps)
    mu = (warped * tgt).sum(1)  # (B, N)
    best = torch.bmm(tgt.transpose(1, 2), src).amax(-1).clamp_min(eps)  # (B, N), Eq. 12
    return (torch.exp(-mu / best) - math.exp(-1)).mean()


def affine_residual_kernels(n: int) -> torch.Tensor:
    """(n^2, 1, n, n): the rows of I - P, P the projection of an n x n patch's values onto affine functions
    a x + b y + c of the patch coordinates. Convolving a coordinate map with them gives the residual of its
    least-squares affine fit in every patch (Eq. 13-14 as a fixed quadratic form, as GFLA)."""
    ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    r = torch.stack([xs.flatten(), ys.flatten(), torch.ones(n * n, dtype=torch.float64)])  # (3, n^2)
    p = r.T @ torch.linalg.solve(r @ r.T, r)
    return (torch.eye(n * n, dtype=torch.float64) - p).float().view(n * n, 1, n, n)


def affine_regularisation(flow: torch.Tensor, n: int = 3) -> torch.Tensor:
    """L_regu at one scale (Eq. 13): the squared residual of the affine fit of the sampling coordinates S = R + w
    in every n x n patch (x and y summed), averaged over patches. Zero exactly when w is affine; the regular grid
    R is affine, so the residual of S is that of w."""
    b, _, h, w = flow.shape
    kernels = affine_residual_kernels(n).to(flow.device)
    res = F.conv2d(flow.float().reshape(b * 2, 1, h, w), kernels)  # (2B, n^2, h - n + 1, w - n + 1)
    return res.pow(2).sum(1).view(b, 2, -1).sum(1).mean()


def correctness_layer(factor: int) -> str:
    """The VGG-19 layer at a warp scale's resolution: relu{k+1}_1 is at 1 / 2^k (relu3_1 at 1/4, relu4_1 at 1/8)."""
    return f"relu{int(math.log2(factor)) + 1}_1"


# -- the method --------------------------------------------------------------------------------------------------
class AttnFlow(Method):
    """The generator, its EMA, the unconditional discriminator, the VGG-19 losses, and the GFLA iteration."""

    parts = ("generator", "discriminator")
    progress_keys = ("g_attn", "g_flow", "g_total")

    def __init__(self, model_cfg: AttnFlowConfig, loss_cfg: AttnFlowLossConfig):
        super().__init__()
        self.model_cfg, self.loss_cfg = model_cfg, loss_cfg
        self.generator = AttnFlowGenerator(model_cfg)
        self.ema = ema(self.generator, model_cfg.ema_decay)
        self.discriminator = build_discriminator(model_cfg.image_channels, model_cfg.discriminator, model_cfg.norm)
        self.gan_loss = GANLoss(loss_cfg.gan_mode)
        self.flow_layers = [correctness_layer(f) for f in model_cfg.factors()]
        self.vgg_terms = {"lambda_perceptual": list(loss_cfg.perceptual_layers),
                          "lambda_style": list(loss_cfg.style_layers), "lambda_flow": self.flow_layers}  # fmt: skip
        used = {k for k, layers in self.vgg_terms.items() if getattr(loss_cfg, k) > 0 and layers}
        self.vgg_built = used
        self.vgg = None
        if used:  # one VGG-19 pass per image serves all three
            self.vgg = PerceptualLoss(loss_cfg.vgg_weights, loss_cfg.perceptual_distance,
                                      loss_cfg.perceptual_layers if "lambda_perceptual" in used else (),
                                      style_layers=loss_cfg.style_layers if "lambda_style" in used else (),
                                      extra_layers=self.flow_layers if "lambda_flow" in used else ())  # fmt: skip

    def generator_module(self) -> AttnFlowGenerator:
        g = self.generator
        return g.module if hasattr(g, "module") else g  # DDP-wrapped during multi-process training

    def inference_module(self) -> nn.Module:
        return self.ema.module

    def configure_optimizers(self, optim: dict[str, OptimizerConfig]) -> dict[str, torch.optim.Optimizer]:
        return {"generator": make_optimizer(self.generator.parameters(), optim["generator"]),
                "discriminators": make_optimizer(self.discriminator.parameters(), optim["discriminators"])}  # fmt: skip

    def _check_vgg(self, cfg: AttnFlowLossConfig) -> None:
        missing = [k for k in self.vgg_terms if getattr(cfg, k) > 0 and k not in self.vgg_built]
        if missing:
            raise ReidaugError(f"a stage sets loss.{missing[0]} > 0, but the loss config has it at 0, so no VGG-19 "
                               "was built for it: set it > 0 in loss and to 0 in the stages without it")  # fmt: skip

    def generator_loss(self, batch: dict, out: dict, cfg: AttnFlowLossConfig | None = None):
        """(weighted total, logged terms) of Eq. 19 for the deformations in `out` and, when synthesised, its image."""
        cfg = cfg or self.loss_cfg
        self._check_vgg(cfg)
        real, src = batch["tgt_img"], batch["src_img"][:, 0]
        factors = self.model_cfg.factors()
        terms = {}
        if cfg.lambda_attn > 0:  # Eq. 10 at every scale
            terms["g_attn"] = cfg.lambda_attn * sum(
                (a.float() - F.avg_pool2d(real, f).float()).abs().mean() for a, f in zip(out["attn_images"], factors))
        need_fake = "image" in out and (cfg.lambda_perceptual > 0 or cfg.lambda_style > 0)
        feats_real = feats_src = feats_fake = None
        if self.vgg is not None and (cfg.lambda_flow > 0 or need_fake):
            with torch.no_grad():
                feats_real = self.vgg.vgg(real)
                feats_src = self.vgg.vgg(src) if cfg.lambda_flow > 0 else None
        if cfg.lambda_flow > 0:  # Eq. 11 at every scale
            terms["g_flow"] = cfg.lambda_flow * sum(
                sampling_correctness(w, feats_src[k], feats_real[k], self.model_cfg.flow_padding)
                for w, k in zip(out["flows"], self.flow_layers))  # fmt: skip
        if cfg.lambda_regu > 0:  # Eq. 13 at every scale
            terms["g_regu"] = cfg.lambda_regu * sum(affine_regularisation(w, cfg.regu_size) for w in out["flows"])
        if "image" in out:
            fake = out["image"]
            if cfg.lambda_l1 > 0:
                terms["g_l1"] = cfg.lambda_l1 * (fake.float() - real.float()).abs().mean()
            if need_fake:
                feats_fake = self.vgg.vgg(fake)
                content, style = self.vgg.compare(feats_fake, feats_real, with_style=True)
                if cfg.lambda_perceptual > 0:
                    terms["g_perceptual"] = cfg.lambda_perceptual * content  # Eq. 15
                if cfg.lambda_style > 0:
                    terms["g_style"] = cfg.lambda_style * style  # Eq. 17
            if cfg.lambda_adv > 0:
                terms["g_adv"] = cfg.lambda_adv * self.gan_loss(self.discriminator(fake), True)  # Eq. 18
        if not terms:
            raise ReidaugError("every generator loss weight is 0 in this stage")
        total = sum(terms.values())
        return total, {"g_total": total, **terms}

    def discriminator_loss(self, batch: dict, fake: torch.Tensor) -> tuple[torch.Tensor, dict]:
        d = self.discriminator
        total = 0.5 * (self.gan_loss(d(batch["tgt_img"]), True) + self.gan_loss(d(fake.detach()), False))
        return total, {"d_total": total}

    def training_step(self, batch, step) -> dict[str, torch.Tensor]:
        """GFLA order: fake = G(batch); D step on fake.detach(); G step with D frozen; EMA update. A stage that
        weights no image loss and trains no D (stage 1) runs the deformation estimator alone."""
        cfg = step.loss
        train_d = step.trains("discriminators")
        synthesize = train_d or any(getattr(cfg, k) > 0 for k in IMAGE_LOSSES)
        with step.autocast():
            out = self.generator(batch, synthesize=synthesize)
        logs = {}
        if train_d:
            with step.autocast():
                d_total, logs = self.discriminator_loss(batch, out["image"])
            step.step("discriminators", d_total)
        with step.frozen("discriminator"), step.autocast():
            g_total, g_logs = self.generator_loss(batch, out, cfg)
        step.step("generator", g_total)
        self.ema.update_parameters(self.generator_module())
        return logged({**g_logs, **logs})


def optimizers() -> dict[str, OptimizerConfig]:
    """GFLA: Adam betas (0, 0.999), lr 1e-4 for G and 1e-5 for D (notes 8.2). The D optimizer keeps the family's
    name, so a config built on another method's (patn-demo) sets its learning rate."""
    return {"generator": OptimizerConfig(lr=1e-4, betas=[0.0, 0.999]),
            "discriminators": OptimizerConfig(lr=1e-5, betas=[0.0, 0.999])}  # fmt: skip


def stages() -> list[StageConfig]:
    """Notes 8.3: 20 K iterations of the deformation estimator alone (attention, correctness 20, regularisation
    0.01), then end to end."""
    off = {k: 0.0 for k in IMAGE_LOSSES}
    return [StageConfig(name="deformation", until=20_000, train=["generator"],
                        loss={"lambda_flow": 20.0, "lambda_regu": 0.01, **off}),
            StageConfig(name="end_to_end")]  # fmt: skip


registry.register(registry.MethodSpec(
    name="attnflow", model_schema=AttnFlowConfig, loss_schema=AttnFlowLossConfig, build=AttnFlow,
    generator=AttnFlowGenerator, optimizers=optimizers, stages=stages,
    # batch 24, 20 K + 100 K iterations at a constant learning rate; stage 1 leaves the synthesis module idle
    train={"iterations": 120_000, "batch_size": 24, "decay_start": 120_000, "find_unused_parameters": True},
    paper="Combining Attention with Flow for Person Image Synthesis (Ren et al., ACM MM'21, reconstructed)",
))  # fmt: skip
