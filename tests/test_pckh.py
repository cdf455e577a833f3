"""PCKh (notes 11.4) against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reidaug.data.keypoints import Annotations, J
from reidaug.metrics.pckh import pckh, pckh_annotations, pckh_per_joint


def kp(**joints) -> np.ndarray:
    out = np.full((18, 2), -1, dtype=np.int32)
    for name, yx in joints.items():
        out[J[name]] = yx
    return out


# Image 1: head joints nose, neck, eyes -> head box h = 20 - 8 = 12, w = 22 - 18 = 4: |dy| < 6, |dx| < 2.
T1 = kp(nose=(10, 20), neck=(20, 20), r_eye=(8, 18), l_eye=(8, 22), r_shoulder=(20, 10), r_hip=(60, 12))
P1 = kp(
    nose=(15, 21),  # dy 5 < 6, dx 1 < 2: correct
    neck=(26, 20),  # dy 6, not < 6 (strict): wrong
    l_eye=(8, 24),  # dx 2, not < 2: wrong; r_eye missing: wrong
    r_shoulder=(21, 11),  # correct
    r_hip=(60, 13),  # correct
    r_elbow=(40, 5),  # no target joint: not counted
)
# Image 2: one head joint -> skipped, its joints not counted.
T2 = kp(nose=(10, 30), r_shoulder=(20, 20), l_shoulder=(20, 40))
P2 = T2.copy()
# Image 3: nose and neck on one column -> w = 0, no joint can be correct even when exact.
T3 = kp(nose=(10, 30), neck=(20, 30), l_shoulder=(20, 40))
P3 = T3.copy()


def test_hand_computed_values():
    r = pckh(np.stack([P1, P2, P3]), np.stack([T1, T2, T3]))
    assert (r.correct, r.total, r.images, r.skipped) == (3, 9, 2, 1)
    assert r.value == pytest.approx(3 / 9)
    assert pckh(P1, T1).value == pytest.approx(0.5)


def test_alpha_widens_the_box():
    # alpha 1: |dy| < 12, |dx| < 4 -> nose, neck, l_eye, r_shoulder, r_hip correct; r_eye still missing.
    r = pckh(np.stack([P1, P3]), np.stack([T1, T3]), alpha=1.0)
    assert (r.correct, r.total) == (5, 9)


def test_per_joint_flags():
    correct, counted, scored = pckh_per_joint(P1[None], T1[None])
    assert scored.tolist() == [True]
    assert np.flatnonzero(counted[0]).tolist() == sorted(
        J[n] for n in ("nose", "neck", "r_eye", "l_eye", "r_shoulder", "r_hip")
    )
    assert np.flatnonzero(correct[0]).tolist() == sorted(J[n] for n in ("nose", "r_shoulder", "r_hip"))


def test_by_name_and_missing_prediction():
    target = Annotations(["a.jpg", "b.jpg"], np.stack([T1, T1]))
    pred = Annotations(["b.jpg"], P1[None])  # a.jpg has no prediction: its 6 joints are wrong
    r = pckh_annotations(pred, target)
    assert (r.correct, r.total) == (3, 12)


def test_nothing_scored_is_nan_and_shapes_checked():
    assert math.isnan(pckh(P2, T2).value)
    with pytest.raises(ValueError):
        pckh(np.stack([P1, P2]), T1)


def test_reference_against_itself(market_samples):
    """Exact keypoints score 1 (none of the 18 crops has a flat head box)."""
    from reidaug.data.keypoints import read_annotations

    t = read_annotations(market_samples / "annotation.csv")
    correct, counted, _ = pckh_per_joint(t.coords, t.coords)
    assert counted.sum() > 200
    assert (correct == counted).all()
