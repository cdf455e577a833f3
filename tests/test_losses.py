"""Shared losses: adversarial (BCE on logits, LSGAN), the VGG-19 feature extractor and its weights, perceptual
L1 at any layers and Gram-matrix style terms, and the fake-image pool (module state for checkpoints)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from reidaug.errors import ReidaugError
from reidaug.models.losses import GANLoss, ImagePool, PerceptualLoss
from reidaug.models.vgg import LAYERS, VGG19Features, gram, vgg19_hub_file


def random_vgg(**kw) -> PerceptualLoss:
    with pytest.warns(UserWarning, match="VGG-19 features are randomly initialised"):
        return PerceptualLoss("none", **kw)


def vgg_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A stand-in for torchvision's full VGG-19 state dict (only the keys the loss reads, plus one more)."""
    g = torch.Generator().manual_seed(seed)
    return {"features.0.weight": torch.randn(64, 3, 3, 3, generator=g), "features.0.bias": torch.randn(64, generator=g),
            "features.2.weight": torch.randn(64, 64, 3, 3, generator=g), "features.2.bias": torch.randn(64, generator=g),
            "classifier.6.bias": torch.zeros(1000)}  # fmt: skip



# -- adversarial -----------------------------------------------------------------------------------------------
def test_bce_with_logits_equals_bce_on_sigmoid():
    logits = torch.tensor([[-3.0, -0.5], [0.0, 2.5]])
    probs = torch.sigmoid(logits)
    loss = GANLoss("bce")
    assert loss(logits, True).item() == pytest.approx(-torch.log(probs).mean().item(), rel=1e-6)
    assert loss(logits, False).item() == pytest.approx(-torch.log(1 - probs).mean().item(), rel=1e-6)
    assert loss(logits, True).item() == pytest.approx(
        F.binary_cross_entropy(probs, torch.ones(2, 2)).item(), rel=1e-6
    )
    big = torch.tensor([60.0, -60.0])  # where sigmoid + BCE saturates, logits stay exact
    assert loss(big, False).item() == pytest.approx(30.0, rel=1e-6)


def test_lsgan_formula_and_autocast_safety():
    x = torch.tensor([0.2, -1.0, 1.5])
    loss = GANLoss("lsgan")
    assert loss(x, True).item() == pytest.approx(((x - 1) ** 2).mean().item())
    assert loss(x, False).item() == pytest.approx((x**2).mean().item())
    out = GANLoss("bce")(x.to(torch.bfloat16), True)
    assert out.dtype == torch.float32
    with pytest.raises(ReidaugError, match="loss.gan_mode"):
        GANLoss("wgan")


# -- perceptual ------------------------------------------------------------------------------------------------
def test_perceptual_equals_hand_computed_relu1_2_l1():
    torch.manual_seed(0)
    loss = random_vgg()
    fake, real = torch.rand(2, 3, 8, 6) * 2 - 1, torch.rand(2, 3, 8, 6) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    f = loss.vgg.features
    w0, b0, w2, b2 = f[0].weight, f[0].bias, f[2].weight, f[2].bias

    def relu1_2(x):
        x = ((x + 1) / 2 - mean) / std
        return F.relu(F.conv2d(F.relu(F.conv2d(x, w0, b0, padding=1)), w2, b2, padding=1))

    expect = (relu1_2(fake) - relu1_2(real)).abs().sum() / (2 * 64 * 8 * 6)
    assert loss(fake, real).item() == pytest.approx(expect.item(), rel=1e-5)
    assert random_vgg(distance="l2")(fake, fake).item() == 0.0


def test_perceptual_vgg_is_frozen_and_stays_in_eval():
    loss = random_vgg()
    parent = torch.nn.Sequential(loss).train()
    assert not loss.vgg.training and not any(m.training for m in loss.vgg.modules())
    assert list(loss.vgg.parameters()) == []  # frozen weights are buffers: no optimizer can reach them
    assert loss.state_dict() == {} and parent.state_dict() == {}  # and no checkpoint carries them
    fake = (torch.rand(1, 3, 8, 6) * 2 - 1).requires_grad_()
    loss(fake, torch.zeros(1, 3, 8, 6)).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(b.grad is None for b in loss.vgg.buffers())
    assert parent.training  # only the VGG part is pinned to eval
    assert len(loss.vgg.features) == 4  # conv1_1, ReLU, conv1_2, ReLU: nothing else of VGG-19 is built


def test_vgg_weights_from_a_file(tmp_path):
    state = vgg_state()
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    loss = PerceptualLoss(str(path))
    assert torch.equal(loss.vgg.features[0].weight, state["features.0.weight"])
    assert torch.equal(loss.vgg.features[2].bias, state["features.2.bias"])
    torch.save(
        {"state_dict": {k.removeprefix("features."): v for k, v in state.items()}}, path
    )  # bare `features`
    assert torch.equal(PerceptualLoss(str(path)).vgg.features[2].weight, state["features.2.weight"])


def test_vgg_weights_errors(tmp_path):
    with pytest.raises(ReidaugError, match="VGG-19 weights file not found"):
        PerceptualLoss(str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(ReidaugError, match="cannot read VGG-19 weights"):
        PerceptualLoss(str(bad))
    partial = tmp_path / "partial.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, partial)
    with pytest.raises(ReidaugError, match=r"lack features\.0\.bias"):
        PerceptualLoss(str(partial))
    wrong = tmp_path / "wrong.pth"
    torch.save({**vgg_state(), "features.2.weight": torch.zeros(64, 64, 1, 1)}, wrong)
    with pytest.raises(ReidaugError, match="do not fit"):
        PerceptualLoss(str(wrong))


def test_vgg_auto_uses_the_hub_cache_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with pytest.raises(ReidaugError, match="not in the torch hub cache"):
        PerceptualLoss("auto")
    cached = vgg19_hub_file()
    assert cached.parent == tmp_path / "checkpoints" and cached.name == "vgg19-dcbb9e9d.pth"
    cached.parent.mkdir()
    state = vgg_state(1)
    torch.save(state, cached)
    assert torch.equal(PerceptualLoss("auto").vgg.features[0].weight, state["features.0.weight"])


def test_random_vgg_warns():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PerceptualLoss("none")
    assert any("vgg_weights=none" in str(w.message) for w in caught)


def test_vgg_layer_names_follow_torchvision_indices():
    assert len(LAYERS) == 37  # torchvision's vgg19().features
    assert [LAYERS[i] for i in (0, 3, 4, 11, 20, 29, 36)] == ["conv1_1", "relu1_2", "pool1", "relu3_1", "relu4_1",
                                                              "relu5_1", "pool5"]  # fmt: skip
    with pytest.warns(UserWarning):
        vgg = VGG19Features(("relu2_1", "relu3_1"), "none")
    assert len(vgg.features) == 12  # built up to relu3_1, nothing deeper
    out = vgg(torch.zeros(1, 3, 16, 8))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"relu2_1": (1, 128, 8, 4), "relu3_1": (1, 256, 4, 2)}
    with pytest.raises(ReidaugError, match="unknown VGG-19 layers"):
        VGG19Features(("relu9_9",), "none")


def test_multi_layer_perceptual_and_gram_style_equal_their_formulas():
    torch.manual_seed(0)
    with pytest.warns(UserWarning):
        loss = PerceptualLoss("none", layers=("relu1_1", "relu2_1"), layer_weights=(1.0, 0.5), style_layers=("relu1_2",))
    fake, real = torch.rand(2, 3, 8, 6) * 2 - 1, torch.rand(2, 3, 8, 6) * 2 - 1
    f, r = loss.vgg(fake), loss.vgg(real)
    content, style = loss(fake, real, with_style=True)
    expect = (f["relu1_1"] - r["relu1_1"]).abs().mean() + 0.5 * (f["relu2_1"] - r["relu2_1"]).abs().mean()
    assert content.item() == pytest.approx(expect.item(), rel=1e-5)
    x, y = f["relu1_2"].flatten(2), r["relu1_2"].flatten(2)  # (B, 64, 48)
    g_x, g_y = x @ x.transpose(1, 2) / (64 * 8 * 6), y @ y.transpose(1, 2) / (64 * 8 * 6)
    assert torch.allclose(gram(f["relu1_2"]), g_x, atol=1e-6)
    assert style.item() == pytest.approx((g_x - g_y).abs().mean().item(), rel=1e-5)


# -- image pool ------------------------------------------------------------------------------------------------
def test_image_pool_fills_then_mixes_history_reproducibly():
    def run(seed):
        pool = ImagePool(4, generator=torch.Generator().manual_seed(seed))
        first = torch.arange(4.0).view(4, 1)
        assert torch.equal(pool.query(first), first) and len(pool) == 4  # filling: stored and returned as is
        outs = [pool.query(torch.full((1, 1), 100.0 + i)) for i in range(200)]
        assert len(pool) == 4
        return torch.cat(outs).flatten()

    out = run(0)
    assert torch.equal(out, run(0))  # seeded
    fresh = out == 100 + torch.arange(200.0)
    assert 70 < int(fresh.sum()) < 130  # about half the time the incoming sample comes straight back
    old = out[~fresh]
    assert torch.all(old < 100 + torch.arange(200.0)[~fresh])  # otherwise an earlier sample from the history
    assert not torch.equal(out, run(1))


def test_image_pool_zero_is_identity_and_stores_copies():
    x = torch.randn(3, 2)
    assert ImagePool(0).query(x) is x
    pool = ImagePool(2)
    y = torch.zeros(2, 1)
    pool.query(y)
    y += 5
    assert all(torch.equal(t, torch.zeros(1)) for t in pool.images)
    with pytest.raises(ReidaugError, match="pool_size"):
        ImagePool(-1)


def test_image_pool_contents_are_module_state():
    """The pool travels in state_dict() (weights_only-loadable), so a resumed run draws from the same history."""
    import io

    holder = torch.nn.ModuleDict({"A": ImagePool(3)})
    holder["A"].query(torch.arange(6.0).view(2, 3))
    buf = io.BytesIO()
    torch.save(holder.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert set(state) == {"A._extra_state"}
    fresh = torch.nn.ModuleDict({"A": ImagePool(3)})
    fresh.load_state_dict(state)
    assert [t.tolist() for t in fresh["A"].images] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
