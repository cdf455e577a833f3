"""XingGAN, XingGAN++ and 2s-ATN: parameter counts against the papers and the notes' bookkeeping (Appendix B),
the wiring of their blocks and heads against the formulas of notes 5-7, shapes of every ablation config, the
fused-attention path against an explicit softmax(QK^T)V, and one short training run each."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from tiny_market import TINY_PATN, make_root, meta_count

from reidaug.config import CONFIG_DIR
from reidaug.models import registry
from reidaug.models.blocks import cross_attention
from reidaug.models.discriminators import ResnetDiscriminator
from reidaug.models.twostream import ATBlock, TwoStreamConfig
from reidaug.models.xinggan import (
    EnhancedAttention,
    XingAttention,
    XingBlock,
    XingGANConfig,
    XingGANGenerator,
    XingGANPPConfig,
)
from reidaug.train.config import load_method_config

B, H, W = 2, 128, 64


def test_parameter_counts_match_papers_and_bookkeeping():
    xing_in = meta_count(lambda: XingGANGenerator(XingGANConfig(norm="instance")))
    xing_bn = meta_count(lambda: XingGANGenerator(XingGANConfig(norm="batch")))
    two = registry.get("twostream")
    two_in = meta_count(lambda: two.generator(TwoStreamConfig(norm="instance")))
    two_bn = meta_count(lambda: two.generator(TwoStreamConfig(norm="batch")))
    # Appendix B: PATN + 9 x 82,241 attention projections + 30-channel heads, second decoder, co-attention head.
    assert xing_in == 44_844_634
    # 2s-ATN: PATN's 41,358,019 + 9 x (82,369 AT-module + 131,328 fusion).
    assert two_in == 41_358_019 + 9 * (82_369 + 131_328) == 43_281_292
    # BN: +1 per normalised channel (BN's gamma and beta replace the conv bias), -1 per output channel of the
    # unnormalised last conv of each pose CB (no bias under BN): PATN's +7,744, and for XingGAN +832 more for
    # the norms of its second decoder (192), the shape decoder's 1x1 ConvT (256) and the co-attention head (384),
    # -21 for the head's last 1x1 ConvT (a bias only under IN, as the published code's use_bias).
    assert xing_bn - xing_in == 7_744 + 832 - 21 == 8_555 and two_bn - two_in == 7_744
    for count, paper in ((xing_in, 44.85e6), (xing_bn, 44.85e6), (two_in, 43.28e6), (two_bn, 43.28e6)):
        assert abs(count - paper) / paper < 0.01
    assert meta_count(lambda: XingAttention(256, 32, None)) == 82_241
    per_block = meta_count(lambda: ATBlock(256, 512, TwoStreamConfig(norm="instance")))
    assert per_block - (1_180_160 + 2_359_808 + 1_179_904) == 82_369 + 131_328  # minus the two CBs


def test_sdpa_attention_equals_explicit_softmax():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 8, 4, 3), torch.randn(2, 8, 5, 2), torch.randn(2, 6, 5, 2)

    def explicit(q, k, v, scale=1.0, heads=1):
        qs, ks, vs = (x.flatten(2).unflatten(1, (heads, -1)) for x in (q, k, v))  # (B, h, c, N)
        attn = torch.softmax(scale * qs.transpose(2, 3) @ ks, dim=-1)  # (B, h, Nq, Nk)
        return (vs @ attn.transpose(2, 3)).flatten(1, 2).view(2, -1, 4, 3)

    assert torch.allclose(cross_attention(q, k, v), explicit(q, k, v), atol=1e-5)  # no 1/sqrt(d) by default
    assert torch.allclose(cross_attention(q, k, v, scale=0.3), explicit(q, k, v, 0.3), atol=1e-5)
    assert torch.allclose(cross_attention(q, k, v, heads=2), explicit(q, k, v, heads=2), atol=1e-5)
    low = cross_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert low.dtype == torch.bfloat16 and torch.allclose(low.float(), explicit(q, k, v), atol=5e-2)


def test_xing_block_follows_the_official_wiring():
    """F^I = X^I + gamma * SA(X^I <- X^S), S^ = X^S + gamma * AS(X^S <- X^I), with one set of projections."""
    torch.manual_seed(0)
    cfg = XingGANConfig(norm="instance", dropout=0.0)
    block = XingBlock(32, 32, cfg).eval()
    assert block.as_ is None and block.shared  # AS reuses SA's W_q, W_k, W_v and gamma
    fi, fs = torch.randn(B, 32, 8, 4), torch.randn(B, 32, 8, 4)
    xi, xs = block.conv_i(fi), block.conv_s(fs)
    with torch.no_grad():
        out_i, s_hat = block(fi, fs)
        assert torch.equal(out_i, xi) and torch.equal(s_hat, xs)  # gamma starts at 0
        block.sa.gamma.fill_(0.7)
        out_i, s_hat = block(fi, fs)
    a = block.sa

    def att(t, g):
        qt, kg, vt = a.q(t).flatten(2), a.k(g).flatten(2), a.v(t).flatten(2)
        return (vt @ torch.softmax(qt.transpose(1, 2) @ kg, -1).transpose(1, 2)).view_as(t)

    with torch.no_grad():
        assert torch.allclose(out_i, xi + 0.7 * att(xi, xs), atol=1e-5)
        assert torch.allclose(s_hat, xs + 0.7 * att(xs, xi), atol=1e-5)  # K from the pre-update X^I
    separate = XingBlock(32, 32, XingGANConfig(share_qkv=False))
    assert separate.as_ is not None and separate.as_ is not separate.sa


def test_co_attention_output_is_the_convex_combination():
    """With the 21st co-attention map forced to 1 the output is the input image; maps sum to 1 per pixel."""
    torch.manual_seed(0)
    gen = XingGANGenerator(XingGANConfig(ngf=8, n_blocks=2, norm="instance")).eval()
    img, pose = torch.rand(B, 3, H, W) * 2 - 1, torch.rand(B, 18, H, W)
    last = gen.fusion.attention[-1]
    assert last.out_channels == 21
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0] * 20 + [60.0]))
        assert torch.allclose(gen.synthesize(img, pose, pose), img, atol=1e-6)
        last.bias.zero_()  # uniform maps: the mean of the 20 intermediate images and the input
        fi, fs = gen.enc_a(img), gen.enc_s(torch.cat([pose, pose], 1))
        for blk in gen.blocks:
            fi, s_hat = blk(fi, fs)
            fs = torch.cat([fi, s_hat], 1)
        images = torch.cat([gen.fusion.app(fi), gen.fusion.shape(fs)], 1).view(B, 20, 3, H, W)
        expect = (images.sum(1) + img) / 21
        assert torch.allclose(gen.synthesize(img, pose, pose), expect, atol=1e-5)


def test_enhanced_attention_formula():
    torch.manual_seed(0)
    ea = EnhancedAttention(9, 32)
    e = torch.randn(2, 9, 9)
    cols = e.transpose(1, 2)
    x = F.layer_norm(ea.reduce(cols), (9,), ea.norm_x.weight, ea.norm_x.bias)
    r_t = torch.softmax(ea.q(x) @ ea.k(x).transpose(1, 2) / 9**0.5, -1) @ F.layer_norm(cols, (9,), ea.norm_v.weight,
                                                                                       ea.norm_v.bias)  # fmt: skip
    assert ea.reduce.out_features == 9  # D = min(N_s, 32)
    assert torch.allclose(ea(e), e + r_t.transpose(1, 2), atol=1e-5)


def test_xingganpp_levels_and_ea_placement():
    gen = XingGANGenerator(XingGANPPConfig(ngf=16, norm="instance"))
    msa = gen.blocks[0].sa
    assert [lvl.bins for lvl in msa.levels] == [(1, 1), (2, 2), (3, 3), (6, 6)]
    assert [lvl.ea is not None for lvl in msa.levels] == [False, False, True, True]  # EA skips N_s <= 4
    assert gen.blocks[0].as_ is not None  # EMSA and EMAS have their own weights
    assert gen.fusion.app[0].in_channels == 5 * 64  # DCCAF reads all five appearance codes
    tall = XingGANGenerator(XingGANPPConfig(ngf=16, square_bins=False, identity_level=True))
    assert [lvl.bins for lvl in tall.blocks[0].sa.levels] == [(2, 1), (4, 2), (6, 3), (12, 6), None]


ABLATIONS = {
    "xinggan": ("xinggan", "xinggan-b1", "xinggan-b2", "xinggan-b3", "xinggan-b4"),
    "xingganpp": ("xingganpp", "xinggan-b5", "xinggan-b6", "xingganpp-multihead", "xingganpp-no-ea"),
    "twostream": ("twostream",),
}


@pytest.mark.parametrize("method, config", [(m, c) for m, cs in ABLATIONS.items() for c in cs])
def test_every_ablation_config_builds_and_generates_an_image(method, config):
    assert (CONFIG_DIR / "methods" / f"{config}.yaml").is_file()
    cfg = load_method_config(method, f"methods/{config}", ["model.ngf=8", "model.n_blocks=2"])
    torch.manual_seed(0)
    gen = registry.get(method).generator(cfg.model).eval()
    batch = {"src_img": torch.rand(B, 1, 3, H, W) * 2 - 1, "src_kp": torch.randint(0, 60, (B, 1, 18, 2)),
             "tgt_kp": torch.randint(0, 60, (B, 18, 2))}  # fmt: skip
    with torch.no_grad():
        out = gen(batch)["image"]
    assert out.shape == (B, 3, H, W) and torch.isfinite(out).all()


def test_ablation_configs_change_what_they_say():
    b1 = load_method_config("xinggan", "methods/xinggan-b1").model
    b5 = load_method_config("xingganpp", "methods/xinggan-b5").model
    assert (b1.branches, b1.fusion, b1.n_blocks) == (["sa"], "none", 9)
    assert (b5.attention, b5.fusion, b5.n_blocks, b5.ea) == ("xing", "dccaf", 5, False)
    pp = load_method_config("xingganpp")
    assert (pp.model.attention, pp.model.fusion, pp.model.n_blocks, pp.model.ea) == ("multiscale", "dccaf", 5, True)
    assert (pp.loss.lambda_gan, pp.loss.lambda_l1, pp.loss.lambda_perceptual) == (5.0, 50.0, 50.0)
    two = load_method_config("twostream")
    assert (two.model.norm, two.loss.lambda_gan, two.loss.lambda_l1, two.loss.lambda_perceptual) == ("instance", 20.0,
                                                                                                      17.0, 17.0)  # fmt: skip
    assert two.optim["generator"].lr == two.optim["discriminators"].lr == 1e-4
    assert (two.train.iterations, two.train.decay_start) == (90_000, 60_000)


def test_at_block_wiring():
    """A' = sigma * W_o(V D^T) + T; F'_t = F_t + conv1x1([A' || S]); F'_s = [S || F'_t]."""
    torch.manual_seed(0)
    blk = ATBlock(32, 32, TwoStreamConfig(norm="instance", dropout=0.0)).eval()
    ft, fs = torch.randn(B, 32, 8, 4), torch.randn(B, 32, 8, 4)
    with torch.no_grad():
        blk.sigma.fill_(0.5)
        new_t, new_s = blk(ft, fs)
        t, s = blk.conv_t(ft), blk.conv_s(fs)
        q, k, v = blk.q(t).flatten(2), blk.k(s).flatten(2), blk.v(s).flatten(2)
        d = torch.softmax(q.transpose(1, 2) @ k, -1)  # target positions over source positions
        a = 0.5 * blk.w_o((v @ d.transpose(1, 2)).view(B, -1, 8, 4)) + t
        assert torch.allclose(new_t, ft + blk.fuse_t(torch.cat([a, s], 1)), atol=1e-5)
        assert torch.equal(new_s, torch.cat([s, new_t], 1))
    add = ATBlock(32, 32, TwoStreamConfig(target_fusion="add", source_fusion="add", at_module=False))
    assert add.fuse_t is None and not hasattr(add, "q")


@pytest.mark.parametrize("name", ["xinggan", "xingganpp", "twostream"])
def test_trains_and_generates_through_the_trainer(name, tmp_path):
    from reidaug.models.checkpoint import load_checkpoint, load_generator
    from reidaug.train.trainer import train

    root = make_root(tmp_path / "market")
    sets = [*TINY_PATN, "model.ngf=8", "model.n_blocks=2", "train.iterations=2", "train.checkpoint_every=1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = train(load_method_config(name, None, sets), root, tmp_path / "run", device="cpu", show_progress=False)
    assert len(r.history) == 2 and all(torch.isfinite(torch.tensor(h["g_total"])) for h in r.history)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["method"] == name and ckpt["iteration"] == 2
    gen, _ = load_generator(tmp_path / "run")
    assert not any(isinstance(m, ResnetDiscriminator) for m in gen.modules())  # generation builds no D


def test_readme_help_and_makefile_list_every_registered_method(run_cli):
    import re
    import subprocess
    import sys

    from reidaug.config import CONFIG_DIR

    names = sorted(registry.BUILTIN)  # (test files may register methods of their own)
    assert {"patn", "apatn", "xinggan", "xingganpp", "twostream"} <= set(names)
    readme = (CONFIG_DIR.parent / "README.md").read_text()
    assert set(re.findall(r"^- `([a-z0-9]+)`: ", readme, re.M)) >= set(names)
    code, out, _ = run_cli("train", "--help")
    assert code == 0 and all(n in out for n in names)
    p = subprocess.run([sys.executable, "-m", "reidaug.models.registry"], capture_output=True, text=True, timeout=60)
    assert p.stdout.split() == names  # what the Makefile's reproduction target trains
