"""COCO-18 keypoints: constants, the annotation CSV, heatmaps, skeletons (issue Foundation, section 3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reidaug.data.keypoints import (
    FLIP_PAIRS,
    HEADER,
    JOINT_COLORS,
    JOINTS,
    LIMBS,
    NUM_JOINTS,
    TORSO,
    Annotations,
    draw_skeleton,
    format_annotations,
    heatmaps,
    pose_image,
    present,
    read_annotations,
    write_annotations,
)
from reidaug.errors import ReidaugError

Y = [14, 24, 25, 44, 61, 24, 42, 56, 61, 86, 112, 60, 86, 101, 12, 11, 10, -1]
X = [38, 33, 20, 14, 20, 46, 52, 63, 29, 33, 34, 43, 36, 14, 35, 39, 27, -1]
ROW = f"0161_c3s3_033053_04.jpg: {Y}: {X}"


def test_constants():
    assert NUM_JOINTS == 18 and len(JOINTS) == 18 and len(JOINT_COLORS) == 18
    assert len(LIMBS) == 19 and all(0 <= a < 18 and 0 <= b < 18 for a, b in LIMBS)
    assert TORSO == (2, 5, 8, 11)  # Rsho, Lsho, Rhip, Lhip
    assert sorted(i for p in FLIP_PAIRS for i in p) == list(range(2, 18))
    assert (1, 0) in LIMBS and (2, 16) in LIMBS and (5, 17) in LIMBS


def test_read_values(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text(f"{HEADER}\n{ROW}\n-1_c5s3_086412_11.jpg: {[-1] * 18}: {[-1] * 18}\n")
    ann = read_annotations(p)
    assert ann.names == ["0161_c3s3_033053_04.jpg", "-1_c5s3_086412_11.jpg"]
    assert ann.coords.shape == (2, 18, 2) and ann.coords.dtype == np.int32
    assert ann["0161_c3s3_033053_04.jpg"][0].tolist() == [14, 38]  # [y, x] of the nose
    assert ann.coords[0, 17].tolist() == [-1, -1]
    assert ann.present()[0].sum() == 17 and not ann.present()[1].any()
    assert "-1_c5s3_086412_11.jpg" in ann and "x.jpg" not in ann
    with pytest.raises(ReidaugError, match="no keypoints for image 'x.jpg'"):
        ann["x.jpg"]
    assert format_annotations(ann) == p.read_text()


def test_shared_train_csv_round_trip_is_byte_exact(market_keypoints, tmp_path):
    src = market_keypoints / "market-annotation-train.csv"
    ann = read_annotations(src)
    assert len(ann) == 12_936
    assert int((~ann.present().any(axis=1)).sum()) == 419  # images with no joint at all (README fact)
    out = tmp_path / "round.csv"
    write_annotations(out, ann)
    assert out.read_bytes() == src.read_bytes()


def test_round_trip_from_arrays(tmp_path):
    rng = np.random.default_rng(0)
    coords = np.stack([rng.integers(-1, 128, (5, 18)), rng.integers(-1, 64, (5, 18))], axis=-1)
    ann = Annotations([f"{i:04d}_c1s1_000000_00.jpg" for i in range(5)], coords)
    write_annotations(tmp_path / "k.csv", ann)
    back = read_annotations(tmp_path / "k.csv")
    assert back.names == ann.names and np.array_equal(back.coords, ann.coords)


@pytest.mark.parametrize(
    "body, match",
    [
        (f"{HEADER}\n{ROW}\nb.jpg: [1, 2]: {X}\n", r":3: expected 18 joints, got 2"),
        (f"{HEADER}\n{ROW}\nb.jpg: {Y}: {X + [5]}\n", r":3: expected 18 joints, got 19"),
        (f"{HEADER}\nb.jpg: {Y[:-1] + [1.5]}: {X}\n", r":2: keypoints must be a list of integers"),
        (
            f"{HEADER}\nb.jpg: {Y[:-1] + ['true']}: {X}\n".replace("'", ""),
            r":2: keypoints must be a list of int",
        ),
        (f"{HEADER}\nb.jpg: [a, b]: {X}\n", r":2: keypoint list is not a JSON list"),
        (f"{HEADER}\nb.jpg: {Y}\n", r":2: expected 3 colon-separated fields, got 2"),
        (f"{HEADER}\nb.jpg: {Y}: {X}: {X}\n", r":2: expected 3 colon-separated fields, got 4"),
        (f"{HEADER}\nb.jpg: {Y[:-1] + [-7]}: {X}\n", r":2: negative coordinate -7"),
        (f"name,keypoints_y,keypoints_x\n{ROW}\n", r"first line must be 'name:keypoints_y:keypoints_x'"),
        ("", r"first line must be"),
        (f"{HEADER}\n{ROW}\n{ROW}\n", r"duplicate image names: 0161_c3s3_033053_04.jpg"),
    ],
)
def test_malformed_rows(tmp_path, body, match):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(ReidaugError, match=match) as e:
        read_annotations(p)
    assert "\n" not in str(e.value)
    if ":2:" in match or ":3:" in match:
        assert str(e.value).startswith(f"{p}:")


def test_missing_file(tmp_path):
    with pytest.raises(ReidaugError, match="annotation file .*nope.csv not found"):
        read_annotations(tmp_path / "nope.csv")


def _coords():
    c = np.stack([Y, X], axis=-1).astype(np.int64)
    return c  # joint 17 missing


def test_heatmap_formula_at_pixels():
    c = _coords()
    hm = heatmaps(c)
    assert hm.shape == (18, 128, 64) and hm.dtype == torch.float32
    for j, r, col in [(0, 14, 38), (0, 20, 30), (1, 0, 0), (10, 127, 63), (5, 30, 50), (13, 90, 20)]:
        y, x = c[j]
        want = math.exp(-((r - y) ** 2 + (col - x) ** 2) / (2 * 6.0**2))
        assert hm[j, r, col].item() == pytest.approx(want, rel=1e-5, abs=1e-12)
    for j in range(17):  # peak exactly 1 at the joint, the maximum of its channel
        y, x = c[j]
        assert hm[j, y, x].item() == 1.0 and hm[j].max().item() == 1.0
        assert hm[j].argmax().item() == y * 64 + x
    assert torch.count_nonzero(hm[17]) == 0  # missing joint: all-zero channel
    assert hm.min() >= 0 and hm.max() <= 1
    # whole grid, no truncation: 20 px away is still exp(-400/72) > 0
    assert hm[0, 34, 38].item() == pytest.approx(math.exp(-400 / 72), rel=1e-5)


def test_heatmap_sigma_and_size():
    c = _coords()
    hm = heatmaps(c, size=(256, 128), sigma=3.0)
    assert hm.shape == (18, 256, 128)
    assert hm[0, 14, 41].item() == pytest.approx(math.exp(-9 / 18), rel=1e-6)


def test_heatmaps_batched_dtype_device():
    c = torch.as_tensor(_coords())
    batch = torch.stack([c, torch.full_like(c, -1), c.flip(0)])  # joints in reverse order
    hm = heatmaps(batch)
    assert hm.shape == (3, 18, 128, 64) and hm.dtype == torch.float32 and hm.device == batch.device
    assert torch.equal(hm[0], heatmaps(c))
    assert torch.count_nonzero(hm[1]) == 0
    assert torch.equal(hm[2], heatmaps(c).flip(0))  # each channel follows its joint
    h64 = heatmaps(batch.double())
    assert h64.dtype == torch.float64 and torch.allclose(h64.float(), hm, atol=1e-6)
    h16 = heatmaps(batch.to(torch.float16))
    assert h16.dtype == torch.float16
    if torch.cuda.is_available():
        g = heatmaps(batch.cuda())
        assert g.device.type == "cuda" and torch.allclose(g.cpu(), hm, atol=1e-6)
    with pytest.raises(ReidaugError, match=r"shape \(B, 18, 2\)"):
        heatmaps(torch.zeros(2, 17, 2))


def test_heatmaps_match_numpy_reference_for_all_shared_samples(market_samples):
    ann = read_annotations(market_samples / "annotation.csv")
    hm = heatmaps(ann.coords).numpy()
    rr, cc = np.mgrid[0:128, 0:64]
    for b, coords in enumerate(ann.coords):
        for j, (y, x) in enumerate(coords):
            want = np.zeros((128, 64)) if y == -1 else np.exp(-((rr - y) ** 2 + (cc - x) ** 2) / 72.0)
            np.testing.assert_allclose(hm[b, j], want, rtol=1e-5, atol=1e-30)


def test_draw_skeleton():
    c = _coords()
    img = np.zeros((128, 64, 3), np.uint8)
    out = draw_skeleton(img, c)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not img.any()  # input untouched
    for j in (0, 8, 13):  # joint dots drawn last, in their colour (anti-aliasing blends a few levels)
        y, x = c[j]
        assert np.abs(out[y, x].astype(int) - JOINT_COLORS[j]).max() <= 8
    assert out.any(axis=2).sum() > 100
    assert np.array_equal(pose_image(c), out)
    empty = draw_skeleton(img, np.full((18, 2), -1))
    assert not empty.any()
    only_nose = np.full((18, 2), -1)
    only_nose[0] = (50, 30)
    dots = draw_skeleton(img, only_nose).any(axis=2)
    ys, xs = np.nonzero(dots)
    assert dots[50, 30] and abs(ys - 50).max() <= 3 and abs(xs - 30).max() <= 3  # a dot, no limb


def test_present():
    assert present(np.array([[3, 4], [-1, -1], [0, 0], [5, -1]])).tolist() == [True, False, True, False]
