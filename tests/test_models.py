"""PATN-family models: block shapes, parameter counts against the paper (Table 2) and the notes (Appendix B),
the method contract (inputs in the right order, generator apart from training), and that tiny PATN / APATN
methods fit one batch through their own training step."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tiny_market import meta_count
from torch import nn

from reidaug.config import CONFIG_DIR, load_config
from reidaug.errors import ReidaugError
from reidaug.models import registry
from reidaug.models.apatn import APATB, APATNConfig, APATNGenerator
from reidaug.models.blocks import (
    ConvBlock,
    ConvTDecoder,
    Encoder,
    ResidualBlock,
    ResidualDecoder,
    attend,
    init_weights,
)
from reidaug.models.discriminators import ResnetDiscriminator
from reidaug.models.losses import GANLoss
from reidaug.models.patn import PATB, PATNConfig, PATNGenerator
from reidaug.models.patn_family import FamilyLossConfig
from reidaug.models.vgg import VGG19Features

B, H, W = 2, 128, 64


def tiny(name: str, **model):
    """A tiny method of the registry: few channels, one or two blocks, no VGG weights, no pool randomness."""
    spec = registry.get(name)
    mcfg = spec.model_schema(**{"ngf": 8, "n_blocks": 2, **model})
    mcfg.discriminator.ndf, mcfg.discriminator.n_blocks = 8, 1
    if name == "apatn":
        mcfg.attn_channels = mcfg.value_channels = 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spec.build(mcfg, spec.loss_schema(vgg_weights="none", pool_size=0))


def batch(seed: int = 0, size: tuple[int, int] = (H, W)) -> dict[str, torch.Tensor]:
    """Smooth random images (a 4x2 grid upsampled: learnable by a tiny net) and random keypoints."""
    g = torch.Generator().manual_seed(seed)
    h, w = size

    def image():
        return F.interpolate(torch.rand(B, 3, 4, 2, generator=g) * 2 - 1, size=size, mode="bilinear")

    kp = torch.stack(
        [torch.randint(0, h, (B, 18), generator=g), torch.randint(0, w, (B, 18), generator=g)], -1
    )
    kp[:, 3] = -1  # a missing joint
    return {"src_img": image()[:, None], "tgt_img": image(), "src_kp": kp[:, None], "tgt_kp": kp.flip(0)}


def steps_for(method, lr_g: float = 2e-3, lr_d: float = 2e-4):
    """The trainer's step helper on the CPU (no AMP), one stage, the method's own optimizers."""
    from reidaug.models.optim import OptimizerConfig, StageConfig
    from reidaug.train.steps import Steps
    from reidaug.utils.runtime import Amp

    opts = method.configure_optimizers({"generator": OptimizerConfig(lr=lr_g), "discriminators": OptimizerConfig(lr=lr_d)})
    amp = Amp(torch.device("cpu"))
    steps = Steps(method, opts, amp.scaler(), amp, [(0, 10**9, StageConfig(), method.loss_cfg)])
    return steps, opts



# -- blocks ------------------------------------------------------------------------------------------------------
def test_block_shapes():
    x = torch.randn(B, 3, H, W)
    enc = Encoder(3, ngf=16, n_down=2, norm="instance")
    code = enc(x)
    assert code.shape == (B, 64, 32, 16) and enc.out_channels == 64
    assert ConvBlock("image", 64, 64, "batch")(code).shape == (B, 64, 32, 16)
    assert ConvBlock("pose", 128, 64, "batch")(torch.randn(B, 128, 32, 16)).shape == (B, 64, 32, 16)
    assert ResidualBlock(64, 64, "batch")(code).shape == (B, 64, 32, 16)
    assert ResidualBlock(64, 32, "batch")(code).shape == (B, 32, 32, 16)
    assert ConvTDecoder(64, 3, 2, "batch")(code).shape == (B, 3, H, W)
    assert ConvTDecoder(64, 30, 2, "batch")(code).shape == (B, 30, H, W)  # XingGAN's 10-image head
    for light in (False, True):
        assert ResidualDecoder(64, 3, 2, "batch", light=light)(code).shape == (B, 3, H, W)


def test_pose_block_has_no_final_norm_and_biases_follow_norm():
    pose = ConvBlock("pose", 16, 8, "batch")
    assert isinstance(pose[-1], nn.Conv2d) and pose[-1].bias is None  # feeds a sigmoid: no norm after it
    image = ConvBlock("image", 8, 8, "instance")
    assert isinstance(image[-1], nn.InstanceNorm2d) and not image[-1].affine and image[1].bias is not None
    assert ConvBlock("image", 8, 8, "batch", dropout=0.0)[3].__class__ is nn.ReLU  # no dropout layer at 0
    with pytest.raises(ReidaugError, match="unknown norm"):
        Encoder(3, norm="layer")


def test_appendix_b_block_parameter_counts():
    assert meta_count(lambda: nn.Conv2d(256, 256, 3)) == 590_080
    assert meta_count(lambda: ResidualBlock(256, 256, "instance")) == 1_180_160
    assert meta_count(lambda: Encoder(3, 64, 2, "instance")) == 378_496  # E_A
    assert meta_count(lambda: Encoder(36, 64, 2, "instance")) == 481_984  # PATN E_S on [S_c, S_t]
    assert meta_count(lambda: Encoder(18, 64, 2, "instance")) == 425_536  # APATN shared E_S
    assert meta_count(lambda: ConvTDecoder(256, 3, 2, "instance")) == 378_243
    assert meta_count(lambda: PATB(256, 512, "instance")) == 4_719_872  # paper: one PATB 4.72 M
    assert meta_count(lambda: PATB(256, 256, "instance")) == 2_360_320  # first block
    assert meta_count(lambda: APATB(256, 256, 256, "instance")) == 2_754_816  # paper: one APATB 2.76 M
    assert meta_count(lambda: ResidualDecoder(256, 3, 2, "instance")) == 2_397_955


def test_generator_parameter_counts_match_paper_table_2():
    patn_in = meta_count(lambda: PATNGenerator(PATNConfig(norm="instance")))
    patn_bn = meta_count(lambda: PATNGenerator(PATNConfig(norm="batch")))
    apatn_in = meta_count(lambda: APATNGenerator(APATNConfig(norm="instance")))
    apatn_bn = meta_count(lambda: APATNGenerator(APATNConfig(norm="batch")))
    # The paper's count is the IN code (non-affine IN, conv biases on): exact for PATN, notes' recount for APATN.
    assert patn_in == 41_358_019
    assert apatn_in == 16_976_067
    # BN (the Market default) drops normalised convs' biases and adds gamma/beta: +1 per normalised channel.
    assert patn_bn == 41_365_763 and apatn_bn == 16_983_107
    for count, paper in ((patn_in, 41.36e6), (patn_bn, 41.36e6), (apatn_in, 16.93e6), (apatn_bn, 16.93e6)):
        assert abs(count - paper) / paper < 0.01
    # Options move the count the way the notes say.
    two_encoders = meta_count(lambda: APATNGenerator(APATNConfig(norm="instance", shared_pose_encoder=False)))
    assert two_encoders - apatn_in == 425_536
    light = meta_count(lambda: APATNGenerator(APATNConfig(norm="instance", light_decoder=True)))
    assert light < apatn_in - 1_500_000


@pytest.mark.parametrize("name", ["patn", "apatn"])
def test_full_size_generator_and_discriminator_shapes(name):
    spec = registry.get(name)
    torch.manual_seed(0)
    gen = spec.generator(spec.model_schema()).eval()
    assert isinstance(gen, PATNGenerator if name == "patn" else APATNGenerator)
    img, pose = torch.rand(B, 3, H, W) * 2 - 1, torch.rand(B, 18, H, W)
    with torch.no_grad():
        out = gen.synthesize(img, pose, pose)
        assert out.shape == (B, 3, H, W)
        assert torch.equal(out, gen.synthesize(img, pose, pose))  # eval(): dropout off, BN running statistics
        gen.train()
        assert not torch.equal(out, gen.synthesize(img, pose, pose))  # train(): dropout and batch statistics


def test_discriminator_logits_shape_and_flags():
    d_s = ResnetDiscriminator(21).eval()
    d_a = ResnetDiscriminator(6).eval()
    with torch.no_grad():
        assert d_s(torch.randn(B, 21, H, W)).shape == (B, 256, 32, 16)
        assert d_a(torch.randn(B, 6, H, W)).shape == (B, 256, 32, 16)
        one = ResnetDiscriminator(6, ndf=8, n_blocks=1, final_conv=True, act="lrelu").eval()
        assert one(torch.randn(B, 6, H, W)).shape == (B, 1, 32, 16)
    assert any(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in one.modules())
    assert not any(isinstance(m, (nn.Sigmoid, nn.LeakyReLU)) for m in d_s.modules())  # logits, ReLU (code)
    assert sum(isinstance(m, nn.Dropout) for m in d_s.modules()) == 3  # one per residual block


def test_generator_init_and_discriminator_default_init():
    method = tiny("patn", ngf=32)
    conv = method.generator.blocks[1].conv_s[1]  # pose CB conv 256 -> 256 (ngf 32): many weights
    assert abs(conv.weight.std().item() - 0.02) < 0.002
    bn = [m for m in method.generator.modules() if isinstance(m, nn.BatchNorm2d)]
    weights = torch.cat([m.weight for m in bn])
    assert abs(weights.mean().item() - 1) < 0.01 and 0.01 < weights.std().item() < 0.03
    assert all(torch.all(m.bias == 0) for m in bn)
    d_conv = method.discriminators["A"][0][1]  # stem conv 7x7, 6 -> 8
    bound = (6 * 49) ** -0.5  # PyTorch default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), not N(0, 0.02)
    assert d_conv.weight.abs().max() <= bound
    assert abs(d_conv.weight.std().item() - bound / 3**0.5) < 0.1 * bound / 3**0.5
    conv = nn.Conv2d(3, 3, 1)
    bias = conv.bias.detach().clone()
    assert torch.equal(init_weights(conv).bias, bias)  # conv biases keep PyTorch's default, never zeroed


# -- APATN attention -------------------------------------------------------------------------------------------
def test_attend_matches_formula():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 2, 3), torch.randn(1, 4, 2, 3), torch.randn(1, 5, 2, 3)
    out, attn = attend(q, k, v)
    qf, kf, vf = q.flatten(2)[0], k.flatten(2)[0], v.flatten(2)[0]
    expect_attn = torch.softmax(qf.T @ kf, dim=-1)  # no 1/sqrt(C) by default
    assert torch.allclose(attn[0], expect_attn, atol=1e-6)
    assert torch.allclose(out[0].flatten(1), vf @ expect_attn.T, atol=1e-5)
    _, scaled = attend(q, k, v, scale=0.5)
    assert torch.allclose(scaled[0], torch.softmax(qf.T @ kf * 0.5, dim=-1), atol=1e-6)


def test_apatb_attention_rows_sum_to_one_in_fp32_under_autocast():
    torch.manual_seed(0)
    block = APATB(32, 16, 16, "batch").eval()
    fp, fsc, fst = (torch.randn(B, 32, 32, 16) for _ in range(3))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        moved, attn = block.attention(fp, fsc, fst)
        out = block(fp, fsc, fst)
    assert attn.shape == (B, 512, 512) and attn.dtype == torch.float32
    assert torch.allclose(attn.sum(-1), torch.ones(B, 512), atol=1e-5)
    assert moved.dtype == torch.bfloat16 and moved.shape == (B, 32, 32, 16)
    assert [t.shape for t in out] == [(B, 32, 32, 16)] * 3


def test_apatb_fuse_add_needs_matching_width():
    assert (
        APATB(32, 16, 16, "batch", fuse="add")(*(torch.randn(1, 32, 8, 4) for _ in range(3)))[0].shape[1]
        == 32
    )
    with pytest.raises(ReidaugError, match="fuse=add"):
        APATB(32, 16, 16, "batch", out_projection=False, fuse="add")


# -- registry and configs ----------------------------------------------------------------------------------------
def test_registry_unknown_method_lists_choices():
    with pytest.raises(ReidaugError, match=r"unknown method 'pg2'; choose from .*\bapatn, .*\bpatn\b"):
        registry.get("pg2")
    assert registry.get("patn").model_schema is PATNConfig
    assert registry.get("apatn").loss_schema is FamilyLossConfig


@pytest.mark.parametrize("name", ["patn", "apatn"])
def test_method_configs_load_market_recipe(name):
    """The Market recipe lives in the schemas once; the method YAML states only what differs (nothing)."""
    from reidaug.train.config import load_method_config, method_config_schema

    raw = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "methods" / f"{name}.yaml"))
    assert raw == {"method": name}
    cfg = load_method_config(name)
    assert cfg == method_config_schema(name)()
    assert (cfg.model.norm, cfg.model.n_blocks, cfg.model.discriminator.activation) == (
        "batch", 9 if name == "patn" else 5, "relu")  # fmt: skip
    loss = cfg.loss
    assert (loss.lambda_gan, loss.lambda_l1, loss.lambda_perceptual, loss.pool_size) == (5.0, 10.0, 10.0, 50)
    assert {k: (o.kind, o.lr, list(o.betas)) for k, o in cfg.optim.items()} == {
        "generator": ("adam", 2e-4, [0.5, 0.999]), "discriminators": ("adam", 2e-4, [0.5, 0.999])}  # fmt: skip
    assert (cfg.train.iterations, cfg.train.batch_size, cfg.train.decay_start) == (87_500, 32, 62_375)
    assert cfg.stages == []


def test_demo_config_lists_only_differences():
    from reidaug.train.config import load_method_config

    raw = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "methods" / "patn-demo.yaml"))
    assert set(raw) == {"method", "model", "loss", "optim", "train"}
    cfg = load_method_config("patn", "methods/patn-demo")
    default = load_method_config("patn")
    assert cfg.optim["generator"].lr == cfg.optim["discriminators"].lr == 0.001
    assert cfg.model.norm == default.model.norm and cfg.model.dropout == default.model.dropout


def test_bad_config_values_are_one_line_errors(tmp_path):
    with pytest.raises(ReidaugError, match="model.norm must be one of"):
        APATNConfig(norm="layer")
    with pytest.raises(ReidaugError, match="model.fuse"):
        load_config(APATNConfig, None, ["fuse=mul"])
    with pytest.raises(ReidaugError, match="discriminator.activation"):
        load_config(PATNConfig, None, ["discriminator.activation=gelu"])
    with pytest.raises(ReidaugError, match="loss.gan_mode"):
        load_config(FamilyLossConfig, None, ["gan_mode=hinge"])


# -- the method contract ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["patn", "apatn"])
def test_losses_are_finite_scalars_with_logged_terms(name):
    torch.manual_seed(0)
    method = tiny(name).train()
    data = batch()
    fake = method.generator(data)["image"]
    assert fake.shape == (B, 3, H, W)
    g_total, g_logs = method.generator_loss(data, fake)
    assert g_total.dim() == 0 and torch.isfinite(g_total)
    assert set(g_logs) == {"g_total", "g_gan", "g_gan_A", "g_gan_S", "g_l1", "g_perceptual"}
    assert all(v.shape == () and v.dtype == torch.float32 and not v.requires_grad for v in g_logs.values())
    assert float(g_logs["g_total"]) == pytest.approx(
        float(g_logs["g_gan"] + g_logs["g_l1"] + g_logs["g_perceptual"]), rel=1e-5
    )
    g_total.backward()
    assert all(p.grad is None for p in method.discriminators.parameters())  # G step leaves D untouched
    assert all(p.requires_grad for p in method.discriminators.parameters())
    assert method.generator.enc_a[1].weight.grad is not None
    method.zero_grad(set_to_none=True)
    d_total, d_logs = method.discriminator_loss(data, fake.detach())
    assert d_total.dim() == 0 and torch.isfinite(d_total)
    assert set(d_logs) == {"d_total", "d_A", "d_S"}
    d_total.backward()
    assert all(p.grad is None for p in method.generator.parameters())
    assert all(p.grad is not None for p in method.discriminators.parameters())


def test_generator_sees_source_image_source_pose_and_target_pose_in_that_order(monkeypatch):
    """The family's forward: P_c = the source image, S_c = heatmaps of the source keypoints, S_t = of the target
    keypoints. Swapping any two fails this test."""
    from reidaug.data.keypoints import heatmaps

    gen = tiny("patn").generator.eval()
    data = batch()
    seen = {}

    def capture(image, src_pose, tgt_pose):
        seen.update(image=image, src_pose=src_pose, tgt_pose=tgt_pose)
        return image

    monkeypatch.setattr(gen, "synthesize", capture)
    gen(data)
    assert torch.equal(seen["image"], data["src_img"][:, 0])
    assert torch.equal(seen["src_pose"], heatmaps(data["src_kp"][:, 0], (H, W), 6.0))
    assert torch.equal(seen["tgt_pose"], heatmaps(data["tgt_kp"], (H, W), 6.0))
    assert not torch.equal(seen["src_pose"], seen["tgt_pose"])


def test_generation_needs_no_target_image():
    gen = registry.get("apatn").generator(APATNConfig(ngf=8, n_blocks=1, attn_channels=16, value_channels=16)).eval()
    data = batch()
    del data["tgt_img"]
    with torch.no_grad():
        assert gen(data)["image"].shape == (B, 3, H, W)
    assert not any(isinstance(m, (ResnetDiscriminator, VGG19Features)) for m in gen.modules())


# loss weighting (notes 2.5) -------------------------------------------------------------------------------------
def test_family_losses_follow_notes_weights():
    torch.manual_seed(0)
    method = tiny("patn", n_blocks=1).eval()  # eval: deterministic D and G (dropout off)
    method.loss_cfg.lambda_gan, method.loss_cfg.lambda_l1, method.loss_cfg.lambda_perceptual = 3.0, 7.0, 2.0
    data = batch()
    with torch.no_grad():
        fake = method.generator(data)["image"]
        _, g = method.generator_loss(data, fake)
        _, d = method.discriminator_loss(data, fake)
        gan, hm, src = GANLoss("bce"), method.generator.pose_maps(data["tgt_kp"], fake), data["src_img"][:, 0]
        d_a, d_s = method.discriminators["A"], method.discriminators["S"]
        fa, fs = torch.cat([fake, src], 1), torch.cat([fake, hm], 1)
        ra, rs = torch.cat([data["tgt_img"], src], 1), torch.cat([data["tgt_img"], hm], 1)
        expect_g = (3.0 / 2 * (gan(d_a(fa), True) + gan(d_s(fs), True)) + 7.0 * (fake - data["tgt_img"]).abs().mean()
                    + 2.0 * method.perceptual(fake, data["tgt_img"]))  # fmt: skip
        expect_da = 3.0 / 2 * (gan(d_a(ra), True) + gan(d_a(fa), False))
        expect_ds = 3.0 / 2 * (gan(d_s(rs), True) + gan(d_s(fs), False))
    assert float(g["g_total"]) == pytest.approx(expect_g.item(), rel=1e-5)
    assert float(d["d_A"]) == pytest.approx(expect_da.item(), rel=1e-5)
    assert float(d["d_S"]) == pytest.approx(expect_ds.item(), rel=1e-5)
    assert float(d["d_total"]) == pytest.approx(float(d["d_A"] + d["d_S"]), rel=1e-6)


@pytest.mark.parametrize("name", ["patn", "apatn"])
def test_tiny_generator_overfits_one_batch(name):
    """The method's own iteration (G step, then D step on the detached fake) through the trainer's step helper,
    on one fixed 32x16 batch."""
    torch.manual_seed(0)
    method = tiny(name, n_blocks=1).train()
    data = batch(size=(32, 16))
    steps, opts = steps_for(method)
    d_before = [p.detach().clone() for p in method.discriminators.parameters()]
    l1 = []
    for it in range(60):
        steps.begin(it)
        logs = method.training_step(data, steps)
        l1.append(float(logs["g_l1"]))
    assert all(s["step"] == 60 for s in opts["generator"].state.values())
    assert all(s["step"] == 60 for s in opts["discriminators"].state.values())
    assert not any(torch.equal(a, b) for a, b in zip(d_before, method.discriminators.parameters()))
    assert min(l1[-5:]) < 0.4 * l1[0], l1
