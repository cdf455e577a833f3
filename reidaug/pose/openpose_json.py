"""Import the per-image JSON files the OpenPose binary writes (`--write_json`), COCO or BODY_25 layout.

OpenPose names them `<image stem>_keypoints.json`; each holds `people[].pose_keypoints_2d`, flat [x, y, c]
triplets (c = 0: joint not found) in the image's pixel frame. People are filtered as the reference
annotations were (architecture notes 1.2): fewer than `min_parts` joints or a mean joint confidence below
`min_mean_score` is dropped, and of the rest the person with the highest total confidence is kept. (The
reference's mean score also counted limb scores, which the JSON does not hold.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reidaug.errors import ReidaugError
from reidaug.pose.mapping import to_coco18, to_pixels

if TYPE_CHECKING:
    from reidaug.pose.base import PoseConfig

LAYOUT_BY_LENGTH = {18 * 3: "coco18", 25 * 3: "body25"}


@dataclass
class OpenPoseJSONConfig:
    json_dir: str | None = None  # the folder of OpenPose's JSON files (--json)
    min_confidence: float = 0.0  # a joint is present when its confidence is above this
    min_parts: int = 4
    min_mean_score: float = 0.4


def json_path(json_dir: Path, image_name: str) -> Path | None:
    """`<stem>_keypoints.json` (OpenPose's name), else `<stem>.json`; None when neither exists."""
    stem = Path(image_name).stem
    for cand in (json_dir / f"{stem}_keypoints.json", json_dir / f"{stem}.json"):
        if cand.is_file():
            return cand
    return None


def read_people(path: Path) -> tuple[str, list[np.ndarray]]:
    """(layout, [(K, 3) x, y, c per person]); ValueError with one line for a malformed file."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON ({e.__class__.__name__})") from None
    people = doc.get("people") if isinstance(doc, dict) else None
    if not isinstance(people, list):
        raise ValueError("no `people` list")
    layout, out = None, []
    for p in people:
        flat = p.get("pose_keypoints_2d") if isinstance(p, dict) else None
        if not isinstance(flat, list) or len(flat) not in LAYOUT_BY_LENGTH:
            n = len(flat) if isinstance(flat, list) else "no"
            raise ValueError(f"pose_keypoints_2d has {n} values (54 for COCO, 75 for BODY_25)")
        try:
            arr = np.asarray(flat, dtype=np.float64).reshape(-1, 3)
        except (TypeError, ValueError):
            raise ValueError("pose_keypoints_2d holds non-numbers") from None
        this = LAYOUT_BY_LENGTH[len(flat)]
        if layout not in (None, this):
            raise ValueError("people with different layouts")
        layout = this
        out.append(arr)
    return layout or "coco18", out


def best_person(people: list[np.ndarray], cfg: OpenPoseJSONConfig) -> np.ndarray | None:
    """The kept person's (K, 3) array, or None when every person is filtered out."""
    best, best_total = None, -np.inf
    for arr in people:
        found = arr[:, 2] > cfg.min_confidence
        n = int(found.sum())
        if n < cfg.min_parts or n == 0 or arr[found, 2].mean() < cfg.min_mean_score:
            continue
        total = arr[found, 2].sum()
        if total > best_total:
            best, best_total = arr, total
    return best


def import_json(path: Path, size: tuple[int, int], cfg: OpenPoseJSONConfig) -> np.ndarray:
    """(18, 2) [y, x] pixel indices from one OpenPose JSON file (all -1 when no person is kept)."""
    layout, people = read_people(path)
    person = best_person(people, cfg)
    k = 18 if layout == "coco18" else 25
    if person is None:
        person = np.zeros((k, 3))
    xy, present = to_coco18(person[:, :2], person[:, 2] > cfg.min_confidence, layout)
    return to_pixels(xy, present, size, continuous=False)


class OpenPoseJSON:
    name = "openpose-json"

    def __init__(self, cfg: OpenPoseJSONConfig):
        if not cfg.json_dir:
            raise ReidaugError("the openpose-json backend needs --json DIR (OpenPose's --write_json folder)")
        self.dir = Path(cfg.json_dir)
        if not self.dir.is_dir():
            raise ReidaugError(f"OpenPose JSON folder {self.dir} is not a folder")
        self.cfg = cfg

    def predict(self, images: Sequence[np.ndarray], names: Sequence[str]) -> list[np.ndarray | str]:
        out: list[np.ndarray | str] = []
        for img, name in zip(images, names):
            path = json_path(self.dir, name)
            if path is None:
                out.append(f"no OpenPose JSON (<stem>_keypoints.json) in {self.dir}")
                continue
            try:
                out.append(import_json(path, img.shape[:2], self.cfg))
            except ValueError as e:
                out.append(f"bad OpenPose JSON: {e}")
        return out


def build(cfg: PoseConfig) -> OpenPoseJSON:
    return OpenPoseJSON(cfg.openpose_json)
