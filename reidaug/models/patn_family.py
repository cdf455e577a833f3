"""The PATN training framework (architecture notes 2.4-2.6), shared by PATN, APATN, XingGAN(++) and 2s-ATN.

A family member supplies only its generator network, `synthesize(P_c, S_c, S_t) -> P_g` on one source; this
module adds the appearance discriminator D_A on [image, P_c] (6 ch) and the shape discriminator D_S on
[image, S_t] (21 ch), the loss of notes 2.5, the fake-image pools and the PATN iteration (G step, then D step):

  G:   lambda_gan * 1/2 * [GAN(D_A(P_g, P_c), 1) + GAN(D_S(P_g, S_t), 1)]
       + lambda_l1 * |P_g - P_t|_1 + lambda_perceptual * |VGG relu1_2(P_g) - VGG relu1_2(P_t)|_1
  D_*: lambda_gan * 1/2 * [GAN(D(real), 1) + GAN(D(pool(fake)), 0)]     (lambda_gan scales D too, as the code)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from reidaug.data.keypoints import NUM_JOINTS, heatmaps
from reidaug.errors import ReidaugError
from reidaug.models.blocks import NORMS, check_choice, init_weights
from reidaug.models.discriminators import DiscriminatorConfig, build_discriminator
from reidaug.models.losses import DISTANCES, GAN_MODES, GANLoss, ImagePool, PerceptualLoss
from reidaug.models.method import Method, PoseGenerator, logged
from reidaug.models.optim import OptimizerConfig, make_optimizer


@dataclass
class FamilyModelConfig:
    """Generator and discriminator settings common to the PATN family (Market-1501 recipe, notes 3.3)."""

    image_channels: int = 3
    pose_channels: int = NUM_JOINTS  # one heatmap per OpenPose joint
    heatmap_sigma: float = 6.0  # pixels (notes 1.4)
    ngf: int = 64
    n_downsampling: int = 2  # 128x64 -> 32x16
    norm: str = "batch"  # batch (Market scripts) | instance (journal / DeepFashion) | ...
    dropout: float = 0.5  # inside the transfer blocks, off in eval()
    init_std: float = 0.02  # generator init N(0, std) (notes 2.6)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def __post_init__(self) -> None:
        check_choice("model.norm", self.norm, NORMS)
        for key in ("image_channels", "pose_channels", "ngf", "n_blocks"):  # n_blocks: each method's own field
            if getattr(self, key, 1) < 1:
                raise ReidaugError(f"model.{key} must be at least 1, got {getattr(self, key)}")
        if self.n_downsampling < 0 or not 0 <= self.dropout < 1:
            raise ReidaugError("model.n_downsampling must be >= 0 and model.dropout in [0, 1)")


@dataclass
class FamilyLossConfig:
    """Loss weights and options (notes 2.5; Market: GAN 5, L1 10, perceptual 10, pool 50)."""

    gan_mode: str = "bce"  # bce (logit-space BCE, the code's --no_lsgan) | lsgan
    lambda_gan: float = 5.0
    lambda_l1: float = 10.0
    lambda_perceptual: float = 10.0
    perceptual_distance: str = "l1"  # l1 (percep_is_l1) | l2
    vgg_weights: str = "auto"  # auto (torch hub cache, never downloads) | none (random, warns) | PATH
    pool_size: int = 50  # fake-image history per discriminator; 0 disables

    def __post_init__(self) -> None:
        check_choice("loss.gan_mode", self.gan_mode, GAN_MODES)
        check_choice("loss.perceptual_distance", self.perceptual_distance, DISTANCES)


def family_optimizers() -> dict[str, OptimizerConfig]:
    """Adam 2e-4, betas (0.5, 0.999) for G and for the Ds (notes 2.6)."""
    return {"generator": OptimizerConfig(), "discriminators": OptimizerConfig()}


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Build the graph without gradients for `module`'s parameters (D during the generator step)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class FamilyGenerator(PoseGenerator):
    """One source: heatmaps S_c, S_t (B, 18, H, W) of the source and target keypoints, then `synthesize`."""

    def __init__(self, cfg: FamilyModelConfig):
        super().__init__()
        self.heatmap_sigma = cfg.heatmap_sigma

    def pose_maps(self, kp: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Heatmaps (B, 18, H, W) of keypoints, at the image size, on the device (notes 1.4)."""
        return heatmaps(kp, tuple(like.shape[-2:]), self.heatmap_sigma)

    def synthesize(self, image: torch.Tensor, src_pose: torch.Tensor, tgt_pose: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        src, src_kp = batch["src_img"][:, 0], batch["src_kp"][:, 0]
        return {"image": self.synthesize(src, self.pose_maps(src_kp, src), self.pose_maps(batch["tgt_kp"], src))}


class PATNFamily(Method):
    """A PATN-family method: its generator plus D_A, D_S, the losses and the pools of notes 2.4-2.5."""

    parts = ("generator", "discriminators")
    progress_keys = ("g_l1", "g_total", "d_total")

    def __init__(self, generator: FamilyGenerator, model_cfg: FamilyModelConfig, loss_cfg: FamilyLossConfig):
        super().__init__()
        self.model_cfg, self.loss_cfg = model_cfg, loss_cfg
        self.generator = init_weights(generator, model_cfg.init_std)
        img, pose, d = model_cfg.image_channels, model_cfg.pose_channels, model_cfg.discriminator
        self.discriminators = nn.ModuleDict({
            "A": build_discriminator(2 * img, d, model_cfg.norm),  # appearance: [image, P_c]
            "S": build_discriminator(img + pose, d, model_cfg.norm),  # shape: [image, S_t]
        })  # fmt: skip
        self.gan_loss = GANLoss(loss_cfg.gan_mode)
        self.perceptual = (PerceptualLoss(loss_cfg.vgg_weights, loss_cfg.perceptual_distance)
                           if loss_cfg.lambda_perceptual > 0 else None)  # fmt: skip
        self.pools = nn.ModuleDict({k: ImagePool(loss_cfg.pool_size) for k in self.discriminators})

    # -- losses ---------------------------------------------------------------------------------------------
    def disc_inputs(self, batch: dict, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """D_A sees [image, P_c], D_S sees [image, S_t] (channel order of the code)."""
        cond_a = batch["src_img"][:, 0].to(image.dtype)
        cond_s = self.generator_module().pose_maps(batch["tgt_kp"], image).to(image.dtype)
        return {"A": torch.cat([image, cond_a], 1), "S": torch.cat([image, cond_s], 1)}

    def generator_module(self) -> FamilyGenerator:
        g = self.generator
        return g.module if hasattr(g, "module") else g  # DDP-wrapped during multi-process training

    def generator_loss(self, batch, fake, cfg: FamilyLossConfig | None = None) -> tuple[torch.Tensor, dict]:
        cfg, real = cfg or self.loss_cfg, batch["tgt_img"]
        terms = {}
        with frozen(self.discriminators):
            inputs = self.disc_inputs(batch, fake)
            for k, d in self.discriminators.items():
                terms[f"g_gan_{k}"] = cfg.lambda_gan * self.gan_loss(d(inputs[k]), True)
        terms["g_gan"] = (terms["g_gan_A"] + terms["g_gan_S"]) / 2
        terms["g_l1"] = cfg.lambda_l1 * (fake.float() - real.float()).abs().mean()
        if self.perceptual is not None:
            terms["g_perceptual"] = cfg.lambda_perceptual * self.perceptual(fake, real)
        total = terms["g_gan"] + terms["g_l1"] + terms.get("g_perceptual", 0.0)
        return total, logged({"g_total": total, **terms})

    def discriminator_loss(self, batch, fake, cfg: FamilyLossConfig | None = None) -> tuple[torch.Tensor, dict]:
        cfg = cfg or self.loss_cfg
        real_in = self.disc_inputs(batch, batch["tgt_img"])
        fake_in = self.disc_inputs(batch, fake.detach())
        terms = {}
        for k, d in self.discriminators.items():
            pooled = self.pools[k].query(fake_in[k])
            terms[f"d_{k}"] = cfg.lambda_gan * 0.5 * (self.gan_loss(d(real_in[k]), True)
                                                      + self.gan_loss(d(pooled), False))  # fmt: skip
        total = terms["d_A"] + terms["d_S"]
        return total, logged({"d_total": total, **terms})

    # -- Method ---------------------------------------------------------------------------------------------
    def configure_optimizers(self, optim: dict[str, OptimizerConfig]) -> dict[str, torch.optim.Optimizer]:
        """Adam for G and one for both Ds (per-element updates: the same as one Adam per D)."""
        return {"generator": make_optimizer(self.generator.parameters(), optim["generator"]),
                "discriminators": make_optimizer(self.discriminators.parameters(), optim["discriminators"])}  # fmt: skip

    def training_step(self, batch, step) -> dict[str, torch.Tensor]:
        """PATN order (notes 2.6): fake = G(batch); G step with the Ds frozen; D step on fake.detach()."""
        with step.autocast():
            fake = self.generator(batch)["image"]
        with step.frozen("discriminators"), step.autocast():
            g_total, g_logs = self.generator_loss(batch, fake, step.loss)
        step.step("generator", g_total)
        with step.autocast():
            d_total, d_logs = self.discriminator_loss(batch, fake.detach(), step.loss)
        step.step("discriminators", d_total)
        return {**g_logs, **d_logs}
