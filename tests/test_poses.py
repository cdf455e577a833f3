"""`reidaug poses`: joint mappings, OpenPose JSON import, the resumable loop, summaries, errors, backends."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from reidaug.data.images import write_image
from reidaug.data.keypoints import (
    MISSING,
    Annotations,
    format_annotations,
    read_annotations,
    write_annotations,
)
from reidaug.errors import ReidaugError
from reidaug.pose import base
from reidaug.pose.base import PoseConfig, extract_poses, partial_path, skipped_path
from reidaug.pose.mapping import BLAZEPOSE33, BODY25, COCO17, to_coco18, to_pixels
from reidaug.pose.openpose_json import OpenPoseJSON, OpenPoseJSONConfig, import_json

# ----------------------------------------------------------------------------------------------- mappings


def numbered(k: int) -> np.ndarray:
    """Point i = (i, 100 + i): every output joint shows which source joint it came from."""
    return np.stack([np.arange(k), 100 + np.arange(k)], axis=1).astype(float)


def test_blazepose33_to_coco18():
    xy, ok = to_coco18(numbered(33), np.ones(33, bool), "blazepose33")
    # COCO-18: nose, neck, r-sho, r-elb, r-wri, l-sho, l-elb, l-wri, r-hip, r-kne, r-ank, l-hip, l-kne, l-ank,
    # r-eye, l-eye, r-ear, l-ear
    src = [0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7]
    for j, s in enumerate(src):
        if s is not None:
            assert xy[j].tolist() == [s, 100 + s], j
    assert xy[1].tolist() == [11.5, 111.5]  # neck: midpoint of the shoulders 11 and 12
    assert ok.all()
    ok_in = np.ones(33, bool)
    ok_in[11] = False  # left shoulder lost: so are l-sho and the neck
    _, ok = to_coco18(numbered(33), ok_in, "blazepose33")
    assert np.flatnonzero(~ok).tolist() == [1, 5]
    assert len(BLAZEPOSE33) == 18


def test_coco17_to_coco18():
    xy, ok = to_coco18(numbered(17), np.ones(17, bool), "coco17")
    src = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
    for j, s in enumerate(src):
        if s is not None:
            assert xy[j].tolist() == [s, 100 + s], j
    assert xy[1].tolist() == [5.5, 105.5]
    ok_in = np.ones(17, bool)
    ok_in[6] = ok_in[3] = False  # right shoulder and left ear
    _, ok = to_coco18(numbered(17), ok_in, "coco17")
    assert np.flatnonzero(~ok).tolist() == [1, 2, 17]
    assert len(COCO17) == 18


def test_body25_to_coco18_skips_mid_hip():
    xy, ok = to_coco18(numbered(25), np.ones(25, bool), "body25")
    assert xy[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]
    assert list(BODY25) == xy[:, 0].astype(int).tolist()
    with pytest.raises(ValueError):
        to_coco18(numbered(18), np.ones(18, bool), "body25")


def test_to_pixels_rounding_and_outside():
    xy = np.zeros((18, 2))
    xy[0] = (10.9, 20.2)  # x, y continuous -> floor -> [y, x] = [20, 10]
    xy[1] = (-0.2, 5)  # outside (left)
    xy[2] = (63.99, 127.99)  # last pixel
    xy[3] = (64.0, 3)  # outside (right edge, W = 64)
    xy[4] = (np.nan, 3)
    present = np.ones(18, bool)
    present[5] = False
    out = to_pixels(xy, present, (128, 64), continuous=True)
    assert out[0].tolist() == [20, 10]
    assert out[1].tolist() == out[3].tolist() == out[4].tolist() == out[5].tolist() == [MISSING, MISSING]
    assert out[2].tolist() == [127, 63]
    assert out.dtype == np.int32
    # Integer pixel centres (OpenPose): nearest index.
    out = to_pixels(xy, present, (128, 64), continuous=False)
    assert out[0].tolist() == [20, 11] and out[1].tolist() == [5, 0]


# ---------------------------------------------------------------------------------- BlazePose post-process


def blaze_landmarks(back: bool = False) -> np.ndarray:
    """Hand-made (39, 5) landmarks of a front view (person's right shoulder on the image left)."""
    lm = np.zeros((39, 5))
    lm[:, 3] = 5.0  # visibility logit: sigmoid 0.993
    lm[:33, 0] = 32
    lm[:33, 1] = np.linspace(10, 120, 33)
    lm[12, 0], lm[11, 0] = (44, 20) if back else (20, 44)  # right, left shoulder x
    return lm


def test_blazepose_thresholds_and_back_view():
    from reidaug.pose.mediapipe_backend import MediaPipeConfig, blazepose_to_coco18

    cfg = MediaPipeConfig()
    front = blaze_landmarks()
    front[14, 3] = 0.1  # right elbow: sigmoid 0.52 >= 0.5 kept
    front[16, 3] = -0.1  # right wrist: 0.48 dropped
    front[5, 3] = 2.0  # right eye: 0.88 < face threshold 0.9 dropped
    out = blazepose_to_coco18(front, 0.9, (128, 64), cfg)
    assert np.flatnonzero((out == MISSING).all(1)).tolist() == [4, 14]
    assert out[2].tolist() == [int(front[12, 1]), 20]  # r-shoulder [y, x]
    assert out[1].tolist() == [int((front[11, 1] + front[12, 1]) / 2), 32]  # neck

    back = blazepose_to_coco18(blaze_landmarks(back=True), 0.9, (128, 64), cfg)
    assert np.flatnonzero((back == MISSING).all(1)).tolist() == [0, 14, 15]  # nose, eyes; ears kept
    no_drop = MediaPipeConfig(back_view_drop=[])
    assert (blazepose_to_coco18(blaze_landmarks(back=True), 0.9, (128, 64), no_drop) != MISSING).all()

    assert (blazepose_to_coco18(front, 0.4, (128, 64), cfg) == MISSING).all()  # pose score < 0.5


def test_roi_from_aux_upright_and_leaning():
    from reidaug.pose.mediapipe_backend import roi_from_aux, roi_transform

    cx, cy, side, angle = roi_from_aux(np.array([32.0, 70.0]), np.array([32.0, 10.0]), 1.25)
    assert (cx, cy, side) == (32.0, 70.0, 150.0) and angle == pytest.approx(0.0)
    *_, angle = roi_from_aux(np.array([32.0, 70.0]), np.array([92.0, 70.0]), 1.25)  # body axis to the right
    assert angle == pytest.approx(np.pi / 2)
    # The region maps the input centre to the ROI centre and the input's top edge 'up' along the body axis.
    a, b = roi_transform(32.0, 70.0, 150.0, np.pi / 2)
    assert (a @ [128, 128] + b).tolist() == pytest.approx([32.0, 70.0])
    assert (a @ [128, 0] + b).tolist() == pytest.approx([32.0 + 75.0, 70.0])


# ------------------------------------------------------------------------------------ OpenPose JSON import


def write_json(path: Path, people: list[list[float]]) -> Path:
    path.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": p} for p in people]}))
    return path


def flat(points: dict[int, tuple[float, float, float]], k: int) -> list[float]:
    out = [0.0] * (3 * k)
    for j, (x, y, c) in points.items():
        out[3 * j : 3 * j + 3] = [x, y, c]
    return out


def test_json_coco_layout_picks_the_strongest_person(tmp_path):
    weak = flat({j: (5, 5, 0.5) for j in range(6)}, 18)  # 6 joints, total 3.0
    strong = flat(
        {0: (31.6, 9.4, 0.9), 1: (32, 22, 0.8), 2: (20, 22, 0.7), 5: (44, 22, 0.9), 8: (70.0, 5, 0.9)}, 18
    )
    path = write_json(tmp_path / "a_keypoints.json", [weak, strong])  # strong: total 4.2
    out = import_json(path, (128, 64), OpenPoseJSONConfig())
    assert out[0].tolist() == [9, 32]  # [y, x] rounded
    assert out[1].tolist() == [22, 32] and out[2].tolist() == [22, 20] and out[5].tolist() == [22, 44]
    assert out[8].tolist() == [MISSING, MISSING]  # x = 70 outside a 64-wide crop
    assert (out[[3, 4, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17]] == MISSING).all()


def test_json_body25_layout_and_reference_filters(tmp_path):
    pts = {
        0: (30, 10, 0.9),
        1: (30, 20, 0.9),
        8: (30, 60, 0.9),
        9: (25, 60, 0.8),
        12: (35, 60, 0.8),
        17: (26, 9, 0.6),
    }
    path = write_json(tmp_path / "b_keypoints.json", [flat(pts, 25)])
    out = import_json(path, (128, 64), OpenPoseJSONConfig())
    assert out[8].tolist() == [60, 25] and out[11].tolist() == [60, 35]  # BODY_25 9 -> r-hip, 12 -> l-hip
    assert out[16].tolist() == [9, 26]  # BODY_25 17 (right ear) -> COCO-18 16
    # Three joints (< 4 parts) or a low mean confidence: the person is dropped, all -1.
    few = write_json(
        tmp_path / "c_keypoints.json", [flat({0: (1, 1, 0.9), 1: (2, 2, 0.9), 2: (3, 3, 0.9)}, 25)]
    )
    assert (import_json(few, (128, 64), OpenPoseJSONConfig()) == MISSING).all()
    low = write_json(tmp_path / "d_keypoints.json", [flat({j: (5, 5, 0.3) for j in range(8)}, 18)])
    assert (import_json(low, (128, 64), OpenPoseJSONConfig()) == MISSING).all()
    assert (import_json(low, (128, 64), OpenPoseJSONConfig(min_mean_score=0.0)) != MISSING).any()
    nobody = write_json(tmp_path / "e_keypoints.json", [])
    assert (import_json(nobody, (128, 64), OpenPoseJSONConfig()) == MISSING).all()


def test_json_backend_reports_missing_and_malformed_files(tmp_path):
    d = tmp_path / "json"
    d.mkdir()
    write_json(d / "ok_keypoints.json", [flat({j: (10, 10 + j, 0.9) for j in range(18)}, 18)])
    (d / "bad_keypoints.json").write_text("{not json")
    write_json(d / "short_keypoints.json", [[1.0, 2.0, 0.5]])
    (d / "plain.json").write_text(json.dumps({"people": []}))  # the `<stem>.json` name is accepted too
    backend = OpenPoseJSON(OpenPoseJSONConfig(json_dir=str(d)))
    img = np.zeros((128, 64, 3), np.uint8)
    names = ["ok.jpg", "bad.jpg", "short.jpg", "gone.jpg", "plain.png"]
    res = backend.predict([img] * 5, names)
    assert isinstance(res[0], np.ndarray) and res[0][3].tolist() == [13, 10]
    assert res[1] == "bad OpenPose JSON: not JSON (JSONDecodeError)"
    assert res[2] == "bad OpenPose JSON: pose_keypoints_2d has 3 values (54 for COCO, 75 for BODY_25)"
    assert res[3].startswith("no OpenPose JSON (<stem>_keypoints.json) in")
    assert (res[4] == MISSING).all()
    with pytest.raises(ReidaugError, match="needs --json DIR"):
        OpenPoseJSON(OpenPoseJSONConfig())


# -------------------------------------------------------------------------------- the extraction loop


class FakeBackend:
    """Deterministic keypoints from pixel values; all -1 for images whose first pixel is black."""

    name = "fake"

    def __init__(self, fail_after: int | None = None):
        self.seen: list[str] = []
        self.batches = 0
        self.fail_after = fail_after

    def predict(self, images, names):
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise KeyboardInterrupt
        self.batches += 1
        self.seen += list(names)
        out = []
        for img in images:
            kp = np.stack(
                [np.arange(18) * 7 % img.shape[0], (np.arange(18) + int(img[0, 0, 0])) % img.shape[1]], 1
            )
            out.append(np.full((18, 2), MISSING) if img[0, 0, 0] == 0 else kp)
        return out


def make_crops(folder: Path, n: int, start: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(start, start + n):
        img = np.full((128, 64, 3), 10 + i, np.uint8)
        name = f"{i:04d}_c1s1_{i:06d}_00.png"
        write_image(folder / name, img)
        names.append(name)
    return names


def cfg(**kw) -> PoseConfig:
    return PoseConfig(**{"batch_size": 2, **kw})


def test_extract_writes_sorted_rows_and_counts(tmp_path):
    names = make_crops(tmp_path / "imgs", 5)
    write_image(tmp_path / "imgs" / "black.png", np.zeros((128, 64, 3), np.uint8))  # no person
    out = tmp_path / "new" / "ann.csv"  # its folder is created
    s = extract_poses(tmp_path / "imgs", out, cfg(), backend=FakeBackend(), show_progress=False)
    ann = read_annotations(out)
    assert ann.names == sorted([*names, "black.png"])
    assert (s.images, s.resumed, s.extracted, s.no_pose, s.rows, len(s.bad)) == (6, 0, 6, 1, 6, 0)
    assert (ann["black.png"] == MISSING).all()
    assert ann[names[2]].tolist()[1] == [7, (1 + 12) % 64]
    assert not partial_path(out).exists() and not skipped_path(out).exists()


def test_bad_images_are_listed_and_skipped(tmp_path):
    d = tmp_path / "imgs"
    names = make_crops(d, 3)
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("not an image")
    write_image(d / "small.png", np.full((100, 50, 3), 9, np.uint8))
    out = tmp_path / "ann.csv"
    s = extract_poses(d, out, cfg(), backend=FakeBackend(), show_progress=False)
    assert dict(s.bad) == {
        "empty.jpg": "empty file",
        "text.jpg": "unreadable (not a decodable image)",
        "small.png": "wrong size 100x50 (expected 128x64)",
    }
    assert (s.images, s.extracted, s.rows) == (6, 3, 3)
    assert read_annotations(out).names == names
    assert skipped_path(out).read_text().splitlines()[0] == "empty.jpg\tempty file"
    # image_size null accepts any size; the bad ones are retried on a rerun.
    s2 = extract_poses(d, out, cfg(image_size=None), backend=FakeBackend(), show_progress=False)
    assert (s2.resumed, s2.extracted, len(s2.bad)) == (3, 1, 2)
    assert read_annotations(out)["small.png"][1].tolist() == [7, (1 + 9) % 50]


def test_rerun_appends_only_what_is_missing(tmp_path):
    d = tmp_path / "imgs"
    first = make_crops(d, 3)
    out = tmp_path / "ann.csv"
    extract_poses(d, out, cfg(), backend=FakeBackend(), show_progress=False)
    before = out.read_text()
    again = FakeBackend()
    s = extract_poses(d, out, cfg(), backend=again, show_progress=False)
    assert again.seen == [] and s.extracted == 0 and s.resumed == 3 and out.read_text() == before
    new = make_crops(d, 2, start=10)
    more = FakeBackend()
    s = extract_poses(d, out, cfg(), backend=more, show_progress=False)
    assert more.seen == new and (s.resumed, s.extracted, s.rows) == (3, 2, 5)
    assert out.read_text().startswith(before) and read_annotations(out).names == first + new


def test_interrupted_run_resumes_to_the_same_file(tmp_path):
    d = tmp_path / "imgs"
    make_crops(d, 7)
    fresh = tmp_path / "fresh.csv"
    extract_poses(d, fresh, cfg(), backend=FakeBackend(), show_progress=False)

    out = tmp_path / "ann.csv"
    with pytest.raises(KeyboardInterrupt):
        extract_poses(d, out, cfg(), backend=FakeBackend(fail_after=2), show_progress=False)
    assert not out.exists()  # never a half-written output
    part = partial_path(out)
    assert len(part.read_text().splitlines()) == 1 + 4  # header + two batches of two
    with part.open("a") as f:  # a row cut in the middle by the interruption
        f.write("0006_c1s1_000006_00.png: [1, 2")
    rest = FakeBackend()
    s = extract_poses(d, out, cfg(), backend=rest, show_progress=False)
    assert (s.resumed, s.extracted) == (4, 3) and len(rest.seen) == 3
    assert out.read_text() == fresh.read_text()
    assert not part.exists()
    # A partial file cut inside its header holds no rows; one that is not ours is refused.
    other = tmp_path / "other.csv"
    partial_path(other).write_text("name:keyp")
    assert extract_poses(d, other, cfg(), backend=FakeBackend(), show_progress=False).extracted == 7
    partial_path(other).write_text("hello\n")
    with pytest.raises(ReidaugError, match="is not a partial annotation file; delete it or pass --overwrite"):
        extract_poses(d, other, cfg(), backend=FakeBackend(), show_progress=False)


def test_existing_rows_are_kept_and_overwrite_starts_over(tmp_path):
    d = tmp_path / "imgs"
    names = make_crops(d, 2)
    out = tmp_path / "ann.csv"
    old = np.full((1, 18, 2), 5)
    write_annotations(out, Annotations(["other.jpg"], old))
    s = extract_poses(d, out, cfg(), backend=FakeBackend(), show_progress=False)
    assert read_annotations(out).names == ["other.jpg", *names] and s.extra_rows == 1
    s = extract_poses(d, out, cfg(), backend=FakeBackend(), overwrite=True, show_progress=False)
    assert read_annotations(out).names == names and (s.resumed, s.extracted, s.extra_rows) == (0, 2, 0)


def test_market_root_reads_the_split(tmp_path):
    root = tmp_path / "market"
    train = make_crops(root / "bounding_box_train", 2)
    query = make_crops(root / "query", 1, start=50)
    s = extract_poses(
        root, tmp_path / "q.csv", cfg(split="query"), backend=FakeBackend(), show_progress=False
    )
    assert read_annotations(tmp_path / "q.csv").names == query and s.images == 1
    extract_poses(root, tmp_path / "t.csv", cfg(), backend=FakeBackend(), show_progress=False)
    assert read_annotations(tmp_path / "t.csv").names == train
    with pytest.raises(ReidaugError, match="without the gallery folder bounding_box_test/"):
        extract_poses(root, tmp_path / "g.csv", cfg(split="gallery"), backend=FakeBackend())


def test_preview_grid(tmp_path):
    import cv2

    d = tmp_path / "imgs"
    make_crops(d, 5)
    png = tmp_path / "grid.png"
    c = cfg(preview_columns=3, preview_scale=1)
    s = extract_poses(d, tmp_path / "a.csv", c, backend=FakeBackend(), preview=png, show_progress=False)
    img = cv2.imread(str(png))
    assert s.preview == png and img.shape[:2] == (2 * (128 + 2) + 2, 3 * (64 + 2) + 2)


def test_errors(tmp_path):
    d = tmp_path / "imgs"
    make_crops(d, 1)
    fake = FakeBackend()
    with pytest.raises(ReidaugError, match="is not a folder"):
        extract_poses(tmp_path / "nope", tmp_path / "a.csv", cfg(), backend=fake)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReidaugError, match="no .jpg/.png images in"):
        extract_poses(tmp_path / "empty", tmp_path / "a.csv", cfg(), backend=fake)
    with pytest.raises(ReidaugError, match="unknown split 'foo'; choose from train, gallery, query"):
        extract_poses(d, tmp_path / "a.csv", cfg(split="foo"), backend=fake)
    with pytest.raises(ReidaugError, match="is a folder"):
        extract_poses(d, tmp_path, cfg(), backend=fake)
    with pytest.raises(ReidaugError, match="batch size must be at least 1"):
        extract_poses(d, tmp_path / "a.csv", cfg(batch_size=0), backend=fake)
    (tmp_path / "junk.csv").write_text("from,to\na,b\n")
    with pytest.raises(ReidaugError, match=r"cannot resume from .*junk.csv.*--overwrite"):
        extract_poses(d, tmp_path / "junk.csv", cfg(), backend=fake)
    with pytest.raises(
        ReidaugError, match="unknown pose backend 'nope'; choose from coco-json, keypointrcnn, mediapipe"
    ):
        base.build_backend(PoseConfig(backend="nope"))
    with pytest.raises(ReidaugError, match="runs on the CPU"):
        base.build_backend(PoseConfig(backend="mediapipe", device="cuda"))
    assert fake.seen == []


def test_config_file_matches_the_schema():
    from reidaug.config import load_config

    assert load_config(PoseConfig, "poses/default") == PoseConfig()


# ---------------------------------------------------------------------------------------------- the CLI


def test_cli_with_a_registered_backend(tmp_path, run_cli):
    base.register("fake", lambda c: FakeBackend())
    d = tmp_path / "imgs"
    make_crops(d, 3)
    (d / "empty.jpg").write_bytes(b"")
    out = tmp_path / "ann.csv"
    code, stdout, _ = run_cli("poses", "-i", d, "-o", out, "--backend", "fake", "--batch-size", "2", "-q")
    assert code == 0
    assert "extracted now" in stdout and "skipped 1: empty file: empty.jpg" in stdout
    assert len(read_annotations(out)) == 3
    code, _, err = run_cli("poses", "-i", d)
    assert (
        code == 2
        and err.strip() == "reidaug: error: --images and --out are required (or --fetch-models alone)"
    )
    code, _, err = run_cli("poses", "-i", d, "-o", out, "--backend", "openpose-json", "--overwrite")
    assert code == 2 and "needs --json DIR" in err


def test_cli_openpose_json_end_to_end(tmp_path, run_cli):
    d = tmp_path / "imgs"
    names = make_crops(d, 2)
    j = tmp_path / "json"
    j.mkdir()
    write_json(
        j / f"{Path(names[0]).stem}_keypoints.json", [flat({j: (10 + j, 20 + j, 0.9) for j in range(18)}, 18)]
    )
    out = tmp_path / "ann.csv"
    code, stdout, _ = run_cli("poses", "-i", d, "-o", out, "--backend", "openpose-json", "--json", j, "-q")
    assert code == 0
    ann = read_annotations(out)
    assert ann.names == [names[0]] and ann[names[0]][17].tolist() == [37, 27]
    assert "no OpenPose JSON" in stdout


# ----------------------------------------------------------------------------------------- Keypoint R-CNN


def test_keypointrcnn_detection_mapping():
    import torch

    from reidaug.pose.keypointrcnn import KeypointRCNNConfig, detection_to_coco18

    kp = torch.zeros(2, 17, 3)
    kp[1, :, 0] = torch.arange(17) + 0.7  # x
    kp[1, :, 1] = 2 * torch.arange(17) + 0.2  # y
    scores = torch.full((2, 17), 5.0)
    scores[1, 9] = 1.0  # left wrist below the logit threshold 2
    det = {"scores": torch.tensor([0.6, 0.9]), "keypoints": kp, "keypoints_scores": scores}
    out = detection_to_coco18(det, (128, 64), KeypointRCNNConfig())
    assert out[2].tolist() == [12, 6]  # COCO-17 6 = right shoulder -> [y, x] floored
    assert out[1].tolist() == [11, 6]  # neck: midpoint of 5 and 6 (x 6.2, y 11.2)
    assert out[7].tolist() == [MISSING, MISSING]
    weak = {**det, "scores": torch.tensor([0.3, 0.4])}
    assert (detection_to_coco18(weak, (128, 64), KeypointRCNNConfig()) == MISSING).all()
    empty = {
        "scores": torch.zeros(0),
        "keypoints": torch.zeros(0, 17, 3),
        "keypoints_scores": torch.zeros(0, 17),
    }
    assert (detection_to_coco18(empty, (128, 64), KeypointRCNNConfig()) == MISSING).all()


def test_keypointrcnn_weights_errors(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(
        ReidaugError, match=r"weights not found at .*hub/checkpoints/keypointrcnn_resnet50_fpn_coco"
    ):
        base.build_backend(PoseConfig(backend="keypointrcnn", device="cpu"))
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    c = PoseConfig(backend="keypointrcnn", device="cpu")
    c.keypointrcnn.weights = str(tmp_path / "gone.pth")
    with pytest.raises(ReidaugError, match=r"Keypoint R-CNN weights .*gone.pth not found"):
        base.build_backend(c)
    c.keypointrcnn.weights = str(bad)
    with pytest.raises(ReidaugError, match="is not a keypointrcnn_resnet50_fpn state dict"):
        base.build_backend(c)


@pytest.mark.slow
def test_keypointrcnn_runs_with_a_weights_file(tmp_path):
    """The real loading path (--weights) and a batched forward pass, on random weights."""
    import torch
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    from reidaug.pose.keypointrcnn import KeypointRCNN, KeypointRCNNConfig

    torch.manual_seed(0)
    w = tmp_path / "krcnn.pth"
    torch.save(keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict(), w)
    backend = KeypointRCNN(KeypointRCNNConfig(weights=str(w), min_size=128, min_box_score=0.0), "cpu")
    rpn = backend.model.rpn  # random weights: keep 10 proposals, not 1000, for a fast test
    rpn._pre_nms_top_n["testing"] = rpn._post_nms_top_n["testing"] = 10
    imgs = [np.full((128, 64, 3), v, np.uint8) for v in (40, 200)]
    out = backend.predict(imgs, ["a", "b"])
    assert len(out) == 2 and all(o.shape == (18, 2) and o.dtype == np.int32 for o in out)
    assert all(
        ((o == MISSING).all(1) | ((o >= 0).all(1) & (o[:, 0] < 128) & (o[:, 1] < 64))).all() for o in out
    )


# ------------------------------------------------------------------------------- BlazePose (pose extra)


def test_model_lookup_errors(tmp_path, monkeypatch):
    from reidaug.pose import mediapipe_backend as mb

    with pytest.raises(ReidaugError, match="not found"):
        mb.load_model(tmp_path / "missing.whl")
    fake = tmp_path / f"mediapipe-{mb.MEDIAPIPE_VERSION}-fake.whl"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr(mb.MODEL_MEMBER, b"not the model")
    with pytest.raises(ReidaugError, match="not the BlazePose full model of mediapipe 0.10.21"):
        mb.load_model(tmp_path)  # a folder holding the wheel
    with zipfile.ZipFile(tmp_path / "other.whl", "w") as z:
        z.writestr("x.txt", b"")
    with pytest.raises(
        ReidaugError, match="holds no mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
    ):
        mb.load_model(tmp_path / "other.whl")
    monkeypatch.setattr(mb, "_installed_model", lambda: None)
    monkeypatch.setenv("REIDAUG_MODELS", str(tmp_path / "none"))
    with pytest.raises(ReidaugError, match=r"run `reidaug poses --fetch-models` once"):
        mb.load_model()


def test_mediapipe_without_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # import fails as when not installed
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(ReidaugError, match=r"needs the pose extra: pip install 'reidaug\[pose\]'"):
        base.build_backend(PoseConfig(backend="mediapipe"))


@pytest.fixture(scope="module")
def blazepose():
    pytest.importorskip("ai_edge_litert", reason="the pose extra (ai-edge-litert) is not installed")
    from reidaug.pose.mediapipe_backend import BlazePose, MediaPipeConfig

    try:
        return BlazePose(MediaPipeConfig())
    except ReidaugError as e:
        pytest.skip(f"BlazePose model not installed: {e}")


def test_blazepose_on_real_crops(blazepose, market_samples, tmp_path):
    """PCKh >= 0.75 against the reference OpenPose keypoints (the acceptance threshold), deterministic."""
    from reidaug.metrics.pckh import pckh_annotations

    out = tmp_path / "ann.csv"
    s = extract_poses(market_samples, out, PoseConfig(), backend=blazepose, show_progress=False)
    assert (s.images, s.extracted, len(s.bad)) == (18, 18, 0)
    ref = read_annotations(market_samples / "annotation.csv")
    r = pckh_annotations(read_annotations(out), ref)
    assert r.value >= 0.75, r
    again = tmp_path / "again.csv"
    extract_poses(market_samples, again, PoseConfig(), backend=blazepose, show_progress=False)
    assert again.read_text() == out.read_text()


def test_fetch_is_a_no_op_when_the_wheel_is_there(blazepose, monkeypatch):
    from reidaug.pose import mediapipe_backend as mb

    if not mb._wheels(mb.models_dir()):
        pytest.skip("the model comes from an installed mediapipe or --models, not the models folder")
    monkeypatch.setattr(mb.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    assert mb.fetch_models() == mb._wheels(mb.models_dir())[-1]


def test_blazepose_blank_and_any_size(blazepose):
    blank = np.full((128, 64, 3), 127, np.uint8)
    tall = np.full((256, 96, 3), 127, np.uint8)
    out = blazepose.predict([blank, tall], ["a", "b"])
    assert out[0].shape == out[1].shape == (18, 2)
    ok = (out[1] >= 0).all(1)
    assert (out[1][ok, 0] < 256).all() and (out[1][ok, 1] < 96).all()


def test_format_is_the_annotation_format(tmp_path):
    """Rows are written with reidaug.data.keypoints' exact format (round trip through the reader)."""
    d = tmp_path / "imgs"
    make_crops(d, 2)
    out = tmp_path / "ann.csv"
    extract_poses(d, out, cfg(), backend=FakeBackend(), show_progress=False)
    assert out.read_text() == format_annotations(read_annotations(out))
