"""BlazePose (MediaPipe Pose, full model) on re-ID crops, run offline as a plain TFLite model.

MediaPipe 0.10.21 is the last release whose wheel embeds the BlazePose models; later ones download them at
run time. reidaug reads `pose_landmark_full.tflite` straight out of that wheel (never copied into the
repository) and runs it with `ai-edge-litert` in the main environment (numpy 2 is fine), so neither
MediaPipe's runtime nor its dependencies (numpy<2, jax, a second OpenCV) are installed. The model is read,
in order, from `--models` (the wheel, the .tflite, or a folder holding either), from the wheel that
`reidaug poses --fetch-models` puts in the models folder (`$REIDAUG_MODELS`, default
`<sys.prefix>/share/reidaug`), or from an installed `mediapipe` 0.10.21 (located, not imported).

MediaPipe's own person detector misses most 128x64 crops (heads are about 10 px), so the landmark model runs
directly on a square region around the crop (side `roi_scale` x crop height, border replicated), then again
on the region MediaPipe derives from the previous pass's two auxiliary keypoints (centre = hip centre,
radius = distance to the second point, rotated so the body points up, scaled by 1.25).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reidaug.data.keypoints import J
from reidaug.errors import ReidaugError
from reidaug.pose.mapping import to_coco18, to_pixels

if TYPE_CHECKING:
    from reidaug.pose.base import PoseConfig

MEDIAPIPE_VERSION = "0.10.21"
MODEL_MEMBER = "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
MODEL_SHA256 = "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"
# Every platform's wheel holds the same model; fetching one fixed wheel works on any host and Python.
WHEEL_PLATFORM = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
                  "--abi", "cp311")  # fmt: skip

INPUT_SIZE = 256  # the landmark model's square input
NUM_LANDMARKS = 33  # then 2 auxiliary keypoints (ROI centre, ROI radius) and 4 unused
AUX_CENTER, AUX_SCALE = 33, 34


@dataclass
class MediaPipeConfig:
    models: str | None = (
        None  # the mediapipe 0.10.21 wheel, a folder holding it, or pose_landmark_full.tflite
    )
    num_threads: int = 1  # TFLite CPU threads per process
    roi_scale: float = 1.25  # first pass: square side = roi_scale x crop height, centred on the crop
    passes: int = 2  # pass k + 1 runs on the region derived from pass k's auxiliary keypoints
    aux_roi_scale: float = 1.25  # MediaPipe's enlargement of the auxiliary-keypoint region
    min_pose_score: float = 0.5  # the model's pose-presence output below this: no person (all -1)
    visibility: float = 0.5  # a joint below this visibility is -1
    face_visibility: float = 0.9  # stricter for nose, eyes and ears (false joints on back views)
    # COCO-18 joints dropped when the shoulders show a back view (the person's right shoulder on the image
    # right): nose and eyes, which BlazePose predicts with high visibility on the back of a head.
    back_view_drop: list[int] = field(default_factory=lambda: [0, 14, 15])


BLAZEPOSE_FACE = (0, 2, 5, 7, 8)  # nose, eyes, ears


def models_dir() -> Path:
    return Path(os.environ.get("REIDAUG_MODELS") or Path(sys.prefix) / "share" / "reidaug")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _from_wheel(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as z:
            return z.read(MODEL_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise ReidaugError(
            f"{wheel} holds no {MODEL_MEMBER} ({e.__class__.__name__}); "
            f"use the mediapipe {MEDIAPIPE_VERSION} wheel"
        ) from None


def _wheels(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))


def _read_source(path: Path) -> bytes:
    """The model bytes of a wheel, a .tflite file, or a folder holding either."""
    if path.is_dir():
        for cand in (path / Path(MODEL_MEMBER).name, path / MODEL_MEMBER):
            if cand.is_file():
                return cand.read_bytes()
        wheels = _wheels(path)
        if not wheels:
            raise ReidaugError(
                f"{path} holds neither {Path(MODEL_MEMBER).name} nor a mediapipe {MEDIAPIPE_VERSION} wheel"
            )
        return _from_wheel(wheels[-1])
    if not path.is_file():
        raise ReidaugError(f"BlazePose models {path} not found")
    return _from_wheel(path) if path.suffix == ".whl" else path.read_bytes()


def _installed_model() -> Path | None:
    """pose_landmark_full.tflite of an installed mediapipe distribution, located without importing it."""
    from importlib import metadata

    try:
        dist = metadata.distribution("mediapipe")
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(MODEL_MEMBER)))
    return path if path.is_file() else None


def load_model(models: str | Path | None = None) -> tuple[bytes, str]:
    """(model bytes, where they came from): `models` if given, else the fetched wheel in the models folder,
    else an installed mediapipe; the bytes must be the model of mediapipe 0.10.21 (sha256)."""
    if models is not None:
        sources = [Path(models)]
    else:
        sources = [*_wheels(models_dir())[-1:], *filter(None, [_installed_model()])]
        if not sources:
            raise ReidaugError(
                f"BlazePose model not found: run `reidaug poses --fetch-models` once (pip downloads the "
                f"mediapipe {MEDIAPIPE_VERSION} wheel, no dependencies, into {models_dir()}), or pass "
                f"--models PATH (that wheel or pose_landmark_full.tflite)"
            )
    for source in sources:
        data = _read_source(source)
        if _sha256(data) == MODEL_SHA256:
            return data, str(source)
    raise ReidaugError(
        f"{sources[0]}: not the BlazePose full model of mediapipe {MEDIAPIPE_VERSION} (sha256 differs)"
    )


def fetch_models(dest: str | Path | None = None) -> Path:
    """Download the mediapipe 0.10.21 wheel (no dependencies) with pip into `dest`; a no-op when it is there."""
    dest = Path(dest) if dest is not None else models_dir()
    for wheel in _wheels(dest):
        if _sha256(_from_wheel(wheel)) == MODEL_SHA256:
            return wheel
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               *WHEEL_PLATFORM, "--dest", tmp, f"mediapipe=={MEDIAPIPE_VERSION}"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = _wheels(Path(tmp))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise ReidaugError(f"pip could not download mediapipe=={MEDIAPIPE_VERSION}: {last}")
        if _sha256(_from_wheel(wheels[0])) != MODEL_SHA256:
            raise ReidaugError(
                f"the downloaded mediapipe {MEDIAPIPE_VERSION} wheel holds a different pose model"
            )
        target = dest / wheels[0].name
        os.replace(wheels[0], target)
    return target


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def roi_transform(cx: float, cy: float, side: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) mapping model-input coordinates u (0..256) to crop coordinates p = A u + b, both continuous
    (pixel i covers [i, i + 1)): the square of `side` centred at (cx, cy), rotated by `angle` (radians)."""
    s = side / INPUT_SIZE
    c, n = np.cos(angle), np.sin(angle)
    a = s * np.array([[c, -n], [n, c]])
    b = np.array([cx, cy]) - a @ np.full(2, INPUT_SIZE / 2)
    return a, b


def roi_from_aux(
    center: np.ndarray, scale_point: np.ndarray, enlarge: float
) -> tuple[float, float, float, float]:
    """MediaPipe's next region from the two auxiliary keypoints (crop coordinates): a square centred on the
    first, side 2 x their distance x `enlarge`, rotated so that the second point is straight up."""
    dx, dy = scale_point - center
    angle = np.pi / 2 - np.arctan2(-dy, dx)
    angle = (angle + np.pi) % (2 * np.pi) - np.pi
    return float(center[0]), float(center[1]), float(2 * np.hypot(dx, dy) * enlarge), float(angle)


def blazepose_to_coco18(
    lm: np.ndarray, score: float, size: tuple[int, int], cfg: MediaPipeConfig
) -> np.ndarray:
    """(18, 2) [y, x] pixel indices from (>= 33, >= 4) BlazePose landmarks (x, y in crop coordinates,
    visibility logit in column 3) and the pose score: all -1 below `min_pose_score`."""
    thresholds = np.full(NUM_LANDMARKS, cfg.visibility)
    thresholds[list(BLAZEPOSE_FACE)] = cfg.face_visibility
    ok = (_sigmoid(lm[:NUM_LANDMARKS, 3]) >= thresholds) & (score >= cfg.min_pose_score)
    xy, present = to_coco18(lm[:NUM_LANDMARKS, :2], ok, "blazepose33")
    r, left = J["r_shoulder"], J["l_shoulder"]
    if present[r] and present[left] and xy[r, 0] > xy[left, 0]:  # right shoulder on the image right
        present[list(cfg.back_view_drop)] = False
    return to_pixels(xy, present, size, continuous=True)


class BlazePose:
    """BlazePose full landmarks on crops, mapped to COCO-18 (see the module docstring)."""

    name = "mediapipe"

    def __init__(self, cfg: MediaPipeConfig, model: bytes | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ReidaugError(
                "the mediapipe backend needs the pose extra: pip install 'reidaug[pose]' (ai-edge-litert)"
            ) from None
        if cfg.passes < 1:
            raise ReidaugError(f"mediapipe.passes must be at least 1, got {cfg.passes}")
        self.cfg = cfg
        self.source = "model bytes"
        if model is None:
            model, self.source = load_model(cfg.models)
        with _quiet_stderr():  # TFLite announces its XNNPACK delegate on stderr
            self.interp = Interpreter(model_content=model, num_threads=max(1, cfg.num_threads))
            self.interp.allocate_tensors()
        self._input = self.interp.get_input_details()[0]["index"]
        outputs = {d["name"]: d["index"] for d in self.interp.get_output_details()}
        self._landmarks, self._score = outputs["Identity"], outputs["Identity_1"]

    def run(self, img: np.ndarray, roi: tuple[float, float, float, float]) -> tuple[np.ndarray, float]:
        """One landmark pass on the region `roi` (cx, cy, side, angle): (39, 5) landmarks with x, y in crop
        coordinates (z, visibility and presence logits untouched), and the pose-presence score."""
        import cv2

        a, b = roi_transform(*roi)
        # warpAffine samples the crop at pixel indices: index = A (u_index + 0.5) + b - 0.5.
        m = np.hstack([a, (a @ np.full(2, 0.5) + b - 0.5)[:, None]])
        x = cv2.warpAffine(img, m, (INPUT_SIZE, INPUT_SIZE), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        self.interp.set_tensor(self._input, (x.astype(np.float32) / 255.0)[None])
        self.interp.invoke()
        lm = self.interp.get_tensor(self._landmarks)[0].reshape(-1, 5).astype(np.float64)
        lm[:, :2] = lm[:, :2] @ a.T + b
        return lm, float(self.interp.get_tensor(self._score).reshape(-1)[0])

    def landmarks(self, img: np.ndarray) -> tuple[np.ndarray, float]:
        """All passes on one crop: the last pass's (39, 5) landmarks and pose score."""
        h, w = img.shape[:2]
        first = roi = (w / 2, h / 2, self.cfg.roi_scale * h, 0.0)
        for p in range(self.cfg.passes):
            lm, score = self.run(img, roi)
            if p + 1 < self.cfg.passes:
                roi = roi_from_aux(lm[AUX_CENTER, :2], lm[AUX_SCALE, :2], self.cfg.aux_roi_scale)
                if not (np.isfinite(roi).all() and roi[2] >= 1.0):
                    roi = first
        return lm, score

    def predict(self, images: Sequence[np.ndarray], names: Sequence[str]) -> list[np.ndarray | str]:
        out = []
        for img in images:
            lm, score = self.landmarks(img)
            out.append(blazepose_to_coco18(lm, score, img.shape[:2], self.cfg))
        return out


def build(cfg: PoseConfig) -> BlazePose:
    if cfg.device not in ("auto", "cpu"):
        raise ReidaugError(
            f"the mediapipe backend runs on the CPU; --device {cfg.device} is for keypointrcnn"
        )
    return BlazePose(cfg.mediapipe)


class _quiet_stderr:
    """Silence file descriptor 2 (C++ log lines) for the duration of the block."""

    def __enter__(self):
        sys.stderr.flush()
        try:
            self._saved = os.dup(2)
        except OSError:
            self._saved = None
            return self
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
        return False
