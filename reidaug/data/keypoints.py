"""OpenPose COCO-18 keypoints: joints, limbs, the annotation CSV, heatmaps and skeleton drawing.

Coordinates are `[y, x]` (row, column) integers in the 128x64 crop, -1 for a missing joint, as in the
annotation files pose-transfer research publishes (`name:keypoints_y:keypoints_x`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reidaug.data.market import check_cameras
from reidaug.errors import ReidaugError, offenders

# OpenPose semantics (the reference code's names for 14-17 are L/R-swapped; the on-disk order is the same).
JOINTS = (
    "nose", "neck",
    "r_shoulder", "r_elbow", "r_wrist",
    "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle",
    "l_hip", "l_knee", "l_ankle",
    "r_eye", "l_eye", "r_ear", "l_ear",
)  # fmt: skip
NUM_JOINTS = len(JOINTS)
J = {name: i for i, name in enumerate(JOINTS)}

# The 19 limbs used to draw skeletons.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)  # fmt: skip
# The 23 segments of the evaluation mask (architecture notes 11.2).
MASK_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (1, 16), (1, 17), (8, 11), (11, 5), (8, 2), (16, 17),
)  # fmt: skip
# Left/right channel pairs a horizontal flip must swap.
FLIP_PAIRS = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17))
TORSO = (J["r_shoulder"], J["l_shoulder"], J["r_hip"], J["l_hip"])
HEAD = (J["nose"], J["neck"], J["r_eye"], J["l_eye"], J["r_ear"], J["l_ear"])
MISSING = -1

# One RGB colour per joint, red through green, cyan, blue, magenta (visualisation only).
JOINT_COLORS = np.array([
    [255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0],
    [0, 255, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255],
    [0, 0, 255], [85, 0, 255], [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85],
], dtype=np.uint8)  # fmt: skip

HEADER = "name:keypoints_y:keypoints_x"


@dataclass
class Annotations:
    """Keypoints of many images: `names[i]` has `coords[i]`, an (18, 2) int array of [y, x]."""

    names: list[str]
    coords: np.ndarray  # (N, 18, 2) int32

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.int32).reshape(-1, NUM_JOINTS, 2)
        if len(self.names) != len(self.coords):
            raise ValueError(f"{len(self.names)} names for {len(self.coords)} keypoint rows")
        self._index = None

    def __len__(self) -> int:
        return len(self.names)

    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.names)}
        return self._index

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.coords[self.index()[name]]
        except KeyError:
            raise ReidaugError(f"no keypoints for image {name!r}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.index()

    def present(self) -> np.ndarray:
        """(N, 18) bool: joint detected."""
        return present(self.coords)

    def subset(self, names) -> Annotations:
        idx = [self.index()[n] for n in names]
        return Annotations([self.names[i] for i in idx], self.coords[idx])


def present(coords: np.ndarray) -> np.ndarray:
    """Which joints are detected: both coordinates non-negative."""
    coords = np.asarray(coords)
    return (coords[..., 0] >= 0) & (coords[..., 1] >= 0)


MAX_COORD = 2**15 - 1  # coordinates are stored as int16 in datasets; no crop is this large


def _parse_list(text: str, lineno: int, path) -> list[int]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        raise ReidaugError(f"{path}:{lineno}: keypoint list is not a JSON list: {text.strip()[:40]!r}") from None
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise ReidaugError(f"{path}:{lineno}: keypoints must be a list of integers: {text.strip()[:40]!r}")
    if len(values) != NUM_JOINTS:
        raise ReidaugError(f"{path}:{lineno}: expected {NUM_JOINTS} joints, got {len(values)}")
    if min(values) < MISSING:
        raise ReidaugError(f"{path}:{lineno}: negative coordinate {min(values)} (only {MISSING} marks a missing joint)")
    if max(values) > MAX_COORD:
        raise ReidaugError(f"{path}:{lineno}: coordinate {max(values)} is larger than any crop ({MAX_COORD} at most)")
    return values


def read_annotations(path: str | Path) -> Annotations:
    """Read a `name:keypoints_y:keypoints_x` file; one error line names the first malformed row."""
    path = Path(path)
    if not path.is_file():
        raise ReidaugError(f"annotation file {path} not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ReidaugError(f"{path}: not a UTF-8 text file (an annotation CSV starts with {HEADER!r})") from None
    if not lines or lines[0].strip() != HEADER:
        raise ReidaugError(f"{path}: first line must be {HEADER!r}")
    names, coords = [], []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split(":")
        if len(parts) != 3:
            raise ReidaugError(f"{path}:{lineno}: expected 3 colon-separated fields, got {len(parts)}")
        name = parts[0].strip()
        if not name:
            raise ReidaugError(f"{path}:{lineno}: a row needs an image name")
        ys = _parse_list(parts[1], lineno, path)
        xs = _parse_list(parts[2], lineno, path)
        names.append(name)
        coords.append(np.stack([ys, xs], axis=-1))
    dup = _duplicates(names)
    if dup:
        raise ReidaugError(f"{path}: duplicate image names: {offenders(dup)}")
    check_cameras(names, path)
    return Annotations(names, np.array(coords, dtype=np.int32).reshape(-1, NUM_JOINTS, 2))


def format_row(name: str, coords: np.ndarray) -> str:
    ys = ", ".join(str(int(v)) for v in coords[:, 0])
    xs = ", ".join(str(int(v)) for v in coords[:, 1])
    return f"{name}: [{ys}]: [{xs}]"


def format_annotations(ann: Annotations) -> str:
    """The exact text of the published files: header, `name: [ys]: [xs]` rows, trailing newline."""
    return "\n".join([HEADER, *(format_row(n, c) for n, c in zip(ann.names, ann.coords))]) + "\n"


def write_annotations(path: str | Path, ann: Annotations) -> None:
    from reidaug.utils.io import atomic_write_text

    atomic_write_text(path, format_annotations(ann))


def _duplicates(names) -> list[str]:
    seen, dup = set(), []
    for n in names:
        if n in seen:
            dup.append(n)
        seen.add(n)
    return dup


def heatmaps(coords, size: tuple[int, int] = (128, 64), sigma: float = 6.0):
    """Gaussian heatmaps (B, 18, H, W) from keypoints (B, 18, 2) [y, x], on the keypoints' device.

    Float keypoints keep their dtype; integer ones give float32. A single (18, 2) pose gives (18, H, W).

    Value exp(-((r - y)^2 + (c - x)^2) / (2 sigma^2)) over the whole grid, peak 1 at the joint, an
    all-zero channel for a missing joint (notes 1.4).
    """
    import torch

    kp = torch.as_tensor(coords)
    if kp.dim() not in (2, 3) or kp.shape[-2:] != (NUM_JOINTS, 2):
        raise ReidaugError(f"keypoints must have shape (B, {NUM_JOINTS}, 2) or ({NUM_JOINTS}, 2), got {tuple(kp.shape)}")
    squeeze = kp.dim() == 2
    if squeeze:
        kp = kp[None]
    dtype = kp.dtype if kp.is_floating_point() else torch.float32
    kp = kp.to(dtype)
    h, w = size
    rows = torch.arange(h, device=kp.device, dtype=dtype).view(1, 1, h, 1)
    cols = torch.arange(w, device=kp.device, dtype=dtype).view(1, 1, 1, w)
    y = kp[..., 0, None, None]
    x = kp[..., 1, None, None]
    maps = torch.exp(-((rows - y) ** 2 + (cols - x) ** 2) / (2 * sigma**2))
    valid = ((kp[..., 0] >= 0) & (kp[..., 1] >= 0)).to(maps.dtype)[..., None, None]
    maps = maps * valid
    return maps[0] if squeeze else maps


def draw_skeleton(image: np.ndarray, coords: np.ndarray, thickness: int = 1, radius: int = 2) -> np.ndarray:
    """A copy of an RGB uint8 image with the skeleton's limbs and joints drawn over it."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    ok = present(coords)
    for a, b in LIMBS:
        if ok[a] and ok[b]:
            color = tuple(int(v) for v in JOINT_COLORS[b])
            cv2.line(out, (int(coords[a, 1]), int(coords[a, 0])), (int(coords[b, 1]), int(coords[b, 0])), color,
                     thickness, cv2.LINE_AA)
    for j in range(NUM_JOINTS):
        if ok[j]:
            cv2.circle(out, (int(coords[j, 1]), int(coords[j, 0])), radius, tuple(int(v) for v in JOINT_COLORS[j]),
                       -1, cv2.LINE_AA)
    return out


def pose_image(coords: np.ndarray, size: tuple[int, int] = (128, 64)) -> np.ndarray:
    """The skeleton alone on black, as sample grids show a pose."""
    return draw_skeleton(np.zeros((*size, 3), np.uint8), coords)
