"""SSIM as the PATN-family metric scripts compute it (architecture notes 11.1).

skimage's structural_similarity with Gaussian weighting (sigma 1.5, an 11-tap window: truncate 3.5), population
(co)variances, K1 = 0.01, K2 = 0.03, colour as the mean of the per-channel SSIM maps, the map's border of
(win - 1) / 2 = 5 pixels left out of the mean, float64 arithmetic; and the scripts' quirk
data_range = generated.max() - generated.min() ("generated", the default) instead of 255 ("255").
With the quirk a flat generated image scores NaN (0/0), as in the scripts.
skimage before 0.16 filtered with scipy's default truncate 4.0 (13 taps, same 5-pixel crop): `truncate=4.0`.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from reidaug.errors import ReidaugError

K1, K2, SIGMA, TRUNCATE = 0.01, 0.03, 1.5, 3.5


def _filter(x: np.ndarray, sigma: float, truncate: float) -> np.ndarray:
    return gaussian_filter(x, sigma=sigma, mode="reflect", truncate=truncate)


def ssim(generated: np.ndarray, target: np.ndarray, data_range: float | str = "generated", *,
         sigma: float = SIGMA, truncate: float = TRUNCATE, k1: float = K1, k2: float = K2) -> float:  # fmt: skip
    """Mean SSIM of two (H, W, 3) or (H, W) images (uint8 or float, same scale).

    `data_range`: "generated" (max - min of the generated image, the reference scripts), "255", or a number.
    """
    x = np.asarray(generated, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.shape != y.shape:
        raise ReidaugError(f"SSIM needs images of one shape, got {x.shape} and {y.shape}")
    if x.ndim not in (2, 3):
        raise ReidaugError(f"SSIM takes (H, W) or (H, W, C) images, got shape {x.shape}")
    if data_range == "generated":
        rng = float(x.max() - x.min())
    elif data_range == "255":
        rng = 255.0
    else:
        rng = float(data_range)
    r = int(truncate * sigma + 0.5)
    win = 2 * r + 1
    if min(x.shape[:2]) < win:
        raise ReidaugError(f"images of {x.shape[0]}x{x.shape[1]} are smaller than the {win}-pixel SSIM window")
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    c1, c2 = (k1 * rng) ** 2, (k2 * rng) ** 2
    pad = (win - 1) // 2
    scores = []
    for c in range(x.shape[-1]):
        a, b = x[..., c], y[..., c]
        ua, ub = _filter(a, sigma, truncate), _filter(b, sigma, truncate)
        va = _filter(a * a, sigma, truncate) - ua * ua  # population (co)variances (cov_norm 1)
        vb = _filter(b * b, sigma, truncate) - ub * ub
        cov = _filter(a * b, sigma, truncate) - ua * ub
        s = ((2 * ua * ub + c1) * (2 * cov + c2)) / ((ua**2 + ub**2 + c1) * (va + vb + c2))
        scores.append(s[pad:-pad, pad:-pad].mean(dtype=np.float64))
    return float(np.mean(scores))


def mean_ssim(pairs, data_range: float | str = "generated", **kw) -> float:
    """Mean SSIM over an iterable of (generated, target) image pairs."""
    values = [ssim(g, t, data_range, **kw) for g, t in pairs]
    if not values:
        raise ReidaugError("no image pairs to score")
    return float(np.mean(values))
