"""The body mask of mask-SSIM and mask-IS, from the target keypoints (architecture notes 11.2).

For each of 23 segments whose two joints are present, the rectangle of half-width 4 px around the segment; a
disc of radius 4 around every present joint; then a morphological closing with a 5x5 square. (Not the PG2
"pose mask" of radius-6 discs used for masked training losses.)
"""

from __future__ import annotations

import cv2
import numpy as np

from reidaug.data.keypoints import present

# The skeleton plus neck-ears, hip-hip, same-side hip-shoulder links and ear-ear (0-indexed COCO-18).
SEGMENTS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
            (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (1, 16), (1, 17), (8, 11), (11, 5), (8, 2), (16, 17))  # fmt: skip


def pose_mask(keypoints: np.ndarray, size: tuple[int, int] = (128, 64), half_width: float = 4.0, radius: int = 4,
              closing: int = 5) -> np.ndarray:  # fmt: skip
    """(H, W) bool mask of the person in pose `keypoints` (18, 2) [y, x], -1 for missing joints."""
    kp = np.asarray(keypoints)
    ok = present(kp[None])[0]
    mask = np.zeros(size, np.uint8)
    xy = kp[:, ::-1].astype(np.float64)  # (x, y) for OpenCV
    for a, b in SEGMENTS:
        if not (ok[a] and ok[b]):
            continue
        d = xy[b] - xy[a]
        n = np.hypot(*d)
        if n == 0:
            continue
        normal = np.array([-d[1], d[0]]) / n * half_width
        poly = np.array([xy[a] + normal, xy[b] + normal, xy[b] - normal, xy[a] - normal])
        cv2.fillConvexPoly(mask, np.round(poly).astype(np.int32), 1)
    for j in np.flatnonzero(ok):
        cv2.circle(mask, (int(xy[j, 0]), int(xy[j, 1])), radius, 1, thickness=-1)
    if closing:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((closing, closing), np.uint8))
    return mask.astype(bool)


def apply_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with everything outside the mask set to 0 (black), as the reference scripts do."""
    return image * mask[..., None].astype(image.dtype)
