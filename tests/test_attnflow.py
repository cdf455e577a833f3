"""Attention + flow (Ren et al., reconstructed; notes 8): the two warping operators and the correlation against
their formulas (Eq. 2-5), the flow losses (Eq. 11-14), the combination of Eq. 8, the staged GFLA iteration, the
EMA that generation runs, and train -> resume -> generate -> augment through the public commands."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from tiny_market import Killed, kill_at, make_root

from reidaug.augment.build import AugmentConfig, augment
from reidaug.config import load_config
from reidaug.data.images import read_image, to_uint8
from reidaug.data.keypoints import read_annotations
from reidaug.data.market import read_split
from reidaug.data.pairs import make_pairs, write_pairs
from reidaug.errors import ReidaugError
from reidaug.models import registry
from reidaug.models.attnflow import (
    AttnFlowConfig,
    AttnFlowGenerator,
    AttnFlowLossConfig,
    affine_regularisation,
    attention_warp,
    correlation,
    flow_warp,
    sampling_correctness,
    unit_features,
)
from reidaug.models.checkpoint import load_checkpoint, load_generator
from reidaug.models.discriminators import ResidualDiscriminator
from reidaug.models.vgg import VGG19Features
from reidaug.train.config import load_method_config, stage_spans
from reidaug.train.trainer import train

B, H, W = 2, 128, 64
TINY_MODEL = dict(ngf=4, flow_ngf=4, flow_max=8, corr_ngf=4, corr_dim=8, comb_channels=4, n_blocks=1)
TINY = [*(f"model.{k}={v}" for k, v in TINY_MODEL.items()), "model.discriminator.ndf=4", "model.ema_decay=0.5",
        "loss.vgg_weights=none", "loss.lambda_perceptual=0", "loss.lambda_style=0", "loss.lambda_l1=5",
        "optim.generator.lr=0.01", "optim.discriminators.lr=0.001",
        "stages=[{name: deformation, until: 2, train: [generator], loss: {lambda_flow: 20, lambda_regu: 0.01, "
        "lambda_l1: 0, lambda_adv: 0}}, {name: end_to_end}]",
        "train.iterations=4", "train.batch_size=2", "train.num_workers=0", "train.tensorboard=false",
        "train.sample_count=2", "train.log_every=1", "train.checkpoint_every=2", "train.sample_every=0"]  # fmt: skip


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    kp = torch.stack([torch.randint(0, H, (B, 18), generator=g), torch.randint(0, W, (B, 18), generator=g)], -1)
    return {"src_img": torch.rand(B, 1, 3, H, W, generator=g) * 2 - 1,
            "tgt_img": torch.rand(B, 3, H, W, generator=g) * 2 - 1, "src_kp": kp[:, None], "tgt_kp": kp.flip(0)}


# -- warping and correlation (Eq. 2-5) ---------------------------------------------------------------------------
def test_zero_flow_returns_its_input_and_flow_is_in_pixels_x_first():
    torch.manual_seed(0)
    x = torch.randn(B, 5, 16, 8)
    assert torch.allclose(flow_warp(x, torch.zeros(B, 2, 16, 8)), x, atol=1e-5)
    right = torch.zeros(B, 2, 16, 8)
    right[:, 0] = 1.0  # one pixel to the right: out[.., j] = x[.., j + 1]
    assert torch.allclose(flow_warp(x, right)[..., :-1], x[..., 1:], atol=1e-5)
    down = torch.zeros(B, 2, 16, 8)
    down[:, 1] = 2.0
    assert torch.allclose(flow_warp(x, down)[..., :-2, :], x[..., 2:, :], atol=1e-5)
    assert torch.allclose(flow_warp(x, down)[..., -1, :], x[..., -1, :], atol=1e-5)  # border padding clamps
    half = right * 0.5  # bilinear between neighbours
    assert torch.allclose(flow_warp(x, half)[..., :-1], (x[..., :-1] + x[..., 1:]) / 2, atol=1e-5)


def test_attention_rows_sum_to_one_and_follow_eq_2():
    torch.manual_seed(0)
    k, q = unit_features(torch.randn(B, 16, 8, 4)), unit_features(torch.randn(B, 16, 4, 2))
    assert torch.allclose(k.norm(dim=1), torch.ones(B, 8, 4), atol=1e-5)
    assert torch.allclose(k.mean(1), torch.zeros(B, 8, 4), atol=1e-6)  # centred before the norm
    c = correlation(k, q, 100.0)
    assert c.shape == (B, 8, 32)  # (target positions j, source positions i)
    assert torch.allclose(c.sum(-1), torch.ones(B, 8), atol=1e-5)
    beta = torch.einsum("bki,bkj->bji", k.flatten(2), q.flatten(2))
    expect = torch.exp(100 * beta) / torch.exp(100 * beta).sum(-1, keepdim=True)  # normalised over source i
    assert torch.allclose(c, expect, atol=1e-5)
    assert c.amax(-1).mean() > 0.5  # alpha = 100 on cosines: sharp


def test_fused_attention_warp_equals_the_explicit_softmax():
    torch.manual_seed(0)
    k, q = unit_features(torch.randn(B, 16, 8, 4)), unit_features(torch.randn(B, 16, 8, 4))
    x = torch.randn(B, 6, 8, 4)
    explicit = (x.flatten(2) @ correlation(k, q, 100.0).transpose(1, 2)).view(B, 6, 8, 4)  # sum_i C^{i,j} x^i
    assert torch.allclose(attention_warp(x, k, q, 100.0), explicit, atol=1e-5)
    low = attention_warp(x.bfloat16(), k.bfloat16(), q.bfloat16(), 100.0, fp32=False)
    assert low.dtype == torch.bfloat16
    err = (low.float() - explicit).abs()
    assert err.mean() < 0.02 and err.max() < 0.25  # (|x| ~ 0.8) alpha 100 amplifies bfloat16 rounding
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the default: k, q and the softmax in float32 under autocast
        kept = attention_warp(x, k, q, 100.0)
        keys = tiny_generator().key_encoder(torch.randn(B, 3, H, W))
    assert kept.dtype == torch.float32 and torch.allclose(kept, explicit, atol=1e-5)
    assert [k.dtype for k in keys] == [torch.float32] * 2


# -- flow losses (Eq. 11-14) -------------------------------------------------------------------------------------
def grid(h: int, w: int):
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return xs, ys


def test_affine_regularisation_is_zero_for_an_affine_flow_and_the_least_squares_residual_otherwise():
    xs, ys = grid(16, 8)
    a = torch.tensor([[1.3, -0.4], [0.2, 0.7]])
    affine = torch.stack([(a[0, 0] - 1) * xs + a[0, 1] * ys + 2.5, a[1, 0] * xs + (a[1, 1] - 1) * ys - 1.0])[None]
    assert affine_regularisation(affine).item() < 1e-8
    bent = torch.stack([0.05 * xs**2, torch.sin(ys)])[None]
    value = affine_regularisation(bent).item()
    assert value > 0.01
    # Eq. 13-14 per 3x3 patch: the least-squares affine fit of the sampling coordinates S = R + w on the patch
    # coordinates, its squared residual summed over x and y, averaged over patches.
    s = torch.stack([xs, ys])[None].double() + bent.double()
    total, n = 0.0, 0
    for i in range(16 - 2):
        for j in range(8 - 2):
            px, py = xs[i:i + 3, j:j + 3].flatten().double(), ys[i:i + 3, j:j + 3].flatten().double()
            r = torch.stack([px, py, torch.ones(9, dtype=torch.float64)], 1)  # (9, 3)
            target = s[0, :, i:i + 3, j:j + 3].reshape(2, 9).T  # (9, 2)
            fit = r @ torch.linalg.lstsq(r, target).solution
            total += (target - fit).pow(2).sum().item()
            n += 1
    assert value == pytest.approx(total / n, rel=1e-4)


def test_sampling_correctness_is_zero_for_the_right_flow():
    torch.manual_seed(0)
    src = torch.rand(1, 8, 6, 6)
    src[..., -1] = src[..., 0]  # so that the border column of the shifted target is sampled right too
    assert sampling_correctness(torch.zeros(1, 2, 6, 6), src, src).abs().item() < 1e-6
    tgt = torch.roll(src, -1, dims=-1)  # the target is the source shifted one pixel to the left
    wrong = sampling_correctness(torch.zeros(1, 2, 6, 6), src, tgt).item()
    shift = torch.zeros(1, 2, 6, 6)
    shift[:, 0] = 1.0
    right = sampling_correctness(shift, src, tgt).item()
    assert wrong > 0.05 and abs(right) < 1e-5
    # the formula: exp(-cos(warped, target) / best cos of the target over all source positions) - e^-1
    mu = F.cosine_similarity(src, tgt, dim=1, eps=1e-8).flatten()
    best = (F.normalize(tgt.flatten(2), dim=1).transpose(1, 2) @ F.normalize(src.flatten(2), dim=1)).amax(-1)
    assert wrong == pytest.approx((torch.exp(-mu / best.flatten()) - math.exp(-1)).mean().item(), rel=1e-5)


# -- the generator -----------------------------------------------------------------------------------------------
def tiny_generator(**extra) -> AttnFlowGenerator:
    torch.manual_seed(0)
    return AttnFlowGenerator(AttnFlowConfig(**{**TINY_MODEL, **extra})).eval()


def test_generator_scales_shapes_and_deformation_only_mode():
    gen = tiny_generator()
    data = batch()
    del data["tgt_img"]  # generation needs no target
    with torch.no_grad():
        out = gen(data)
        deform = gen(data, synthesize=False)
    assert out["image"].shape == (B, 3, H, W) and out["image"].abs().max() <= 1
    assert [tuple(f.shape) for f in out["flows"]] == [(B, 2, 16, 8), (B, 2, 32, 16)]  # 1/8 and 1/4, coarse first
    assert [tuple(m.shape) for m in out["masks"]] == [(B, 1, 16, 8), (B, 1, 32, 16)]
    assert all(((m >= 0) & (m <= 1)).all() for m in out["masks"])
    assert "image" not in deform and all(torch.equal(a, b) for a, b in zip(deform["flows"], out["flows"]))
    assert not any(isinstance(m, (ResidualDiscriminator, VGG19Features)) for m in gen.modules())
    # the attention-warped small image is Eq. 3 on the average-pooled reference image
    small = F.avg_pool2d(data["src_img"][:, 0], 8)
    expect = attention_warp(small, out["keys"][0], out["queries"][0], 100.0)
    assert torch.allclose(out["attn_images"][0], expect, atol=1e-5)


def test_combination_map_selects_attention_or_flow():
    """Eq. 8: with m = 1 the image does not depend on the flow; with m = 0 not on the correlation encoders."""
    gen = tiny_generator(init_gain=1.0)  # (at GFLA's gain 0.02 the untrained image hardly depends on anything)
    data = batch()

    def image_with(mask_bias: float, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            for comb in gen.combination:
                comb[-2].weight.zero_()
                comb[-2].bias.fill_(mask_bias)
            before = gen(data)["image"]
            for p in getattr(gen, part).parameters():
                p.add_(torch.randn_like(p) * 0.5)
            return before, gen(data)["image"]

    before, after = image_with(40.0, "flow")
    assert torch.allclose(before, after, atol=1e-6)
    before, after = image_with(-40.0, "key_encoder")
    assert torch.allclose(before, after, atol=1e-6)
    before, after = image_with(0.0, "key_encoder")
    assert not torch.allclose(before, after, atol=1e-3)


# -- the method: stages, GFLA order, EMA -------------------------------------------------------------------------
def test_paper_and_demo_configs():
    cfg = load_method_config("attnflow")
    assert (cfg.model.alpha, cfg.model.factors(), cfg.model.norm, cfg.model.ema_decay) == (100.0, [8, 4],
                                                                                          "instance_affine", 0.999)
    loss = cfg.loss
    assert (loss.lambda_attn, loss.lambda_flow, loss.lambda_regu, loss.lambda_perceptual, loss.lambda_style,
            loss.lambda_adv, loss.lambda_l1, loss.gan_mode) == (5.0, 5.0, 0.0025, 0.5, 500.0, 2.0, 0.0, "lsgan")
    assert {k: (o.lr, list(o.betas)) for k, o in cfg.optim.items()} == {
        "generator": (1e-4, [0.0, 0.999]), "discriminators": (1e-5, [0.0, 0.999])}  # fmt: skip
    assert (cfg.train.iterations, cfg.train.batch_size, cfg.train.decay_start) == (120_000, 24, 120_000)
    spans = stage_spans(cfg)
    assert [(a, b, s.name, s.train) for a, b, s, _ in spans] == [(0, 20_000, "deformation", ["generator"]),
                                                                 (20_000, 120_000, "end_to_end", [])]
    first = spans[0][3]
    assert (first.lambda_flow, first.lambda_regu, first.lambda_perceptual, first.lambda_adv) == (20.0, 0.01, 0, 0)
    assert cfg.model.discriminator.kind == "residual" and cfg.model.discriminator.spectral_norm
    demo = load_method_config("attnflow", "methods/attnflow-demo")
    patn = load_method_config("patn", "methods/patn-demo")
    same = {k: v for k, v in vars(demo.train).items() if k != "find_unused_parameters"}
    assert demo.model.ngf == patn.model.ngf and same == {k: v for k, v in vars(patn.train).items() if k in same}
    assert demo.loss.lambda_perceptual == demo.loss.lambda_style == 0 and demo.loss.vgg_weights == "none"
    assert stage_spans(demo)[0][1] < demo.train.iterations  # both stages run within the demo's budget


def test_gfla_discriminator_is_unconditional_residual_with_spectral_norm():
    from torch import nn

    torch.manual_seed(0)
    spec = registry.get("attnflow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = spec.build(AttnFlowConfig(**TINY_MODEL), AttnFlowLossConfig(vgg_weights="none")).discriminator
    assert isinstance(d, ResidualDiscriminator) and d[0].main[1].in_channels == 3  # the image alone
    assert [blk.main[1].out_channels for blk in list(d)[:3]] == [32, 64, 128]
    assert d(torch.randn(B, 3, H, W)).shape == (B, 1, 16, 8)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    assert {m.negative_slope for m in d.modules() if isinstance(m, nn.LeakyReLU)} == {0.1}
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in d.modules())


def test_unbuilt_vgg_term_in_a_stage_is_one_clear_error():
    spec = registry.get("attnflow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method = spec.build(AttnFlowConfig(**TINY_MODEL), AttnFlowLossConfig(vgg_weights="none", lambda_flow=0,
                                                                            lambda_perceptual=0, lambda_style=0))
    assert method.vgg is None
    stage = AttnFlowLossConfig(lambda_flow=20.0, lambda_perceptual=0, lambda_style=0)
    with pytest.raises(ReidaugError, match="a stage sets loss.lambda_flow > 0, but the loss config has it at 0"):
        method.generator_loss(batch(), method.generator(batch()), stage)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("market"), ids=3, per_id=4)


@pytest.fixture(scope="module")
def run(root, tmp_path_factory):
    """4 iterations through the public command: 2 of the deformation stage, 2 end to end."""
    from reidaug.cli import main

    out = tmp_path_factory.mktemp("runs") / "attnflow"
    args = ["train", "--method", "attnflow", "--data", root, "--out", out, "--device", "cpu", "--no-progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([str(a) for a in args] + [a for s in TINY for a in ("--set", s)]) == 0
    return out


def log(run_dir):
    return [{k: v for k, v in json.loads(ln).items() if k != "it_per_s"}
            for ln in (run_dir / "log.jsonl").read_text().splitlines()]  # fmt: skip


def test_stages_and_the_gfla_iteration(run):
    rows = log(run)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    deform = {"g_total", "g_attn", "g_flow", "g_regu"}
    assert [set(r) - {"iteration", "lr", "lr_discriminators"} for r in rows[:2]] == [deform] * 2
    assert all(set(r) >= deform | {"g_l1", "g_adv", "d_total"} for r in rows[2:])
    assert all(math.isfinite(v) for r in rows for v in r.values())
    ckpt = load_checkpoint(run)
    steps = {k: {float(s["step"]) for s in o["state"].values()} for k, o in ckpt["optimizers"].items()}
    # the synthesis module trains only end to end; the estimator from the start; D in stage 2 only
    gen_state = ckpt["optimizers"]["generator"]["state"]
    assert steps["discriminators"] == {2.0} and steps["generator"] == {2.0, 4.0} and len(gen_state) > 0
    assert ckpt["inference"] == "ema.module" and int(ckpt["model"]["ema.n_averaged"]) == 4


def test_resume_is_exact(root, run, tmp_path, run_cli):
    out = tmp_path / "resumed"
    cfg = load_method_config("attnflow", None, TINY)
    with pytest.raises(Killed), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg, root, out, device="cpu", show_progress=False, callback=kill_at(3))
    assert load_checkpoint(out)["iteration"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, _, err = run_cli("train", "--method", "attnflow", "--data", root, "--out", out, "--resume", "--device",
                               "cpu", "--no-progress")  # fmt: skip
    assert code == 0, err
    assert log(out) == log(run)
    a, b = load_checkpoint(run)["model"], load_checkpoint(out)["model"]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_generation_runs_the_ema_weights(root, run, tmp_path, run_cli):
    ann = read_annotations(root / "annotations" / "train.csv")
    pairs = make_pairs(ann).head(4)
    write_pairs(tmp_path / "pairs.csv", pairs)
    code, _, err = run_cli("generate", "--checkpoint", run, "--pairs", tmp_path / "pairs.csv", "--data", root,
                           "--out", tmp_path / "gen", "--device", "cpu", "--no-progress", "--set", "jpeg_quality=100",
                           "--set", "num_workers=0")  # fmt: skip
    assert code == 0, err
    manifest = pd.read_csv(tmp_path / "gen" / "manifest.csv", dtype=str)
    assert set(manifest["method"]) == {"attnflow"}
    ema_gen, ckpt = load_generator(run)
    assert isinstance(ema_gen, AttnFlowGenerator)
    model = ckpt["model"]
    ema_keys = {k[len("ema.module."):]: v for k, v in model.items() if k.startswith("ema.module.")}
    assert all(torch.equal(v, ema_keys[k]) for k, v in ema_gen.state_dict().items())
    raw = AttnFlowGenerator(ema_gen.cfg).eval()
    raw.load_state_dict({k[len("generator."):]: v for k, v in model.items() if k.startswith("generator.")})
    assert any(not torch.equal(v, ema_keys[k]) for k, v in raw.state_dict().items())

    from reidaug.data.samples import SampleDataset, image_index, to_device

    ds = SampleDataset.from_table(pairs, image_index(root), ann, 1)
    data = to_device(torch.utils.data.default_collate([ds[i] for i in range(len(pairs))]), torch.device("cpu"))
    with torch.no_grad():
        by_ema, by_raw = to_uint8(ema_gen(data)["image"]), to_uint8(raw(data)["image"])
    written = np.stack([read_image(tmp_path / "gen" / n) for n in manifest["name"]])
    err_ema = np.abs(written.astype(float) - by_ema).mean()
    err_raw = np.abs(written.astype(float) - by_raw).mean()
    assert err_ema < 2.0 and err_raw > 2 * err_ema, (err_ema, err_raw)


def test_augment_with_an_attnflow_run(root, run, tmp_path):
    cfg = load_config(AugmentConfig, None, ["portion=0.5", "generate.batch_size=4", "generate.num_workers=0"])
    r = augment(root, tmp_path / "aug", run, cfg, device="cpu", show_progress=False)
    assert r.generated == r.removed > 0
    assert len(read_split(r.augmented_root, "train")) == len(read_split(root, "train"))
    manifest = pd.read_csv(tmp_path / "aug" / "generated" / "manifest.csv", dtype=str)
    assert set(manifest["method"]) == {"attnflow"} and len(manifest) == r.generated
