"""`reidaug poses --backend coco-json`: COCO keypoint files of other detectors, on hand-made files with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_poses import make_crops

from reidaug.data.keypoints import MISSING, read_annotations
from reidaug.errors import ReidaugError
from reidaug.pose.coco_json import CocoJSON, CocoJSONConfig, choose, read_coco_json, to_annotation

SIZE = (128, 64)


def coco17(score: float = 0.9, dx: float = 0.0) -> list[float]:
    """COCO-17 joint i at x = 2 i + dx, y = 5 i + 1 (pixel indices), all with `score`: the flat 51 numbers."""
    out = []
    for i in range(17):
        out += [2 * i + dx, 5 * i + 1, score]
    return out


def write(path, doc) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


def people_of(tmp_path, entries) -> dict:
    return read_coco_json(write(tmp_path / "k.json", entries))


def test_reorder_to_openpose_coco18_and_neck(tmp_path):
    people = people_of(tmp_path, [{"image_id": "a", "keypoints": coco17(), "score": 0.8}])
    ann = to_annotation(people["a"][0], SIZE, CocoJSONConfig())
    # COCO-18 j <- COCO-17 src: nose 0, r-sho 6, r-elb 8, r-wri 10, l-sho 5, l-elb 7, l-wri 9, r-hip 12, r-kne 14,
    # r-ank 16, l-hip 11, l-kne 13, l-ank 15, r-eye 2, l-eye 1, r-ear 4, l-ear 3; rows are [y, x]
    src = {0: 0, 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16, 11: 11, 12: 13, 13: 15, 14: 2, 15: 1,
           16: 4, 17: 3}  # fmt: skip
    for j, s in src.items():
        assert ann[j].tolist() == [5 * s + 1, 2 * s], j
    assert ann[1].tolist() == [29, 11]  # neck: midpoint of shoulders 5, 6 (y 28.5 rounds up, x 11)


def test_missing_and_low_score_joints(tmp_path):
    kp = coco17()
    kp[6 * 3 + 2] = 0.1  # right shoulder below the threshold 0.3: r-sho and the neck are missing
    kp[0:3] = [0, 0, 0]  # nose not annotated (COCO ground truth writes 0, 0, 0)
    kp[9 * 3 + 2] = 2  # a ground-truth visibility flag 2 passes
    kp[16 * 3 + 2] = 0.31  # right ankle just above
    people = people_of(tmp_path, [{"image_id": "a", "keypoints": kp}])
    ann = to_annotation(people["a"][0], SIZE, CocoJSONConfig())
    missing = [j for j in range(18) if ann[j].tolist() == [MISSING, MISSING]]
    assert missing == [0, 1, 2]
    assert ann[7].tolist() == [46, 18] and ann[10].tolist() == [81, 32]
    ann = to_annotation(people["a"][0], SIZE, CocoJSONConfig(min_score=0.5))
    assert ann[10].tolist() == [MISSING, MISSING]  # the 0.31 ankle is gone at 0.5


def test_rounding_and_outside_the_crop(tmp_path):
    kp = coco17()
    kp[0:3] = [3.49, 7.5, 0.9]  # nearest pixel: x 3, y 8 (COCO keypoints are pixel indices)
    kp[15 * 3 : 15 * 3 + 3] = [20, 140, 0.9]  # left ankle below a 128-pixel crop: missing
    ann = to_annotation(
        people_of(tmp_path, [{"image_id": "a", "keypoints": kp}])["a"][0], SIZE, CocoJSONConfig()
    )
    assert ann[0].tolist() == [8, 3]
    assert ann[13].tolist() == [MISSING, MISSING]


def test_several_people_by_score_and_by_box(tmp_path):
    passer_by = {"image_id": "a", "keypoints": coco17(0.95, dx=40), "score": 0.97, "bbox": [40, 0, 60, 128]}
    person = {"image_id": "a", "keypoints": coco17(0.9), "score": 0.9, "bbox": [0, 0, 64, 128]}
    people = people_of(tmp_path, [passer_by, person])["a"]
    assert choose(people, SIZE, CocoJSONConfig()).score == 0.97  # highest score
    assert choose(people, SIZE, CocoJSONConfig(person="box")).score == 0.9  # covers the whole crop
    assert choose(people, SIZE, CocoJSONConfig(min_person_score=0.99)) is None
    ann = to_annotation(None, SIZE, CocoJSONConfig())
    assert (ann == MISSING).all()
    # without a bbox the keypoints' own box is used
    people = people_of(tmp_path, [{**passer_by, "bbox": None}, {**person, "bbox": None}])["a"]
    assert choose(people, SIZE, CocoJSONConfig(person="box")).score == 0.9


def test_layouts_mmpose_dataset_dict_and_yolo_stems(tmp_path):
    mm = {"image_id": "x.jpg", "keypoints": np.asarray(coco17()).reshape(17, 3)[:, :2].tolist(),
          "keypoint_scores": [0.9] * 17}  # fmt: skip
    dataset = {"images": [{"id": 7, "file_name": "sub/b.jpg"}],
               "annotations": [{"image_id": 7, "category_id": 1, "keypoints": coco17()},
                               {"image_id": 7, "category_id": 2, "keypoints": [1]}]}  # fmt: skip
    assert set(read_coco_json(write(tmp_path / "m.json", [mm]))) == {"x.jpg"}
    got = read_coco_json(write(tmp_path / "d.json", dataset))
    assert list(got) == ["b.jpg"] and len(got["b.jpg"]) == 1  # category 2 is not a person
    np.testing.assert_array_equal(read_coco_json(write(tmp_path / "m.json", [mm]))["x.jpg"][0].keypoints,
                                  np.asarray(coco17()).reshape(17, 3))  # fmt: skip


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"foo": 1}, "holds no list of keypoint entries"),
        ([{"image_id": 3, "keypoints": coco17()}], "image_id 3 names no crop"),
        (
            [{"image_id": "a", "keypoints": [1, 2, 3]}],
            "keypoints must be 17 COCO joints with scores (51 numbers), got 3",
        ),
        (
            [{"image_id": "a", "keypoints": coco17(), "bbox": [1, 2]}],
            "bbox must be [x, y, w, h], got 2 values",
        ),
        (["a"], "entry 0 is not an object"),
    ],
)
def test_malformed_files_are_refused_with_one_line(tmp_path, doc, message):
    with pytest.raises(ReidaugError) as e:
        read_coco_json(write(tmp_path / "k.json", doc))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_not_json_and_a_folder(tmp_path):
    (tmp_path / "k.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ReidaugError, match="cannot read COCO keypoint file"):
        read_coco_json(tmp_path / "k.json")
    with pytest.raises(ReidaugError, match="is a folder; coco-json reads one file"):
        CocoJSON(CocoJSONConfig(file=str(tmp_path)))
    with pytest.raises(ReidaugError, match="needs --json FILE"):
        CocoJSON(CocoJSONConfig())


def test_cli_coco_json_end_to_end(tmp_path, run_cli):
    d = tmp_path / "imgs"
    names = make_crops(d, 3)
    stem = names[1].rsplit(".", 1)[0]
    f = write(tmp_path / "preds.json", [
        {"image_id": names[0], "category_id": 1, "keypoints": coco17(), "score": 0.9},
        {"image_id": stem, "category_id": 1, "keypoints": coco17(0.1), "score": 0.2},  # YOLO: the stem
    ])  # fmt: skip
    out = tmp_path / "ann.csv"
    code, stdout, _ = run_cli("poses", "-i", d, "-o", out, "--backend", "coco-json", "--json", f, "-q")
    assert code == 0, stdout
    ann = read_annotations(out)
    assert ann.names == names[:2]
    assert ann[names[0]][2].tolist() == [31, 12]  # r-sho = COCO-17 joint 6
    assert (ann[names[1]] == MISSING).all()  # every joint below 0.3
    assert "no entry in preds.json" in stdout
    code, _, err = run_cli(
        "poses", "-i", d, "-o", out, "--backend", "coco-json", "--json", tmp_path / "no.json"
    )
    assert code == 2 and err.strip() == f"reidaug: error: COCO keypoint file {tmp_path / 'no.json'} not found"
