"""Poses of synthetic people: a prior of real Market poses (cluster centres with view labels), sampled with
jitter and placed in the crop the way a detector frames people; the head model that projects face joints.

Internally a body is 14 points, `B14`: index 0 is the head centre, 1..13 are COCO-18 joints 1..13 (neck,
shoulders, elbows, wrists, hips, knees, ankles). Prior poses are normalised: origin at the mid-hip, y down,
unit = torso length T (neck to mid-hip). Yaw (degrees): 0 faces the camera, +90 faces image-right,
+-180 shows the back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from reidaug.data.keypoints import NUM_JOINTS
from reidaug.errors import ReidaugError

from .config import VIEWS, BodyConfig, PoseConfig

HEAD = 0
NECK, R_SHO, R_ELB, R_WRI, L_SHO, L_ELB, L_WRI, R_HIP, R_KNE, R_ANK, L_HIP, L_KNE, L_ANK = range(1, 14)
B14_FLIP = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13))
FACE_COCO = (0, 14, 15, 16, 17)  # nose, r_eye, l_eye, r_ear, l_ear: the order of BodyConfig.face_points

DEFAULT_PRIOR = Path(__file__).resolve().parents[2] / "assets" / "pose_prior.npz"


def view_of(yaw, front_max: float = 45.0):
    """View label index (VIEWS order: front, back, left, right) of yaw angles in degrees."""
    yaw = wrap(np.asarray(yaw, dtype=np.float64))
    a = np.abs(yaw)
    return np.where(a <= front_max, 0, np.where(a >= 180 - front_max, 1, np.where(yaw < 0, 2, 3)))


def wrap(deg):
    """Angles to (-180, 180]."""
    return 180.0 - np.mod(180.0 - np.asarray(deg, dtype=np.float64), 360.0)


def flip_b14(p: np.ndarray) -> np.ndarray:
    """Swap left/right joint labels (positions unchanged)."""
    q = p.copy()
    for a, b in B14_FLIP:
        q[..., [a, b], :] = q[..., [b, a], :]
    return q


@dataclass
class PosePrior:
    poses: np.ndarray  # (K, 14, 2) float32, normalised [y, x]
    spread: np.ndarray  # (K, 14) float32, rms distance of cluster members to the centre (T units)
    yaw: np.ndarray  # (K,) float32 degrees
    view: np.ndarray  # (K,) int8 index into VIEWS
    weight: np.ndarray  # (K,) int32 members per cluster
    torso: np.ndarray  # (2,) mean, sd of the torso length in pixels of a 128-high crop
    midhip: np.ndarray  # (2, 2) [[y mean, y sd], [x mean, x sd]] in pixels of a 128x64 crop

    def by_view(self, v: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the clusters of view `v` and their sampling probabilities."""
        idx = np.flatnonzero(self.view == v)
        w = self.weight[idx].astype(np.float64)
        return idx, w / w.sum()


def save_prior(path: str | Path, prior: PosePrior, meta: dict) -> None:
    import json

    from reidaug.utils.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f, poses=prior.poses.astype(np.float32), spread=prior.spread.astype(np.float32),
            yaw=prior.yaw.astype(np.float32), view=prior.view.astype(np.int8), weight=prior.weight.astype(np.int32),
            torso=prior.torso.astype(np.float32), midhip=prior.midhip.astype(np.float32),
            views=np.array(VIEWS), meta=np.array(json.dumps(meta, sort_keys=True)),
        )  # fmt: skip
        os.chmod(tmp, 0o644)  # a package file, readable by all (mkstemp makes 0600)


@lru_cache(maxsize=4)
def load_prior(path: str = "") -> PosePrior:
    p = Path(path) if path else DEFAULT_PRIOR
    if not p.is_file():
        raise ReidaugError(f"pose prior {p} not found (rebuild it: python -m reidaug.data.synth.build_prior)")
    try:
        z = np.load(p, allow_pickle=False)
        prior = PosePrior(
            z["poses"].astype(np.float64), z["spread"].astype(np.float64), z["yaw"].astype(np.float64),
            z["view"].astype(np.int64), z["weight"].astype(np.int64), z["torso"].astype(np.float64),
            z["midhip"].astype(np.float64),
        )  # fmt: skip
    except (KeyError, ValueError, OSError) as e:
        raise ReidaugError(f"pose prior {p} is not a valid prior file: {e}") from None
    if prior.poses.ndim != 3 or prior.poses.shape[1:] != (14, 2):
        raise ReidaugError(f"pose prior {p}: poses must have shape (K, 14, 2), got {prior.poses.shape}")
    missing = [VIEWS[v] for v in range(len(VIEWS)) if not (prior.view == v).any()]
    if missing:
        raise ReidaugError(f"pose prior {p} has no poses for view(s) {', '.join(missing)}")
    return prior


@dataclass
class Pose:
    """A body placed in the crop: B14 points in output pixels (float [y, x], pixel-centre convention)."""

    points: np.ndarray  # (14, 2)
    yaw: float
    torso: float  # T in pixels


def sample_pose(
    rng: np.random.Generator,
    prior: PosePrior,
    view: int,
    cfg: PoseConfig,
    height: int,
    width: int,
    zoom: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
) -> Pose:
    """A prior pose of `view` with joint noise, lean, stretch and the real framing distribution (plus
    scale jitter, truncation and the extra `zoom`/`shift` (fractions of the crop) that distractors use)."""
    idx, prob = prior.by_view(view)
    k = idx[rng.choice(len(idx), p=prob)]
    p = prior.poses[k] + rng.normal(size=(14, 2)) * (prior.spread[k] * cfg.joint_noise)[:, None]
    yaw = float(wrap(prior.yaw[k] + rng.normal() * cfg.yaw_noise_deg))
    a = np.deg2rad(rng.normal() * cfg.lean_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    p = p @ rot.T
    p[:, 1] *= 1.0 + rng.normal() * cfg.aspect_jitter
    sy = height / 128.0  # the prior's framing is measured on 128x64 crops
    sx = width / 64.0
    t = (prior.torso[0] + rng.normal() * prior.torso[1] * cfg.framing_sd) * rng.uniform(*cfg.scale_jitter)
    t = max(t, prior.torso[0] * 0.5) * sy * zoom
    cy = (prior.midhip[0, 0] + rng.normal() * prior.midhip[0, 1] * cfg.framing_sd) * sy
    cx = (prior.midhip[1, 0] + rng.normal() * prior.midhip[1, 1] * cfg.framing_sd) * sx
    u = rng.random()
    if u < cfg.truncate_prob:  # zoom in about the head: the feet leave the frame
        z = rng.uniform(*cfg.truncate_zoom)
        top = cy + (p[HEAD, 0] - 0.0) * t
        t *= z
        cy = top - p[HEAD, 0] * t
    elif u < cfg.truncate_prob + cfg.shift_top_prob:  # the body moves up: the head leaves the frame
        cy -= rng.uniform(*cfg.shift_top_frac) * height
    cy += shift[0] * height
    cx += shift[1] * width
    pts = np.stack([cy + p[:, 0] * t, cx + p[:, 1] * t], axis=-1)
    return Pose(pts, yaw, float(t))


def face_joints(head: np.ndarray, yaw: float, torso: float, body: BodyConfig, cfg: PoseConfig):
    """Project the head model's nose, eyes and ears for `yaw`: positions (5, 2) [y, x] and which ones a
    detector would see (the point's surface faces the camera)."""
    q = np.asarray(body.face_points, dtype=np.float64)  # x: person's left, y: down, z: forward
    r = np.deg2rad(yaw)
    # Person's left maps to image +x at yaw 0; forward maps to image +x at yaw +90.
    img_x = q[:, 0] * np.cos(r) + q[:, 2] * np.sin(r)
    depth = -q[:, 0] * np.sin(r) + q[:, 2] * np.cos(r)  # toward the camera
    norm = np.linalg.norm(q[:, [0, 2]], axis=1) + 1e-9
    facing = depth / norm
    pos = np.stack(
        [head[0] + q[:, 1] * body.head_ry * torso, head[1] + img_x * body.head_rx * torso], axis=-1
    )
    vis = facing > cfg.face_visible_min
    vis[3:] = facing[3:] > cfg.ear_visible_min
    return pos, vis


def to_coco(points: np.ndarray, face: np.ndarray) -> np.ndarray:
    """(18, 2) float COCO-18 keypoints from B14 points (the head centre dropped) and the 5 face points."""
    out = np.zeros((NUM_JOINTS, 2))
    out[1:14] = points[1:14]
    out[list(FACE_COCO)] = face
    return out
