"""2-D affine geometry shared by the methods: weighted least-squares fits of affine maps between point sets, and
backward warping of feature maps with them (`grid_sample`).

Points are (x, y) = (column, row) in pixel-index coordinates; an affine map is a (..., 2, 3) matrix theta with
theta @ [x, y, 1] = (x', y'). Everything is batched over leading dimensions and runs on the points' device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SINGULAR = 1e-6  # relative determinant below which a point set does not pin down an affine map


def fit_affine(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor | None = None):
    """The affine map theta (..., 2, 3) minimising sum_p w_p |theta [src_p, 1] - dst_p|^2, and whether it is
    determined (..., bool): at least three weighted points, not collinear.

    src, dst (..., P, 2); weight (..., P) (0 drops a point; default all ones). Closed form on weighted-centred
    points: L = C_ds C_ss^-1, t = mean_dst - L mean_src; an undetermined fit returns the identity.
    """
    src, dst = src.double(), dst.double()  # small systems: float64 keeps near-degenerate fits exact
    w = torch.ones(src.shape[:-1], dtype=src.dtype, device=src.device) if weight is None else weight.to(src)
    total = w.sum(-1, keepdim=True)  # (..., 1)
    safe = total.clamp_min(1e-12)
    mean_s = (w[..., None] * src).sum(-2) / safe  # (..., 2)
    mean_d = (w[..., None] * dst).sum(-2) / safe
    cs, cd = src - mean_s[..., None, :], dst - mean_d[..., None, :]
    c_ss = torch.einsum("...p,...pi,...pj->...ij", w, cs, cs)  # (..., 2, 2)
    c_ds = torch.einsum("...p,...pi,...pj->...ij", w, cd, cs)
    a, b, c, d = c_ss[..., 0, 0], c_ss[..., 0, 1], c_ss[..., 1, 0], c_ss[..., 1, 1]
    det = a * d - b * c
    scale = (a + d) ** 2
    ok = ((w > 0).sum(-1) >= 3) & (det > SINGULAR * scale) & (scale > 0)
    det_safe = torch.where(ok, det, torch.ones_like(det))
    inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det_safe[..., None, None]
    lin = c_ds @ inv
    eye = torch.eye(2, dtype=src.dtype, device=src.device).expand_as(lin)
    lin = torch.where(ok[..., None, None], lin, eye)
    t = torch.where(ok[..., None], mean_d - (lin @ mean_s[..., None])[..., 0], torch.zeros_like(mean_d))
    return torch.cat([lin, t[..., None]], -1).float(), ok


def apply_affine(theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """theta (..., 2, 3) applied to points (..., P, 2) -> (..., P, 2)."""
    return points @ theta[..., :2].transpose(-1, -2) + theta[..., None, :, 2]


def warp_affine(features: torch.Tensor, theta: torch.Tensor, stride: float = 1.0) -> torch.Tensor:
    """Backward-warp `features` (N, C, h, w) with K maps theta (N, K, 2, 3) given in image pixels: output k at
    feature position q samples the input at theta_k(q) (the translation divided by `stride`, the image-to-feature
    downsampling factor). Bilinear, align_corners (pixel-index convention), zeros outside -> (N, C, K, h, w).

    The K grids are stacked along the height of one grid, so the input is read once, not copied K times."""
    n, _, h, w = features.shape
    k = theta.shape[1]
    lin, t = theta[..., :2].float(), theta[..., 2].float() / stride
    ys, xs = torch.meshgrid(torch.arange(h, device=features.device, dtype=torch.float32),
                            torch.arange(w, device=features.device, dtype=torch.float32), indexing="ij")  # fmt: skip
    q = torch.stack([xs, ys], -1).view(1, 1, h * w, 2)
    src = q @ lin.transpose(-1, -2) + t[..., None, :]  # (N, K, hw, 2) in feature pixels
    grid = torch.stack([src[..., 0] * (2 / max(w - 1, 1)) - 1, src[..., 1] * (2 / max(h - 1, 1)) - 1], -1)
    grid = grid.view(n, k * h, w, 2).to(features.dtype)
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.view(n, -1, k, h, w)
