"""Other detectors' joint layouts -> OpenPose COCO-18, and detector coordinates -> annotation pixels.

Each table lists, for COCO-18 joints 0..17 (reidaug.data.keypoints.JOINTS), the source joint index, or
NECK where the source has no neck: COCO-18's neck is then the midpoint of the two shoulders, present only
when both are (architecture notes 14.2, item 11). These conversions are not the reference detector.
"""

from __future__ import annotations

import numpy as np

from reidaug.data.keypoints import MISSING, NUM_JOINTS

NECK = -1

# BlazePose 33 (MediaPipe Pose): 0 nose, 2/5 left/right eye, 7/8 left/right ear, 11/12 shoulders,
# 13/14 elbows, 15/16 wrists, 23/24 hips, 25/26 knees, 27/28 ankles (left first).
BLAZEPOSE33 = (0, NECK, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
BLAZEPOSE_SHOULDERS = (12, 11)  # right, left

# COCO-17 (torchvision Keypoint R-CNN, HRNet): nose, l/r eye, l/r ear, l/r shoulder, elbow, wrist, hip,
# knee, ankle.
COCO17 = (0, NECK, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
COCO17_SHOULDERS = (6, 5)

# OpenPose BODY_25: COCO-18 with a mid-hip (8) after the left wrist and six foot joints at the end.
BODY25 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
# OpenPose COCO: already COCO-18.
OPENPOSE_COCO18 = tuple(range(NUM_JOINTS))

LAYOUTS = {
    "blazepose33": (BLAZEPOSE33, BLAZEPOSE_SHOULDERS, 33),
    "coco17": (COCO17, COCO17_SHOULDERS, 17),
    "body25": (BODY25, None, 25),
    "coco18": (OPENPOSE_COCO18, None, 18),
}


def to_coco18(points: np.ndarray, ok: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Reorder (K, 2) points and their (K,) `ok` flags of a source layout to COCO-18.

    Points keep their own units and axis order; returns ((18, 2) float points, (18,) bool present).
    """
    table, shoulders, k = LAYOUTS[layout]
    points = np.asarray(points, dtype=np.float64)
    ok = np.asarray(ok, dtype=bool)
    if points.shape != (k, 2) or ok.shape != (k,):
        raise ValueError(
            f"{layout} expects ({k}, 2) points and ({k},) flags, got {points.shape} and {ok.shape}"
        )
    out = np.zeros((NUM_JOINTS, 2))
    present = np.zeros(NUM_JOINTS, dtype=bool)
    for j, src in enumerate(table):
        if src == NECK:
            r, left = shoulders
            out[j] = (points[r] + points[left]) / 2
            present[j] = ok[r] and ok[left]
        else:
            out[j] = points[src]
            present[j] = ok[src]
    return out, present


def to_pixels(xy: np.ndarray, present: np.ndarray, size: tuple[int, int], continuous: bool) -> np.ndarray:
    """(18, 2) [x, y] detector coordinates -> (18, 2) int32 [y, x] pixel indices of an image of `size` (H, W).

    `continuous`: coordinates where pixel i covers [i, i + 1) (MediaPipe, torchvision), so the index is the
    floor; otherwise pixel centres are integers (OpenPose), so the index is the nearest integer. A joint
    not present or falling outside the image is -1.
    """
    xy = np.asarray(xy, dtype=np.float64)
    idx = np.floor(xy if continuous else xy + 0.5)
    h, w = size
    finite = np.isfinite(idx).all(axis=1)
    idx = np.where(finite[:, None], idx, -1)
    inside = finite & (idx[:, 0] >= 0) & (idx[:, 0] < w) & (idx[:, 1] >= 0) & (idx[:, 1] < h)
    keep = np.asarray(present, dtype=bool) & inside
    out = np.full((NUM_JOINTS, 2), MISSING, dtype=np.int32)
    out[keep, 0] = idx[keep, 1]
    out[keep, 1] = idx[keep, 0]
    return out
