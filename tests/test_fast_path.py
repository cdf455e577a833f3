"""The generation fast path (reidaug.models.fuse) computes what the plain eval-mode generator computes: folded
BatchNorm equals BatchNorm, NNPACK convolutions equal direct ones, every built-in method's fast generator
agrees with its plain one in fp32 (tight) and under bf16 autocast (bf16 tolerance), and `generate` writes the
same images with the fast path on and off."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from reidaug.models import registry
from reidaug.models.fuse import NNPACKConv2d, fold_batchnorm, for_inference, nnpack_available, use_nnpack


def randomize_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics and affine parameters far from the identity, so that folding them matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.2)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
    return module


def demo_generator(name: str, ngf: int | None = 8) -> nn.Module:
    """The method's generator at its demo size (configs/methods/NAME-demo.yaml) with `ngf` channels (CI size),
    and randomised norms."""
    from reidaug.train.config import load_method_config

    cfg = load_method_config(name, f"methods/{name}-demo")
    if ngf is not None and hasattr(cfg.model, "ngf"):
        cfg.model.ngf = ngf
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return randomize_norms(registry.get(name).build(cfg.model, cfg.loss).inference_module()).eval()


def batch(b: int, m: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    kp = torch.stack([torch.randint(0, 128, (b, m + 1, 18), generator=g),
                      torch.randint(0, 64, (b, m + 1, 18), generator=g)], -1)  # fmt: skip
    kp[:, :, 3] = -1
    img = torch.nn.functional.interpolate(torch.rand(b * m, 3, 8, 4, generator=g) * 2 - 1, size=(128, 64),
                                          mode="bilinear").view(b, m, 3, 128, 64)  # fmt: skip
    return {"src_img": img, "src_kp": kp[:, :m], "tgt_kp": kp[:, m]}


def test_folded_batchnorm_equals_batchnorm_in_eval():
    from reidaug.models.blocks import ConvTDecoder, Encoder

    net = randomize_norms(nn.Sequential(Encoder(3, 8, 2, "batch"), ConvTDecoder(32, 3, 2, "batch"))).eval()
    x = torch.rand(3, 3, 32, 16) * 2 - 1
    with torch.no_grad():
        ref = net(x)
        n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        assert fold_batchnorm(net) == n_bn == 5  # 3 encoder convs, 2 transposed convs
        assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)


def test_batchnorm_in_training_mode_or_instance_norm_is_not_folded():
    from reidaug.models.blocks import Encoder

    assert fold_batchnorm(Encoder(3, 8, 2, "batch").train()) == 0  # batch statistics: not an affine map
    assert fold_batchnorm(Encoder(3, 8, 2, "instance").eval()) == 0


@pytest.mark.skipif(not nnpack_available(), reason="torch built without NNPACK")
def test_nnpack_convolutions_equal_direct_ones_and_fall_back():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(16, 24, 3), nn.Conv2d(24, 24, 3, padding=1, bias=False),
                        nn.Conv2d(24, 8, 3, stride=2), nn.Conv2d(8, 8, 7, padding=3), nn.Conv2d(8, 8, 1)).eval()  # fmt: skip
    x = torch.randn(4, 16, 20, 12)
    with torch.no_grad():
        ref = net(x)
        assert use_nnpack(net, min_batch=2) == 3  # Winograd 3x3, 3x3, FFT 7x7; stride 2 and 1x1 stay direct
        assert [type(m) for m in net] == [NNPACKConv2d, NNPACKConv2d, nn.Conv2d, NNPACKConv2d, nn.Conv2d]
        torch.testing.assert_close(net(x), ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(net(x[:1]), ref[:1], rtol=1e-5, atol=1e-5)  # below min_batch: direct
    assert not NNPACKConv2d.eligible(nn.Conv2d(3, 64, 7))  # an RGB stem: faster direct
    assert not NNPACKConv2d.eligible(nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect"))
    y = net(x.requires_grad_())  # autograd: direct convolution, gradients flow
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize("name", sorted(registry.BUILTIN))  # every built-in method
def test_fast_generator_equals_plain_generator(name):
    """fp32: the same images to 1e-4 (Winograd and FFT rounding through every block); bf16 autocast (the CUDA path, run
    here on the CPU): within bf16 tolerance of the fp32 images."""
    gen = demo_generator(name)
    m = gen.num_sources
    x = batch(4, m)
    fast = for_inference(gen, "cpu", nnpack_min_batch=2)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in fast.modules() if _in_sequential(fast, mod))
    with torch.no_grad():
        ref = gen(x)["image"]
    with torch.inference_mode():
        out = fast(x)["image"]
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 convolutions are slow on this CPU: 1 image
            low = fast({k: v[:1] for k, v in x.items()})["image"].float()
    assert out.shape == ref.shape == (4, 3, 128, 64)
    assert ref.std() > 0.01  # a non-trivial image, so the comparison means something
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
    err = (low - ref[:1]).abs()
    assert err.mean() < 0.02 and err.max() < 0.25, (float(err.mean()), float(err.max()))
    assert any(p.requires_grad for p in gen.parameters())  # the caller's generator is untouched


def _in_sequential(root: nn.Module, mod: nn.Module) -> bool:
    return any(isinstance(s, nn.Sequential) and any(c is mod for c in s.children()) for s in root.modules())


def test_generate_writes_the_same_images_with_and_without_the_fast_path(tmp_path):
    from tiny_market import make_root

    from reidaug.data.images import read_image
    from reidaug.data.keypoints import read_annotations
    from reidaug.data.pairs import make_pairs
    from reidaug.generate import GenerateConfig, generate_images, jobs_from_pairs

    root = make_root(tmp_path / "market", ids=2, per_id=3)
    ann = read_annotations(root / "annotations" / "train.csv")
    jobs = jobs_from_pairs(make_pairs(ann))  # 12 jobs
    gen = demo_generator("patn")
    outs = {}
    for fast in (True, False):
        cfg = GenerateConfig(batch_size=6, num_workers=0, writer_threads=2, fast=fast, nnpack_min_batch=2)
        generate_images(gen, jobs, root, ann, tmp_path / str(fast), cfg, device="cpu", show_progress=False)
        outs[fast] = np.stack([read_image(tmp_path / str(fast) / n).astype(int) for n in jobs["out_name"]])
    diff = np.abs(outs[True] - outs[False])
    assert outs[True].std() > 5 and diff.max() <= 2 and diff.mean() < 0.01, (diff.max(), diff.mean())
