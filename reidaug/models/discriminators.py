"""The PATN-family ResNet discriminator (architecture notes 2.4), shared by D_A and D_S.

Reference code: encoder stem (RP(3) conv 7x7, two stride-2 convs, N, ReLU), three residual blocks with
Dropout(0.5), and a sigmoid on the 256@32x16 map with no final 1-channel conv. Here the sigmoid is left to
the loss (BCE-with-logits, autocast-safe), so the module returns logits. The paper's LeakyReLU(0.2) and a
final 1x1 conv are flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from reidaug.models.blocks import ACTIVATIONS, NORMS, Encoder, ResidualBlock, check_choice


@dataclass
class DiscriminatorConfig:
    ndf: int = 64
    n_downsampling: int = 2
    n_blocks: int = 3
    norm: str = "same"  # "same": the generator's norm (the code's single --norm), or one of blocks.NORMS
    dropout: float = 0.5  # inside the residual blocks (on by default in the code)
    activation: str = "relu"  # relu (code) | lrelu (paper: LeakyReLU 0.2 after every conv/norm)
    final_conv: bool = False  # 1x1 conv to a 1-channel logit map (not in the code)

    def __post_init__(self) -> None:
        check_choice("discriminator.norm", self.norm, ("same", *NORMS))
        check_choice("discriminator.activation", self.activation, ACTIVATIONS)


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

    @classmethod
    def from_config(cls, in_ch: int, cfg: DiscriminatorConfig, generator_norm: str) -> ResnetDiscriminator:
        norm = generator_norm if cfg.norm == "same" else cfg.norm
        return cls(in_ch, cfg.ndf, cfg.n_downsampling, cfg.n_blocks, norm, cfg.dropout, cfg.activation,
                   cfg.final_conv)  # fmt: skip
