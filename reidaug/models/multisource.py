"""Multi-source attention U-Net (Lathuilière, Sangineto, Siarohin, Sebe: "Attention-based Fusion for Multi-source
Human Image Generation", WACV'20; paper 004, architecture notes §9, §14.3 item 18).

A person is generated in a target pose from any number M >= 1 of source images of it. The pose-based encoder E
(§3.3) encodes every source independently (shared weights) in two streams: the source stream on [x_i, J_i], whose
features at the finer levels are aligned to the target pose by deformable skip connections (ten body-part affine
transforms from the keypoints, notes 1.8), and the pose stream on [J_i, J_tau]. Their concatenation xi_r^i at
each of R levels feeds the attention-based decoder A (§3.2): from phi_R = mean_i xi_R^i (Eq. 1), every level
weighs the sources with a spatial and a channel attention (Eq. 3), normalised across sources (Eq. 4), fuses
them (Eq. 2) and concatenates the result to the up-sampled latent (Eq. 5). Nothing depends on the order of the
sources. One conditional PatchGAN, shared over the sources, sees [x_i, J_i, x, J_tau] for each source (Eqs. 6-7);
the reconstruction loss is the nearest-neighbour loss on VGG-19 features (Eq. 8).

Open choices follow the notes' recommendations, each a config value: one-group norm (keras-contrib's
InstanceNormalization), channel-attention hidden width C_E / 4 (code), the previous level's attention as an
input of the next (the released `att_dec_rec` variant), bilinear warping, mean GAN loss over sources (code).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from reidaug.config import check_choice
from reidaug.data.keypoints import NUM_JOINTS, heatmaps
from reidaug.errors import ReidaugError
from reidaug.models import registry
from reidaug.models.blocks import NORMS, conv_bias, norm_layer
from reidaug.models.deformable import deform, part_masks, part_transforms
from reidaug.models.discriminators import DiscriminatorConfig, build_discriminator
from reidaug.models.losses import DISTANCES, GAN_MODES, GANLoss
from reidaug.models.method import Method, PoseGenerator, logged
from reidaug.models.optim import OptimizerConfig, StageConfig, make_optimizer
from reidaug.models.vgg import LAYERS, VGG19Features, feature_distance

CHANNEL_HIDDEN = ("encoder", "paper")
REDUCTIONS = ("mean", "sum")
CLIP = 1e-7  # attention values are clipped to [CLIP, 1 - CLIP] before the normalisation (code)


@dataclass
class MultiSourceConfig:
    num_sources: int = 5  # M sources per target in training (the tuples' first M); generation takes any M >= 1
    image_channels: int = 3
    pose_channels: int = NUM_JOINTS
    heatmap_sigma: float = 6.0  # pixels (notes 1.4)
    ngf: int = 64  # encoder widths ngf x (1, 2, 4, 8, 8, 8), per stream (notes 9.2)
    n_blocks: int = 6  # R, encoder blocks = decoder blocks (§3.2): 6 takes 128x64 to 4x2
    deform_levels: int = 4  # the finest levels whose source-stream features are warped (128x64 ... 16x8)
    norm: str = "group1"  # keras-contrib InstanceNormalization = one-group norm (notes 9.2) | instance | ...
    channel_hidden: str = "encoder"  # hidden width of f: C_E / 4 (code) | paper: (C_D + C_E) / 4
    recurrent_attention: bool = True  # the previous level's attention is an input of the next (code)
    discriminator: DiscriminatorConfig = field(
        default_factory=lambda: DiscriminatorConfig(kind="deformable", n_downsampling=3)
    )

    def __post_init__(self) -> None:
        check_choice("model.norm", self.norm, NORMS)
        check_choice("model.channel_hidden", self.channel_hidden, CHANNEL_HIDDEN)
        if not 2 <= self.n_blocks <= 7:
            raise ReidaugError(f"model.n_blocks (U-Net levels) must be in 2..7 for 128x64 images, got {self.n_blocks}")
        if not 0 <= self.deform_levels <= self.n_blocks:
            raise ReidaugError(f"model.deform_levels must be in 0..n_blocks ({self.n_blocks}), got {self.deform_levels}")


@dataclass
class MultiSourceLossConfig:
    """Eq. 8: GAN + lambda_nn * L_NN. The paper's lambda_nn = 0.01 is for Caffe-preprocessed VGG features (0-255
    BGR inputs), about 255 x 0.226 (ImageNet std) = 57.6 times torchvision's ImageNet-normalised ones: 0.576 here
    keeps the paper's balance (notes 9.5). L1 and perceptual terms are extras (0 in the paper)."""

    gan_mode: str = "bce"  # non-saturating, on logits (notes 9.5) | lsgan
    lambda_gan: float = 1.0
    lambda_nn: float = 0.576
    nn_features: str = "relu1_2"  # a VGG-19 layer (Keras block1_conv2 includes its ReLU) | image: the pixels
    nn_area: int = 3  # neighbourhood side of the nearest-neighbour search
    source_reduction: str = "mean"  # GAN terms over the M sources: mean (code) | sum (Eq. 7)
    lambda_l1: float = 0.0
    lambda_perceptual: float = 0.0  # L1 of VGG relu1_2 features
    perceptual_distance: str = "l1"
    vgg_weights: str = "auto"  # auto (torch hub cache, never downloads) | none (random, warns) | PATH

    def __post_init__(self) -> None:
        check_choice("loss.gan_mode", self.gan_mode, GAN_MODES)
        check_choice("loss.nn_features", self.nn_features, ("image", *LAYERS))
        check_choice("loss.source_reduction", self.source_reduction, REDUCTIONS)
        check_choice("loss.perceptual_distance", self.perceptual_distance, DISTANCES)
        if self.nn_area < 1 or self.nn_area % 2 == 0:
            raise ReidaugError(f"loss.nn_area must be an odd number >= 1, got {self.nn_area}")


def optimizers() -> dict[str, OptimizerConfig]:
    """Adam 2e-4, betas (0.5, 0.999) for G and for the (one, shared) discriminator (notes 9.5)."""
    return {"generator": OptimizerConfig(), "discriminators": OptimizerConfig()}


def stages() -> list[StageConfig]:
    """§4: train with M = 2, then fine-tune with the target M (notes 14.3.18: 60 K iterations in all)."""
    return [StageConfig(name="two_sources", until=30_000, sources=2), StageConfig(name="target_sources")]


# -- generator ---------------------------------------------------------------------------------------------------


def encoder_channels(cfg: MultiSourceConfig) -> list[int]:
    """Channels of one stream at levels 1..R: ngf x (1, 2, 4, 8, 8, ...)."""
    return [cfg.ngf * min(2**r, 8) for r in range(cfg.n_blocks)]


class Stream(nn.Module):
    """One encoder stream (notes 9.2): conv 3x3 s1; then [LReLU(0.2), pad 1, conv 4x4 s2, N] per level, the last
    one without N. Returns the R level outputs, finest first."""

    def __init__(self, in_ch: int, cfg: MultiSourceConfig):
        super().__init__()
        chans = encoder_channels(cfg)
        self.levels = nn.ModuleList([nn.Conv2d(in_ch, chans[0], 3, padding=1)])
        for r in range(1, cfg.n_blocks):
            last = r == cfg.n_blocks - 1
            conv = nn.Conv2d(chans[r - 1], chans[r], 4, 2, 1, bias=last or conv_bias(cfg.norm))
            self.levels.append(nn.Sequential(nn.LeakyReLU(0.2), conv, nn.Identity() if last else norm_layer(cfg.norm, chans[r])))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for level in self.levels:
            x = level(x)
            out.append(x)
        return out


class SourceAttention(nn.Module):
    """Att(psi, xi^i) of one level (Eqs. 2-4): spatial g = sigmoid(conv 1x1) and channel f = sigmoid(FC(ReLU(FC(
    GAP(N(input)))))) of the input [psi, xi^i(, previous attention^i)], A^i = g^i f^i (Eq. 3), normalised across
    the sources (Eq. 4), F = sum_i Att^i * xi^i (Eq. 2). Weights are shared over the sources."""

    def __init__(self, c_d: int, c_e: int, c_prev: int, cfg: MultiSourceConfig):
        super().__init__()
        c_in = c_d + c_e + c_prev
        hidden = max(1, (c_e if cfg.channel_hidden == "encoder" else c_d + c_e) // 4)
        self.spatial = nn.Conv2d(c_in, 1, 1)
        self.norm = norm_layer(cfg.norm, c_in)
        self.channel = nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(), nn.Linear(hidden, c_e))

    def forward(self, psi: torch.Tensor, xi: torch.Tensor, prev: torch.Tensor | None = None):
        """psi (B, C_D, h, w), xi (B, M, C_E, h, w), prev (B, M, C_prev, h, w) -> F (B, C_E, h, w), Att (B, M, C_E,
        h, w)."""
        b, m = xi.shape[:2]
        parts = [psi[:, None].expand(-1, m, -1, -1, -1), xi] + ([] if prev is None else [prev])
        x = torch.cat(parts, 2).flatten(0, 1)  # every source with the same latent
        g = torch.sigmoid(self.spatial(x))  # (BM, 1, h, w)
        f = torch.sigmoid(self.channel(self.norm(x).mean((2, 3))))  # (BM, C_E)
        a = (g * f[..., None, None]).clamp(CLIP, 1 - CLIP).unflatten(0, (b, m))  # Eq. 3
        att = a / a.sum(1, keepdim=True)  # Eq. 4
        return (att * xi).sum(1), att  # Eq. 2


class MultiSourceGenerator(PoseGenerator):
    """forward({src_img (B, M, 3, H, W), src_kp (B, M, 18, 2), tgt_kp (B, 18, 2)}) -> {"image" (B, 3, H, W),
    "attention" (B, M, H, W): the channel mean of the finest attention (saliency per source), and the heatmaps
    "src_pose" (B, M, 18, H, W), "tgt_pose" (B, 18, H, W)}. Any M >= 1."""

    variable_sources = True

    def __init__(self, cfg: MultiSourceConfig):
        super().__init__()
        self.num_sources, self.cfg = cfg.num_sources, cfg
        img, pose = cfg.image_channels, cfg.pose_channels
        self.source_stream = Stream(img + pose, cfg)  # [x_i, J_i]
        self.pose_stream = Stream(2 * pose, cfg)  # [J_i, J_tau]
        c_e = [2 * c for c in encoder_channels(cfg)]  # xi_r = [deformed source features, pose features]
        c_d = [cfg.ngf * min(2 ** (r + 1), 8) for r in range(cfg.n_blocks)]  # psi_r (notes 9.3)
        c_d[-1] = c_e[-1]  # psi_R = phi_R of Eq. 1, the mean of xi_R
        self.attention = nn.ModuleList()
        self.up = nn.ModuleList()
        for r in range(cfg.n_blocks):  # index r = level r + 1
            last = r == cfg.n_blocks - 1
            prev = c_e[r + 1] if cfg.recurrent_attention and not last else 0
            self.attention.append(SourceAttention(c_d[r], c_e[r], prev, cfg))
            if not last:  # up block into level r: ReLU, nearest x2, conv 3x3, N -> psi_r
                self.up.append(nn.Sequential(nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(c_d[r + 1] + c_e[r + 1], c_d[r], 3, padding=1),
                                             norm_layer(cfg.norm, c_d[r])))  # fmt: skip
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(c_d[0] + c_e[0], img, 3, padding=1), nn.Tanh())

    def encode(self, src, src_pose, tgt_pose, src_kp, tgt_kp) -> list[torch.Tensor]:
        """xi_r^i (B, M, C_E, h, w) for r = 1..R: both streams per source, the finest source-stream levels warped
        to the target pose part by part (deformable skips)."""
        b, m, _, h, w = src.shape
        flat = lambda t: t.flatten(0, 1)  # noqa: E731
        tgt_rep = tgt_pose.repeat_interleave(m, 0)
        app = self.source_stream(torch.cat([flat(src), flat(src_pose)], 1))
        pose = self.pose_stream(torch.cat([flat(src_pose), tgt_rep], 1))
        if self.cfg.deform_levels:
            theta, valid = part_transforms(flat(src_kp), tgt_kp.repeat_interleave(m, 0))
            masks = part_masks(tgt_kp, (h, w)).repeat_interleave(m, 0) * valid[..., None, None]
        xi = []
        for r, (a, p) in enumerate(zip(app, pose)):
            if r < self.cfg.deform_levels:
                a = deform(a, theta, masks, h)
            xi.append(torch.cat([a, p], 1).unflatten(0, (b, m)))
        return xi

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        src, src_kp, tgt_kp = batch["src_img"], batch["src_kp"], batch["tgt_kp"]
        size = tuple(src.shape[-2:])
        src_pose = heatmaps(src_kp.flatten(0, 1), size, self.cfg.heatmap_sigma).to(src.dtype).unflatten(0, src.shape[:2])
        tgt_pose = heatmaps(tgt_kp, size, self.cfg.heatmap_sigma).to(src.dtype)
        xi = self.encode(src, src_pose, tgt_pose, src_kp, tgt_kp)
        top = len(xi) - 1
        psi, prev, phi = xi[top].mean(1), None, None  # Eq. 1
        for r in range(top, -1, -1):
            if phi is not None:
                psi = self.up[r](phi)  # psi_r from phi_{r+1}
            fused, att = self.attention[r](psi, xi[r], prev)
            phi = torch.cat([psi, fused], 1)  # Eq. 5
            if self.cfg.recurrent_attention and r > 0:
                prev = F.interpolate(att.flatten(0, 1), scale_factor=2, mode="bilinear",
                                     align_corners=False).unflatten(0, att.shape[:2])  # fmt: skip
        return {"image": self.head(phi), "attention": att.mean(2), "src_pose": src_pose, "tgt_pose": tgt_pose}


# -- losses ------------------------------------------------------------------------------------------------------


def nearest_neighbour_loss(fake: torch.Tensor, real: torch.Tensor, area: int = 3) -> torch.Tensor:
    """L_NN (Deformable GAN): for every position of `fake` (B, C, H, W), the smallest L1 distance (summed over
    channels) to `real` at a position of its area x area neighbourhood (positions outside the map excluded);
    the mean over positions and batch."""
    fake, real = fake.float(), real.float()
    h, w = fake.shape[-2:]
    k = area // 2
    padded = F.pad(real, (k, k, k, k))
    inside = F.pad(torch.ones_like(real[:1, :1]), (k, k, k, k))
    best = None
    for dy in range(area):
        for dx in range(area):
            d = (fake - padded[..., dy : dy + h, dx : dx + w]).abs().sum(1)
            d = torch.where(inside[:, 0, dy : dy + h, dx : dx + w] > 0, d, torch.full_like(d, float("inf")))
            best = d if best is None else torch.minimum(best, d)
    return best.mean()


class MultiSource(Method):
    """The generator, one conditional discriminator shared over the sources, L_NN (+ optional L1 / perceptual)."""

    parts = ("generator", "discriminators")
    progress_keys = ("g_nn", "g_total", "d_total")

    def __init__(self, model_cfg: MultiSourceConfig, loss_cfg: MultiSourceLossConfig):
        super().__init__()
        self.model_cfg, self.loss_cfg = model_cfg, loss_cfg
        self.generator = MultiSourceGenerator(model_cfg)
        img, pose = model_cfg.image_channels, model_cfg.pose_channels
        # [x_i, J_i, x, J_tau]; a ModuleDict so the optimizer and DDP part share the family's names
        self.discriminators = nn.ModuleDict({"D": build_discriminator(2 * (img + pose), model_cfg.discriminator,
                                                                      model_cfg.norm)})  # fmt: skip
        self.gan_loss = GANLoss(loss_cfg.gan_mode)
        layers = [loss_cfg.nn_features] if loss_cfg.nn_features != "image" and loss_cfg.lambda_nn > 0 else []
        layers += ["relu1_2"] if loss_cfg.lambda_perceptual > 0 else []
        self.vgg = VGG19Features(tuple(dict.fromkeys(layers)), loss_cfg.vgg_weights) if layers else None

    def disc_logits(self, batch: dict, out: dict, image: torch.Tensor) -> torch.Tensor:
        """D on [x_i, J_i, image, J_tau] for every source i (Eq. 6): logits (B, M, ...)."""
        src, src_pose, tgt_pose = batch["src_img"], out["src_pose"], out["tgt_pose"]
        b, m = src.shape[:2]
        rep = lambda t: t.to(image.dtype).repeat_interleave(m, 0)  # noqa: E731
        x = torch.cat([src.flatten(0, 1).to(image.dtype), src_pose.flatten(0, 1).to(image.dtype), rep(image),
                       rep(tgt_pose)], 1)  # fmt: skip
        return self.discriminators["D"](x).unflatten(0, (b, m))

    def multi_gan(self, logits: torch.Tensor, real: bool, cfg: MultiSourceLossConfig) -> torch.Tensor:
        """Eq. 7 over the sources: the mean (code) or the sum (paper) of the per-source terms."""
        loss = self.gan_loss(logits, real)
        return loss * logits.shape[1] if cfg.source_reduction == "sum" else loss

    def generator_loss(self, batch, out, cfg: MultiSourceLossConfig) -> tuple[torch.Tensor, dict]:
        fake, real = out["image"], batch["tgt_img"]
        terms = {"g_gan": cfg.lambda_gan * self.multi_gan(self.disc_logits(batch, out, fake), True, cfg)}
        f_fake, f_real = {"image": fake}, {"image": real}
        if self.vgg is not None:  # VGG features once for the NN and perceptual terms
            f_fake.update(self.vgg(fake))
            with torch.no_grad():
                f_real.update(self.vgg(real))
        if cfg.lambda_nn > 0:
            nn_loss = nearest_neighbour_loss(f_fake[cfg.nn_features], f_real[cfg.nn_features].detach(), cfg.nn_area)
            terms["g_nn"] = cfg.lambda_nn * nn_loss  # Eq. 8
        if cfg.lambda_l1 > 0:
            terms["g_l1"] = cfg.lambda_l1 * (fake.float() - real.float()).abs().mean()
        if cfg.lambda_perceptual > 0:
            dist = feature_distance(f_fake["relu1_2"], f_real["relu1_2"], cfg.perceptual_distance)
            terms["g_perceptual"] = cfg.lambda_perceptual * dist
        total = sum(terms.values())
        return total, logged({"g_total": total, **terms})

    def discriminator_loss(self, batch, out, cfg: MultiSourceLossConfig) -> tuple[torch.Tensor, dict]:
        fake = out["image"].detach()
        real_term = self.multi_gan(self.disc_logits(batch, out, batch["tgt_img"]), True, cfg)
        fake_term = self.multi_gan(self.disc_logits(batch, out, fake), False, cfg)
        total = cfg.lambda_gan * (real_term + fake_term)
        return total, logged({"d_total": total, "d_real": real_term, "d_fake": fake_term})

    def configure_optimizers(self, optim: dict[str, OptimizerConfig]) -> dict[str, torch.optim.Optimizer]:
        return {"generator": make_optimizer(self.generator.parameters(), optim["generator"]),
                "discriminators": make_optimizer(self.discriminators.parameters(), optim["discriminators"])}  # fmt: skip

    def training_step(self, batch, step) -> dict[str, torch.Tensor]:
        """One D step, then one G step (notes 9.5), on one generator pass."""
        with step.autocast():
            out = self.generator(batch)
        logs = {}
        if step.trains("discriminators"):
            with step.autocast():
                d_total, logs = self.discriminator_loss(batch, out, step.loss)
            step.step("discriminators", d_total)
        with step.frozen("discriminators"), step.autocast():
            g_total, g_logs = self.generator_loss(batch, out, step.loss)
        step.step("generator", g_total)
        return {**g_logs, **logs}


registry.register(registry.MethodSpec(
    name="multisource", model_schema=MultiSourceConfig, loss_schema=MultiSourceLossConfig, build=MultiSource,
    generator=MultiSourceGenerator, optimizers=optimizers, stages=stages,
    train={"iterations": 60_000, "batch_size": 4, "decay_start": 60_000},
    paper="Attention-based Fusion for Multi-source Human Image Generation (WACV'20)",
))  # fmt: skip
