"""Building blocks shared by the PATN family (architecture notes §2): norms, encoders, conv blocks, decoders,
dot-product attention (explicit, with its map, and fused through SDPA) and the generator initialiser. Methods compose these; none of them knows a paper.

Shapes are for Market-1501 (128x64 images, 32x16 codes after two stride-2 convolutions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reidaug.config import check_choice
from reidaug.errors import ReidaugError

NORMS = ("batch", "instance", "instance_affine", "group1", "none")
ACTIVATIONS = ("relu", "lrelu")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The configured normalisation N (notes 14.1.1): BN (affine), IN (non-affine, as the PATN code),
    affine IN (GFLA), one-group GroupNorm (keras-contrib InstanceNormalization, eps 1e-3, notes 9.2), or none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "instance_affine":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group1":
        return nn.GroupNorm(1, channels, eps=1e-3)
    if kind == "none":
        return nn.Identity()
    raise ReidaugError(f"unknown norm {kind!r}; choose from {', '.join(NORMS)}")


def conv_bias(norm: str) -> bool:
    """Convolutions carry a bias only when N has no learnable shift of its own (the code's `use_bias` rule)."""
    return norm in ("instance", "none")


def activation(kind: str = "relu", slope: float = 0.2, inplace: bool = True) -> nn.Module:
    """ReLU (reference code) or LeakyReLU(slope) (the papers' discriminator wording); `inplace=False` where the
    input is also used elsewhere (pre-activation residual blocks)."""
    if kind == "relu":
        return nn.ReLU(inplace=inplace)
    if kind == "lrelu":
        return nn.LeakyReLU(slope, inplace=inplace)
    raise ReidaugError(f"unknown activation {kind!r}; choose from {', '.join(ACTIVATIONS)}")


class Encoder(nn.Sequential):
    """RP(3) conv 7x7 -> N -> act, then `n_down` x [conv 3x3 s2 -> N -> act] (notes 2.1): 128x64 -> 32x16.

    Channels double at each stride-2 conv: `out_channels = ngf * 2**n_down` (256 for ngf 64).
    The ResNet discriminator (notes 2.4) starts with the same stem.
    """

    def __init__(self, in_ch: int, ngf: int = 64, n_down: int = 2, norm: str = "batch", act: str = "relu"):
        bias = conv_bias(norm)
        layers = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_ch, ngf, 7, bias=bias),
            norm_layer(norm, ngf),
            activation(act),
        ]
        for i in range(n_down):
            c = ngf * 2**i
            layers += [
                nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias),
                norm_layer(norm, 2 * c),
                activation(act),
            ]
        super().__init__(*layers)
        self.out_channels = ngf * 2**n_down


class ConvBlock(nn.Sequential):
    """The two-convolution body of a residual block, without the identity add (notes 2.3).

    kind "image": RP(1) conv 3x3 (in->out), N, act, Dropout, RP(1) conv 3x3 (out->out), N.
    kind "pose":  RP(1) conv 3x3 (in->in),  N, act, Dropout, RP(1) conv 3x3 (in->out) and no norm after it:
                  its output feeds a sigmoid mask or an attention projection.
    """

    def __init__(self, kind: str, in_ch: int, out_ch: int | None = None, norm: str = "batch",
                 dropout: float = 0.5, act: str = "relu"):  # fmt: skip
        check_choice("conv block kind", kind, ("image", "pose"))
        out_ch = out_ch or in_ch
        mid = out_ch if kind == "image" else in_ch
        bias = conv_bias(norm)
        layers = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(in_ch, mid, 3, bias=bias),
            norm_layer(norm, mid),
            activation(act),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(mid, out_ch, 3, bias=bias)]
        if kind == "image":
            layers.append(norm_layer(norm, out_ch))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """x + image-type CB(x); a 1x1 conv shortcut when the channel count changes (light APATN decoder)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, norm: str = "batch", dropout: float = 0.5,
                 act: str = "relu"):  # fmt: skip
        super().__init__()
        out_ch = out_ch or in_ch
        self.body = ConvBlock("image", in_ch, out_ch, norm, dropout, act)
        self.shortcut = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


class ConvTDecoder(nn.Sequential):
    """`n_up` x [ConvT 3x3 s2 p1 op1 (halving channels), N, ReLU], then RP(3) conv 7x7 (with bias), tanh
    (notes 2.2; PATN, XingGAN, 2s-ATN): 256@32x16 -> out_ch@128x64."""

    def __init__(
        self, in_ch: int = 256, out_ch: int = 3, n_up: int = 2, norm: str = "batch", act: str = "relu"
    ):
        layers, c = [], in_ch
        for _ in range(n_up):
            layers += up_layers(c, c // 2, norm, act)
            c //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, out_ch, 7), nn.Tanh()]
        super().__init__(*layers)


def up_layers(in_ch: int, out_ch: int, norm: str = "batch", act: str = "relu") -> list[nn.Module]:
    """ConvT 3x3 s2 p1 op1 (doubles H and W), N, act: one step of the PATN decoder (notes 2.2)."""
    return [nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1, bias=conv_bias(norm)),
            norm_layer(norm, out_ch), activation(act)]  # fmt: skip


def norm_act(conv: nn.Module, channels: int, norm: str = "batch", act: str = "relu") -> list[nn.Module]:
    """`conv`, N, act (a projection inside a head)."""
    return [conv, norm_layer(norm, channels), activation(act)]


class ResidualDecoder(nn.Sequential):
    """`n_up` x [bilinear x2, residual block], then RP(3) conv 7x7 (with bias), tanh (APATN, paper §3.3).

    `light=True` halves the channels in each residual block (1x1 shortcut), a speed option (notes 4.2).
    """

    def __init__(self, in_ch: int = 256, out_ch: int = 3, n_up: int = 2, norm: str = "batch",
                 light: bool = False, dropout: float = 0.0):  # fmt: skip
        layers, c = [], in_ch
        for _ in range(n_up):
            nxt = c // 2 if light else c
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       ResidualBlock(c, nxt, norm, dropout)]  # fmt: skip
            c = nxt
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, out_ch, 7), nn.Tanh()]
        super().__init__(*layers)


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float | None = None):
    """Dot-product attention between feature maps: out_i = sum_j softmax_j(scale * q_i . k_j) v_j.

    query (B, C, H, W), key (B, C, H', W'), value (B, C_v, H', W') -> out (B, C_v, H, W) and the attention
    (B, HW, H'W'), each row (a query position) summing to 1. The softmax runs in float32, so it is safe under
    autocast; no scaling unless `scale` is given (none of the PATN-family papers scales, notes 14.1.6).
    """
    b, _, h, w = query.shape
    energy = torch.bmm(query.flatten(2).transpose(1, 2), key.flatten(2))  # (B, HW, H'W')
    if scale is not None:
        energy = energy * scale
    attn = torch.softmax(energy.float(), dim=-1)
    out = torch.bmm(value.flatten(2), attn.transpose(1, 2).to(value.dtype))  # (B, C_v, HW)
    return out.view(b, -1, h, w), attn


def cross_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float | None = None,
                    heads: int = 1) -> torch.Tensor:  # fmt: skip
    """`attend` without the attention map, through `F.scaled_dot_product_attention` (fused kernels; the same
    computation): out_i = sum_j softmax_j(scale * q_i . k_j) v_j per head. Scale 1 unless given (the PATN-family
    papers do not divide by sqrt(d)). query (B, C, H, W), key (B, C, H', W'), value (B, C_v, H', W') -> (B, C_v,
    H, W); with `heads`, C and C_v are split into that many heads."""
    b, _, h, w = query.shape

    def tokens(x):  # (B, C, H, W) -> (B, heads, HW, C / heads)
        return x.flatten(2).unflatten(1, (heads, -1)).transpose(2, 3)

    out = F.scaled_dot_product_attention(tokens(query), tokens(key), tokens(value), scale=1.0 if scale is None else scale)
    return out.transpose(2, 3).flatten(1, 2).reshape(b, -1, h, w)


def conv1x1(in_ch: int, out_ch: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, bias=bias)


INITS = ("normal", "orthogonal")


@torch.no_grad()
def init_weights(module: nn.Module, std: float = 0.02, kind: str = "normal") -> nn.Module:
    """Generator init (notes 2.6): conv / transposed-conv weights ~ N(0, std), BN weight ~ N(1, std), BN bias 0;
    conv biases keep PyTorch's default. Discriminators are left at the default init. `kind="orthogonal"`:
    orthogonal conv weights with gain `std` instead (GFLA, notes 8.2)."""
    check_choice("init kind", kind, INITS)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if kind == "orthogonal":
                nn.init.orthogonal_(m.weight, gain=std)
            else:
                nn.init.normal_(m.weight, 0.0, std)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


def count_parameters(module: nn.Module) -> int:
    """Learnable parameters (shared modules counted once), as the papers' Table 2 counts them."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
