"""Rebuild the packaged pose prior (reidaug/assets/pose_prior.npz) from real Market keypoints.

    python -m reidaug.data.synth.build_prior --csv ../shared/data/market1501-keypoints/market-annotation-train.csv

The prior is a compact statistical summary, not a copy of the file: per view, k-means centres of the
normalised 14-point bodies (head centre + COCO joints 1..13) of the crops where all 13 body joints were
detected, each with its members' spread, mean yaw and count; plus the real framing (torso length and
mid-hip position over all torso-complete crops). Every pose enters four times: as detected, mirrored
(x reflected, left/right labels swapped, yaw -> -yaw), seen from behind (labels swapped, yaw -> 180 - yaw:
an orthographic view from the other side gives the same 2-D points) and both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from reidaug.data.keypoints import present, read_annotations

from .config import VIEWS
from .pose import (
    DEFAULT_PRIOR,
    HEAD,
    L_HIP,
    L_SHO,
    NECK,
    R_HIP,
    R_SHO,
    PosePrior,
    flip_b14,
    save_prior,
    view_of,
    wrap,
)

HEAD_FALLBACK = 0.42  # head centre above the neck (T units) when no face joint was detected
NOSE_TO_CENTRE = 0.08  # head centre above the nose (T units) when only the nose was detected
SIDE_SIGN_MIN = 0.03  # |nose - ears| (T units) that decides which way a side view faces


def normalise(coords: np.ndarray, rng: np.random.Generator):
    """Real keypoints (N, 18, 2) with all of joints 1..13 -> B14 poses (N, 14, 2) in T units around the
    mid-hip, and their yaw in degrees."""
    c = coords.astype(np.float64)
    ok = present(coords)
    mid = (c[:, R_HIP] + c[:, L_HIP]) / 2
    t = np.linalg.norm(c[:, NECK] - mid, axis=1)
    up = (c[:, NECK] - mid) / t[:, None]
    n = len(c)
    head = np.empty((n, 2))
    for i in range(n):
        face = [j for j in (14, 15, 16, 17) if ok[i, j]]
        if face:
            head[i] = c[i, face].mean(0)
        elif ok[i, 0]:
            head[i] = c[i, 0] - [NOSE_TO_CENTRE * t[i], 0]
        else:
            head[i] = c[i, NECK] + up[i] * HEAD_FALLBACK * t[i]
    b14 = np.concatenate([head[:, None], c[:, 1:14]], axis=1)
    b14 = (b14 - mid[:, None]) / t[:, None, None]
    # yaw: shoulder width against the frontal width (cosine), facing side from the nose (sine's sign)
    w = (c[:, L_SHO, 1] - c[:, R_SHO, 1]) / t
    frontal = ok[:, [0, 14, 15, 16, 17]].all(1)
    w_front = np.percentile(w[frontal], 90) if frontal.any() else np.percentile(np.abs(w), 90)
    cos = np.clip(w / w_front, -1, 1)
    sign = rng.choice([-1.0, 1.0], size=n)
    for i in range(n):
        if not ok[i, 0]:
            continue
        ears = [j for j in (16, 17) if ok[i, j]]
        ref = c[i, ears, 1].mean() if ears else c[i, NECK, 1]
        dx = (c[i, 0, 1] - ref) / t[i]
        if abs(dx) > SIDE_SIGN_MIN:
            sign[i] = np.sign(dx)
    yaw = sign * np.degrees(np.arccos(cos))
    return b14, yaw, float(w_front)


def variants(b14: np.ndarray, yaw: np.ndarray):
    """The four readings of each 2-D pose: as is, mirrored, from behind, mirrored from behind."""
    mirror = flip_b14(b14) * [1, -1]
    behind = flip_b14(b14)
    both = b14 * [1, -1]
    poses = np.concatenate([b14, mirror, behind, both])
    yaws = wrap(np.concatenate([yaw, -yaw, 180 - yaw, 180 + yaw]))
    return poses, yaws


def build(
    csv: str | Path, k_per_view: int = 96, seed: int = 0, front_max: float = 45.0
) -> tuple[PosePrior, dict]:
    from scipy.cluster.vq import kmeans2

    ann = read_annotations(csv)
    ok = ann.present()
    rng = np.random.default_rng(seed)
    torso_ok = ok[:, [NECK, R_SHO, L_SHO, R_HIP, L_HIP]].all(1)
    c = ann.coords[torso_ok].astype(np.float64)
    mid = (c[:, R_HIP] + c[:, L_HIP]) / 2
    t = np.linalg.norm(c[:, NECK] - mid, axis=1)
    torso = np.array([t.mean(), t.std()])
    midhip = np.array([[mid[:, 0].mean(), mid[:, 0].std()], [mid[:, 1].mean(), mid[:, 1].std()]])

    full = ok[:, 1:14].all(1)
    b14, yaw, w_front = normalise(ann.coords[full], rng)
    poses, yaws = variants(b14, yaw)
    views = view_of(yaws, front_max)
    out_p, out_s, out_y, out_v, out_w = [], [], [], [], []
    for v in range(len(VIEWS)):
        sel = views == v
        x = poses[sel].reshape(sel.sum(), -1)
        k = min(k_per_view, len(x))
        centres, label = kmeans2(x, k, minit="++", seed=rng)
        for j in range(k):
            m = label == j
            if m.sum() < 2:
                continue
            members = x[m].reshape(-1, 14, 2)
            centre = members.mean(0)
            out_p.append(centre)
            out_s.append(np.sqrt(((members - centre) ** 2).sum(-1).mean(0)))
            ang = np.deg2rad(yaws[sel][m])
            out_y.append(np.degrees(np.arctan2(np.sin(ang).mean(), np.cos(ang).mean())))
            out_v.append(v)
            out_w.append(int(m.sum()))
    prior = PosePrior(
        np.array(out_p), np.array(out_s), np.array(out_y), np.array(out_v), np.array(out_w), torso, midhip
    )
    meta = {
        "source": Path(csv).name, "rows": len(ann), "torso_complete": int(torso_ok.sum()),
        "body_complete": int(full.sum()), "k_per_view": k_per_view, "seed": seed, "frontal_width": w_front,
        "head_index": HEAD,
    }  # fmt: skip
    return prior, meta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", required=True, help="market-annotation-train.csv")
    ap.add_argument("--out", default=str(DEFAULT_PRIOR))
    ap.add_argument("--k", type=int, default=96, help="cluster centres per view")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    prior, meta = build(a.csv, a.k, a.seed)
    save_prior(a.out, prior, meta)
    counts = {VIEWS[v]: int((prior.view == v).sum()) for v in range(len(VIEWS))}
    print(f"wrote {a.out}: {len(prior.poses)} poses {counts}, torso {prior.torso.round(2).tolist()}, {meta}")


if __name__ == "__main__":
    main()
