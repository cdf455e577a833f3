"""Import keypoints in the COCO format that modern detectors write (mmpose, RTMPose/DWPose via rtmlib, ultralytics
YOLO-pose `save_json`, detectron2's COCOEvaluator): 17 COCO joints with scores, per image, in one JSON file.

Accepted layouts (one file for all crops):
  results list   [{"image_id": ..., "keypoints": [x, y, s] * 17, "score": ..., "bbox": [x, y, w, h]}, ...]
  dataset dict   {"images": [{"id", "file_name"}], "annotations": [...entries as above...]}, the same entries
                 also under "predictions" or "results"
Each entry names its crop by `file_name`, or by `image_id`: a string (the file name or its stem, as YOLO writes
it) or an integer resolved through the `images` table. `keypoints` is the flat COCO list of 51 numbers or 17
[x, y, s] triplets, or 17 [x, y] pairs with a separate `keypoint_scores` list (mmpose's instances).

A joint is present when its score is above `min_score` (COCO ground truth's visibility flags 1 and 2 pass the
default); COCO-18's neck is the midpoint of the shoulders when both are present (notes 14.2 item 11). One person
per crop: the highest-scoring one (`person: score`) or the one whose box best covers the crop (`person: box`,
intersection over union with the whole crop). COCO keypoints are pixel indices (pixel centres at integers), so
coordinates round to the nearest pixel.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reidaug.config import check_choice
from reidaug.errors import ReidaugError
from reidaug.pose.mapping import to_coco18, to_pixels

if TYPE_CHECKING:
    from reidaug.pose.base import PoseConfig

PERSON_RULES = ("score", "box")
COCO_JOINTS = 17
PERSON_CATEGORY = 1


@dataclass
class CocoJSONConfig:
    file: str | None = None  # the JSON file (--json)
    min_score: float = 0.3  # a joint is present when its score is above this
    person: str = "score"  # score: the highest-scoring person | box: the box that best covers the crop
    min_person_score: float = 0.0  # people below this are dropped before choosing

    def __post_init__(self) -> None:
        check_choice("coco_json.person", self.person, PERSON_RULES)


@dataclass
class Person:
    keypoints: np.ndarray  # (17, 3) x, y, score
    score: float
    bbox: np.ndarray | None  # x, y, w, h


def _keypoints(entry: dict, where: str) -> np.ndarray:
    raw, scores = entry.get("keypoints"), entry.get("keypoint_scores")
    try:
        arr = np.asarray(raw, dtype=np.float64)
        if scores is not None:
            arr = np.concatenate(
                [arr.reshape(COCO_JOINTS, 2), np.asarray(scores, dtype=np.float64).reshape(-1, 1)], 1
            )
        arr = arr.reshape(COCO_JOINTS, 3)
    except (TypeError, ValueError):
        n = np.size(raw) if raw is not None else "no"
        raise ReidaugError(
            f"{where}: keypoints must be 17 COCO joints with scores (51 numbers), got {n} values"
        ) from None
    if not np.isfinite(arr).all():
        raise ReidaugError(f"{where}: keypoints hold a non-finite number")
    return arr


def _person(entry: dict, where: str) -> Person:
    kp = _keypoints(entry, where)
    score = entry.get("score")
    score = float(score) if isinstance(score, (int, float)) else float(kp[:, 2].mean())
    bbox = entry.get("bbox")
    if bbox is not None:
        bbox = np.asarray(bbox, dtype=np.float64).reshape(-1)
        if bbox.size != 4:
            raise ReidaugError(f"{where}: bbox must be [x, y, w, h], got {bbox.size} values")
    return Person(kp, score, bbox)


def read_coco_json(path: str | Path) -> dict[str, list[Person]]:
    """{crop name or stem: [people]} from one COCO-format file; one error line for a malformed file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReidaugError(f"COCO keypoint file {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReidaugError(f"cannot read COCO keypoint file {path}: {e.__class__.__name__}: {e}") from None
    images: dict[int, str] = {}
    if isinstance(doc, dict):
        for img in doc.get("images") or []:
            if isinstance(img, dict) and "id" in img and "file_name" in img:
                images[img["id"]] = Path(str(img["file_name"])).name
        entries = next((doc[k] for k in ("annotations", "predictions", "results") if k in doc), None)
    else:
        entries = doc
    if not isinstance(entries, list):
        raise ReidaugError(f"{path} holds no list of keypoint entries (a COCO results list, or a dict with "
                           "'annotations')")  # fmt: skip
    people: dict[str, list[Person]] = {}
    for i, entry in enumerate(entries):
        where = f"{path} entry {i}"
        if not isinstance(entry, dict):
            raise ReidaugError(f"{where} is not an object")
        if entry.get("category_id", PERSON_CATEGORY) != PERSON_CATEGORY:
            continue
        name = entry.get("file_name")
        if name is None:
            image_id = entry.get("image_id")
            if isinstance(image_id, str):
                name = image_id
            elif image_id in images:
                name = images[image_id]
            else:
                raise ReidaugError(f"{where}: image_id {image_id!r} names no crop (no file_name, and no entry "
                                   "in the file's 'images' table)")  # fmt: skip
        people.setdefault(Path(str(name)).name, []).append(_person(entry, where))
    return people


def _box_iou(bbox: np.ndarray, size: tuple[int, int]) -> float:
    h, w = size
    x, y, bw, bh = bbox
    ix = max(0.0, min(x + bw, w) - max(x, 0.0))
    iy = max(0.0, min(y + bh, h) - max(y, 0.0))
    inter = ix * iy
    union = bw * bh + w * h - inter
    return inter / union if union > 0 else 0.0


def _keypoint_box(kp: np.ndarray, min_score: float) -> np.ndarray | None:
    ok = kp[:, 2] > min_score
    if not ok.any():
        return None
    lo, hi = kp[ok, :2].min(0), kp[ok, :2].max(0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])


def choose(people: list[Person], size: tuple[int, int], cfg: CocoJSONConfig) -> Person | None:
    """The kept person of a crop (H, W), or None when nobody passes `min_person_score`."""
    people = [p for p in people if p.score >= cfg.min_person_score]
    if not people:
        return None
    if cfg.person == "score":
        return max(people, key=lambda p: p.score)

    def cover(p: Person) -> float:
        box = p.bbox if p.bbox is not None else _keypoint_box(p.keypoints, cfg.min_score)
        return _box_iou(box, size) if box is not None else -1.0

    return max(people, key=lambda p: (cover(p), p.score))


def to_annotation(person: Person | None, size: tuple[int, int], cfg: CocoJSONConfig) -> np.ndarray:
    """(18, 2) [y, x] pixel indices in OpenPose COCO-18 order (all -1 without a person)."""
    if person is None:
        person = Person(np.zeros((COCO_JOINTS, 3)), 0.0, None)
    xy, present = to_coco18(person.keypoints[:, :2], person.keypoints[:, 2] > cfg.min_score, "coco17")
    return to_pixels(xy, present, size, continuous=False)


class CocoJSON:
    name = "coco-json"

    def __init__(self, cfg: CocoJSONConfig):
        if not cfg.file:
            raise ReidaugError("the coco-json backend needs --json FILE (a COCO keypoint results file)")
        self.cfg = cfg
        self.file = Path(cfg.file)
        if self.file.is_dir():
            raise ReidaugError(f"--json {self.file} is a folder; coco-json reads one file (openpose-json reads "
                               "a folder)")  # fmt: skip
        self.people = read_coco_json(self.file)

    def predict(self, images: Sequence[np.ndarray], names: Sequence[str]) -> list[np.ndarray | str]:
        out: list[np.ndarray | str] = []
        for img, name in zip(images, names):
            people = self.people.get(name, self.people.get(Path(name).stem))
            if people is None:
                out.append(f"no entry in {self.file.name}")
                continue
            out.append(to_annotation(choose(people, img.shape[:2], self.cfg), img.shape[:2], self.cfg))
        return out


def build(cfg: PoseConfig) -> CocoJSON:
    return CocoJSON(cfg.coco_json)
