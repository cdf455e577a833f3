"""Deformable skip connections (Deformable GAN; reused by the multi-source model): ten body-part affine transforms
estimated from the keypoints of a (source, target) pair, the matching part masks in target coordinates, and the
warp-mask-max of a feature map with them (architecture notes 1.8).

Computed on the device from keypoints [y, x] (-1 = missing), batched over pairs. Transforms map target-image
(x, y) to source-image (x, y) (least squares, reidaug.models.affine.fit_affine), in this order: torso, head,
right thigh, left thigh, right shin, left shin, right upper arm, left upper arm, right forearm, left forearm.
A part whose transform cannot be estimated gets an empty mask, which is what the reference's "far-away"
transform (sampling only zeros) amounts to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reidaug.data.keypoints import J
from reidaug.models.affine import fit_affine, warp_affine

PARTS = ("torso", "head", "r_thigh", "l_thigh", "r_shin", "l_shin", "r_upper_arm", "l_upper_arm", "r_forearm",
         "l_forearm")  # fmt: skip
TORSO_JOINTS = (J["r_hip"], J["l_hip"], J["l_shoulder"], J["r_shoulder"])
HEAD_JOINTS = (J["nose"], J["r_eye"], J["l_eye"], J["r_ear"], J["l_ear"])
SHOULDERS = (J["r_shoulder"], J["l_shoulder"])
# (start joint, end joint, mirrored limb's index in LIMBS, extension beyond the end for the transform, for the mask)
LIMBS = (
    (J["r_hip"], J["r_knee"], 1, 0.1, 0.1), (J["l_hip"], J["l_knee"], 0, 0.1, 0.1),
    (J["r_knee"], J["r_ankle"], 3, 0.3, 0.5), (J["l_knee"], J["l_ankle"], 2, 0.3, 0.5),
    (J["r_shoulder"], J["r_elbow"], 5, 0.1, 0.1), (J["l_shoulder"], J["l_elbow"], 4, 0.1, 0.1),
    (J["r_elbow"], J["r_wrist"], 7, 0.3, 0.5), (J["l_elbow"], J["l_wrist"], 6, 0.3, 0.5),
)  # fmt: skip
BACK = 0.1  # every limb box starts 10 % of the segment before its first joint
HALF_WIDTH = 0.2  # limb boxes extend 0.2 torso scales on each side of the segment
HEAD_HALF_SIDE = 0.4  # the head mask is a square of half side 0.4 torso scales


def _xy(kp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints [y, x] (N, 18, 2) -> points (x, y) float (N, 18, 2) and presence (N, 18)."""
    return kp.flip(-1).float(), (kp >= 0).all(-1)


def torso_scale(xy: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """st: the root mean squared length of the two hip-shoulder segments present (0 without either), (N,)."""
    sq, n = torch.zeros_like(xy[:, 0, 0]), torch.zeros_like(xy[:, 0, 0])
    for hip, sho in ((J["r_hip"], J["r_shoulder"]), (J["l_hip"], J["l_shoulder"])):
        both = (ok[:, hip] & ok[:, sho]).float()
        sq = sq + both * ((xy[:, hip] - xy[:, sho]) ** 2).sum(-1)
        n = n + both
    return (sq / n.clamp_min(1)).sqrt()


def limb_box(a: torch.Tensor, b: torch.Tensor, inc: float, st: torch.Tensor):
    """The box around segment a -> b (N, 2): start a - 0.1 (b - a), end b + inc (b - a), half width 0.2 st.
    Returns (start, axis, unit normal, half width, nondegenerate)."""
    d = b - a
    length = d.norm(dim=-1)
    good = length > 1e-6
    start = a - BACK * d
    axis = (1 + BACK + inc) * d
    normal = torch.stack([-d[..., 1], d[..., 0]], -1) / length.clamp_min(1e-6)[..., None]
    return start, axis, normal, HALF_WIDTH * st, good


def box_corners(start, axis, normal, half) -> torch.Tensor:
    """The four corners (N, 4, 2) of a limb box, in a fixed order (so corners of two boxes correspond)."""
    off = normal * half[..., None]
    return torch.stack([start + off, start - off, start + axis + off, start + axis - off], -2)


def part_transforms(src_kp: torch.Tensor, tgt_kp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(theta (N, 10, 2, 3): target (x, y) -> source (x, y), valid (N, 10)) for keypoints (N, 18, 2) [y, x].

    torso: the torso joints present in both poses; head: the head joints present in both plus both shoulders;
    limbs: the target limb's box onto the source limb's box (the mirrored source limb when the source lacks it).
    """
    s_xy, s_ok = _xy(src_kp)
    t_xy, t_ok = _xy(tgt_kp)
    s_st, t_st = torso_scale(s_xy, s_ok), torso_scale(t_xy, t_ok)
    thetas, valid = [], []
    for joints in (TORSO_JOINTS, HEAD_JOINTS + SHOULDERS):
        idx = list(joints)
        w = (s_ok[:, idx] & t_ok[:, idx]).float()
        theta, ok = fit_affine(t_xy[:, idx], s_xy[:, idx], w)
        if joints is not TORSO_JOINTS:  # the head needs a head joint, not only the shoulders
            ok = ok & (s_ok[:, list(HEAD_JOINTS)] & t_ok[:, list(HEAD_JOINTS)]).any(-1)
        thetas.append(theta)
        valid.append(ok)
    for a, b, mirror, inc, _ in LIMBS:
        ma, mb = LIMBS[mirror][:2]
        t_box = limb_box(t_xy[:, a], t_xy[:, b], inc, t_st)
        own = s_ok[:, a] & s_ok[:, b]
        other = s_ok[:, ma] & s_ok[:, mb]
        sa = torch.where(own[:, None], s_xy[:, a], s_xy[:, ma])
        sb = torch.where(own[:, None], s_xy[:, b], s_xy[:, mb])
        s_box = limb_box(sa, sb, inc, s_st)
        theta, ok = fit_affine(box_corners(*t_box[:4]), box_corners(*s_box[:4]))
        ok = ok & t_ok[:, a] & t_ok[:, b] & (own | other) & t_box[4] & s_box[4] & (t_st > 0) & (s_st > 0)
        thetas.append(theta)
        valid.append(ok)
    return torch.stack(thetas, 1), torch.stack(valid, 1)


def part_masks(tgt_kp: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Binary part masks (N, 10, H, W) in target coordinates: torso = the whole image (as the released code),
    head = square around the mean head joint, limbs = the limb boxes (shins and forearms extended 0.5); a part
    missing in the target pose has an empty mask."""
    t_xy, t_ok = _xy(tgt_kp)
    st = torso_scale(t_xy, t_ok)
    n, (h, w) = tgt_kp.shape[0], size
    ys, xs = torch.meshgrid(torch.arange(h, device=tgt_kp.device, dtype=torch.float32),
                            torch.arange(w, device=tgt_kp.device, dtype=torch.float32), indexing="ij")  # fmt: skip
    p = torch.stack([xs, ys], -1).view(1, h, w, 2)
    masks = [torch.ones(n, h, w, device=tgt_kp.device)]
    head_ok = t_ok[:, list(HEAD_JOINTS)]
    centre = (t_xy[:, list(HEAD_JOINTS)] * head_ok[..., None]).sum(1) / head_ok.sum(1, keepdim=True).clamp_min(1)
    half = (HEAD_HALF_SIDE * st)[:, None, None]
    inside = ((p - centre[:, None, None]).abs() <= half[..., None]).all(-1)
    masks.append((inside & head_ok.any(1)[:, None, None]).float())
    for a, b, _, _, inc in LIMBS:
        start, axis, normal, hw, good = limb_box(t_xy[:, a], t_xy[:, b], inc, st)
        rel = p - start[:, None, None]
        along = (rel * axis[:, None, None]).sum(-1) / (axis * axis).sum(-1).clamp_min(1e-6)[:, None, None]
        across = (rel * normal[:, None, None]).sum(-1).abs()
        inside = (along >= 0) & (along <= 1) & (across <= hw[:, None, None])
        masks.append((inside & (good & t_ok[:, a] & t_ok[:, b])[:, None, None]).float())
    return torch.stack(masks, 1)


def deform(features: torch.Tensor, theta: torch.Tensor, masks: torch.Tensor, image_height: int) -> torch.Tensor:
    """Deformable skip: warp `features` (N, C, h, w) with the 10 part transforms (given in image pixels), multiply
    each by its nearest-resized part mask (N, 10, H, W; zero for invalid parts) and take the element-wise max over
    the parts -> (N, C, h, w)."""
    h, w = features.shape[-2:]
    warped = warp_affine(features, theta, stride=image_height / h)  # (N, C, 10, h, w)
    m = F.interpolate(masks, size=(h, w), mode="nearest").to(warped.dtype)
    return (warped * m[:, None]).amax(2)
