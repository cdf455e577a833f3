"""SSIM of the reference metric scripts (notes 11.1): hand-computed values and skimage's structural_similarity."""

from __future__ import annotations

import numpy as np
import pytest

from reidaug.errors import ReidaugError
from reidaug.metrics.ssim import mean_ssim, ssim


def test_constant_images_by_hand():
    # Constant images: variances and covariance vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = np.full((20, 12, 3), 100, np.uint8), np.full((20, 12, 3), 120, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b, "255") == pytest.approx((2 * 100 * 120 + c1) / (100**2 + 120**2 + c1), rel=1e-12)
    # An explicit range: C1 = (0.01 * 10)^2.
    assert ssim(a, b, 10.0) == pytest.approx((2 * 100 * 120 + 0.01) / (100**2 + 120**2 + 0.01), rel=1e-12)
    # The scripts' quirk on a flat generated image: data range 0, C1 = C2 = 0, the structure term is 0/0.
    with np.errstate(invalid="ignore"):
        assert np.isnan(ssim(a, b))
    x = np.random.default_rng(0).integers(0, 256, (128, 64, 3)).astype(np.uint8)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)


def test_data_range_quirk_changes_the_score():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 256, (128, 64, 3)).astype(np.uint8)
    gen = (target // 4 + 90).astype(np.uint8)  # narrow range: 90..153
    assert ssim(gen, target) != pytest.approx(ssim(gen, target, "255"))
    assert ssim(gen, target, float(gen.max() - gen.min())) == ssim(gen, target)


@pytest.mark.parametrize("data_range", ["generated", "255"])
def test_matches_skimage(data_range):
    sk = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(2)
    for _ in range(3):
        target = rng.integers(0, 256, (128, 64, 3)).astype(np.uint8)
        gen = np.clip(target * 0.6 + rng.normal(60, 25, target.shape), 0, 255).astype(np.uint8)
        r = float(gen.max()) - float(gen.min()) if data_range == "generated" else 255.0
        want = sk.structural_similarity(gen.astype(np.float64), target.astype(np.float64), gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False, channel_axis=-1, data_range=r)  # fmt: skip
        assert ssim(gen, target, data_range) == pytest.approx(want, rel=1e-10)
    gray = target[..., 0], gen[..., 0]
    want = sk.structural_similarity(gray[1], gray[0], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=255)  # fmt: skip
    assert ssim(gray[1], gray[0], "255") == pytest.approx(want, rel=1e-10)


def test_errors_and_mean():
    a = np.zeros((128, 64, 3), np.uint8)
    with pytest.raises(ReidaugError, match="one shape"):
        ssim(a, a[:, :32])
    with pytest.raises(ReidaugError, match="smaller than"):
        ssim(a[:8, :8], a[:8, :8])
    with pytest.raises(ReidaugError, match="no image pairs"):
        mean_ssim([])
    b = a + 50
    assert mean_ssim([(a, a), (b, b)], "255") == pytest.approx(1.0)
