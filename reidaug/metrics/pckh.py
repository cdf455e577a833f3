"""PCKh of predicted COCO-18 keypoints against target keypoints (architecture notes 11.4).

Per image, the head box spans the target's present joints among {nose, neck, eyes, ears}; an image with
fewer than two of them is skipped. Every present target joint counts in the denominator; it is correct when
the prediction has it too and |dx| < alpha * box width and |dy| < alpha * box height (per axis, strict, so a
zero-width box makes that axis fail). PCKh = correct / present over all images (micro-average).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from reidaug.data.keypoints import HEAD, NUM_JOINTS, Annotations, present


@dataclass(frozen=True)
class PCKh:
    correct: int
    total: int  # present target joints of the scored images
    images: int  # scored images
    skipped: int  # images with fewer than two target head joints

    @property
    def value(self) -> float:
        return self.correct / self.total if self.total else float("nan")


def pckh_per_joint(pred, target, alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 18) correct and counted flags, and (N,) scored flags, for (N, 18, 2) [y, x] arrays (-1 missing)."""
    pred = np.asarray(pred).reshape(-1, NUM_JOINTS, 2)
    target = np.asarray(target).reshape(-1, NUM_JOINTS, 2)
    if pred.shape != target.shape:
        raise ValueError(f"{len(pred)} predictions for {len(target)} targets")
    tp, pp = present(target), present(pred)
    head = tp[:, HEAD]
    scored = head.sum(axis=1) >= 2
    ty = np.where(tp, target[..., 0], 0).astype(np.float64)
    tx = np.where(tp, target[..., 1], 0).astype(np.float64)
    hy = np.where(head, ty[:, HEAD], np.nan)
    hx = np.where(head, tx[:, HEAD], np.nan)
    with warnings.catch_warnings():  # skipped images have no head joints: all-NaN rows
        warnings.simplefilter("ignore", RuntimeWarning)
        h = np.nanmax(hy, axis=1) - np.nanmin(hy, axis=1)
        w = np.nanmax(hx, axis=1) - np.nanmin(hx, axis=1)
    dy = np.abs(pred[..., 0].astype(np.float64) - ty)
    dx = np.abs(pred[..., 1].astype(np.float64) - tx)
    counted = tp & scored[:, None]
    correct = counted & pp & (dx < alpha * w[:, None]) & (dy < alpha * h[:, None])
    return correct, counted, scored


def pckh(pred, target, alpha: float = 0.5) -> PCKh:
    """PCKh over (N, 18, 2) [y, x] predicted and target keypoints, image i against image i."""
    correct, counted, scored = pckh_per_joint(pred, target, alpha)
    return PCKh(int(correct.sum()), int(counted.sum()), int(scored.sum()), int((~scored).sum()))


def pckh_annotations(pred: Annotations, target: Annotations, alpha: float = 0.5) -> PCKh:
    """PCKh over the images of `target`, matched by name (a name missing from `pred` has no joints)."""
    rows = np.full((len(target), NUM_JOINTS, 2), -1, dtype=np.int32)
    for i, name in enumerate(target.names):
        if name in pred:
            rows[i] = pred[name]
    return pckh(rows, target.coords, alpha)
