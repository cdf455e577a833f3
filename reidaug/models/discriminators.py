"""Discriminators and their factory: the PATN-family ResNet discriminator (architecture notes 2.4), a
PatchGAN, GFLA's residual down-sampling discriminator (notes 8.2) and the Deformable GAN / multi-source PatchGAN
(notes 9.4), each with optional spectral normalisation.
All return logits (the sigmoid is the loss's).

ResNet (reference code): encoder stem (RP(3) conv 7x7, two stride-2 convs, N, ReLU), three residual blocks with
Dropout(0.5), and no final 1-channel conv (a 256@32x16 logit map). The paper's LeakyReLU(0.2) and a final 1x1
conv are flags. PatchGAN (pix2pix): 4x4 convolutions, stride 2 `n_downsampling` times, LeakyReLU(0.2), one
logit per overlapping patch. Residual (GFLA): `n_downsampling` residual down blocks, then act and a 1x1 conv to
one logit per position. Deformable (the Keras conditional PatchGAN): a first "valid" 4x4 stride-2 conv, then
[LeakyReLU(0.2), pad 1, conv 4x4 s2, N] blocks and a last stride-2 conv to one logit per patch (3x1 for 128x64).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reidaug.errors import ReidaugError
from reidaug.models.blocks import (
    ACTIVATIONS,
    NORMS,
    Encoder,
    ResidualBlock,
    activation,
    check_choice,
    conv_bias,
    norm_layer,
)

KINDS = ("resnet", "patch", "residual", "deformable")


@dataclass
class DiscriminatorConfig:
    kind: str = "resnet"  # resnet (PATN family) | patch (PatchGAN) | residual (GFLA) | deformable (Deformable GAN)
    ndf: int = 64
    n_downsampling: int = 2
    n_blocks: int = 3
    norm: str = "same"  # "same": the generator's norm (the code's single --norm), or one of blocks.NORMS
    dropout: float = 0.5  # inside the residual blocks (on by default in the code)
    activation: str = "relu"  # relu (code) | lrelu (paper: LeakyReLU 0.2 after every conv/norm)
    slope: float = 0.2  # LeakyReLU slope (GFLA: 0.1)
    final_conv: bool = False  # 1x1 conv to a 1-channel logit map (not in the code)
    spectral_norm: bool = False  # spectral normalisation of every conv (GFLA)

    def __post_init__(self) -> None:
        check_choice("discriminator.kind", self.kind, KINDS)
        check_choice("discriminator.norm", self.norm, ("same", *NORMS))
        check_choice("discriminator.activation", self.activation, ACTIVATIONS)
        if min(self.ndf, self.n_blocks + 1, self.n_downsampling + 1) < 1 or not 0 <= self.dropout < 1:
            raise ReidaugError("discriminator.ndf must be at least 1, n_blocks and n_downsampling >= 0, dropout "
                               "in [0, 1)")  # fmt: skip


class ResnetDiscriminator(nn.Sequential):
    """Conditional ResNet discriminator: (B, in_ch, 128, 64) -> logits (B, 256, 32, 16), or (B, 1, 32, 16)
    with `final_conv`. D_A takes [image, P_c] (6 ch), D_S takes [image, S_t] (21 ch)."""

    def __init__(self, in_ch: int, ndf: int = 64, n_down: int = 2, n_blocks: int = 3, norm: str = "batch",
                 dropout: float = 0.5, act: str = "relu", final_conv: bool = False):  # fmt: skip
        stem = Encoder(in_ch, ndf, n_down, norm, act)
        c = stem.out_channels
        layers = [stem, *(ResidualBlock(c, c, norm, dropout, act) for _ in range(n_blocks))]
        if final_conv:
            layers.append(nn.Conv2d(c, 1, 1))
        super().__init__(*layers)
        self.out_channels = 1 if final_conv else c


class ResidualDown(nn.Module):
    """GFLA's residual down block (notes 8.2): act, conv 3x3, N, act, conv 4x4 s2, N; shortcut avg-pool 2, 1x1 conv."""

    def __init__(self, in_ch: int, out_ch: int, norm: str, act: str, slope: float):
        super().__init__()
        bias = conv_bias(norm)
        self.main = nn.Sequential(activation(act, slope, inplace=False), nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=bias),
                                  norm_layer(norm, out_ch), activation(act, slope),
                                  nn.Conv2d(out_ch, out_ch, 4, 2, 1, bias=bias), norm_layer(norm, out_ch))  # fmt: skip
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(F.avg_pool2d(x, 2))


class ResidualDiscriminator(nn.Sequential):
    """Unconditional GFLA discriminator: residual down blocks ndf, 2 ndf, ... (`n_down` of them), act, 1x1 conv:
    (B, in_ch, 128, 64) -> (B, 1, 16, 8) logits for n_down 3."""

    def __init__(self, in_ch: int, ndf: int = 32, n_down: int = 3, norm: str = "none", act: str = "lrelu",
                 slope: float = 0.1):  # fmt: skip
        layers, c = [], in_ch
        for i in range(n_down):
            layers.append(ResidualDown(c, ndf * 2**i, norm, act, slope))
            c = ndf * 2**i
        layers += [activation(act, slope), nn.Conv2d(c, 1, 1)]
        super().__init__(*layers)
        self.out_channels = 1


class PatchDiscriminator(nn.Sequential):
    """PatchGAN: conv 4x4 s2 -> LReLU, `n_down - 1` x [conv 4x4 s2, N, LReLU], conv 4x4 s1, N, LReLU,
    conv 4x4 s1 -> 1 logit per patch. (B, in_ch, 128, 64) -> (B, 1, 14, 6) for n_down 3."""

    def __init__(self, in_ch: int, ndf: int = 64, n_down: int = 3, norm: str = "batch"):
        bias = conv_bias(norm)
        layers, c = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)], ndf
        for i in range(1, n_down + 1):
            nxt = ndf * min(2**i, 8)
            layers += [nn.Conv2d(c, nxt, 4, 2 if i < n_down else 1, 1, bias=bias), norm_layer(norm, nxt),
                       nn.LeakyReLU(0.2, True)]  # fmt: skip
            c = nxt
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        super().__init__(*layers)
        self.out_channels = 1


class DeformableDiscriminator(nn.Sequential):
    """conv 4x4 s2 "valid" -> ndf, `n_down` x [LReLU(0.2), pad 1, conv 4x4 s2 (channels doubling up to 8 ndf),
    N], LReLU(0.2), pad 1, conv 4x4 s2 -> 1 logit per patch (notes 9.4): (B, in_ch, 128, 64) -> (B, 1, 3, 1)
    for n_down 3."""

    def __init__(self, in_ch: int, ndf: int = 64, n_down: int = 3, norm: str = "group1"):
        layers, c = [nn.Conv2d(in_ch, ndf, 4, 2)], ndf
        for i in range(1, n_down + 1):
            nxt = ndf * min(2**i, 8)
            layers += [nn.LeakyReLU(0.2), nn.Conv2d(c, nxt, 4, 2, 1, bias=conv_bias(norm)), norm_layer(norm, nxt)]
            c = nxt
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(c, 1, 4, 2, 1)]
        super().__init__(*layers)
        self.out_channels = 1


def build_discriminator(in_ch: int, cfg: DiscriminatorConfig, generator_norm: str) -> nn.Module:
    """The configured discriminator on `in_ch` input channels ("same" norm: the generator's)."""
    norm = generator_norm if cfg.norm == "same" else cfg.norm
    if cfg.kind == "patch":
        d = PatchDiscriminator(in_ch, cfg.ndf, cfg.n_downsampling, norm)
    elif cfg.kind == "residual":
        d = ResidualDiscriminator(in_ch, cfg.ndf, cfg.n_downsampling, norm, cfg.activation, cfg.slope)
    elif cfg.kind == "deformable":
        d = DeformableDiscriminator(in_ch, cfg.ndf, cfg.n_downsampling, norm)
    else:
        d = ResnetDiscriminator(in_ch, cfg.ndf, cfg.n_downsampling, cfg.n_blocks, norm, cfg.dropout,
                                cfg.activation, cfg.final_conv)  # fmt: skip
    if cfg.spectral_norm:
        for m in list(d.modules()):
            for name, child in list(m.named_children()):
                if isinstance(child, (nn.Conv2d, nn.Linear)):
                    setattr(m, name, nn.utils.parametrizations.spectral_norm(child))
    return d
