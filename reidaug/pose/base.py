"""Pose extraction: the backend protocol and registry, and the batched, resumable extraction loop.

A backend turns a batch of RGB crops into COCO-18 keypoints ([y, x] pixel indices of each crop, -1 for a
joint not found, all -1 when no person is found). The loop lists the images, skips those the output already
has, checks every image (unreadable, empty, wrong size: listed and skipped, never fatal), runs the backend
batch by batch with a progress bar, and appends each batch to a hidden `.NAME.partial` file beside the
output, so an interrupted run loses at most one batch. At the end the output (its old rows first, then the
new rows in file-name order) is written atomically and the partial file removed; a fresh run and an
interrupted, resumed run write the same file.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from reidaug.data.keypoints import (
    HEADER,
    MISSING,
    NUM_JOINTS,
    Annotations,
    format_row,
    read_annotations,
    write_annotations,
)
from reidaug.data.market import IMAGE_EXTS, SPLITS
from reidaug.errors import ReidaugError
from reidaug.pose.coco_json import CocoJSONConfig
from reidaug.pose.keypointrcnn import KeypointRCNNConfig
from reidaug.pose.mediapipe_backend import MediaPipeConfig
from reidaug.pose.openpose_json import OpenPoseJSONConfig


@dataclass
class PoseConfig:
    """`reidaug poses` settings (configs/poses/default.yaml)."""

    backend: str = "mediapipe"  # mediapipe | keypointrcnn | openpose-json | coco-json
    batch_size: int = 32  # images per backend call (and per checkpoint of the partial file)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (keypointrcnn); mediapipe runs on the CPU
    split: str = "train"  # the folder read when --images is a Market root: train | gallery | query
    image_size: list[int] | None = field(default_factory=lambda: [128, 64])  # H, W; null: any size
    preview_images: int = 24  # images drawn by --preview, evenly spaced over the sorted names
    preview_columns: int = 12
    preview_scale: int = 2  # tiles are drawn at this multiple of the crop size
    mediapipe: MediaPipeConfig = field(default_factory=MediaPipeConfig)
    keypointrcnn: KeypointRCNNConfig = field(default_factory=KeypointRCNNConfig)
    openpose_json: OpenPoseJSONConfig = field(default_factory=OpenPoseJSONConfig)
    coco_json: CocoJSONConfig = field(default_factory=CocoJSONConfig)


class PoseBackend(Protocol):
    name: str

    def predict(self, images: Sequence[np.ndarray], names: Sequence[str]) -> list[np.ndarray | str]:
        """Per image, (18, 2) int32 [y, x] in its pixel frame (all -1: no person), or a string saying why
        the image cannot be processed (it is then listed as bad and skipped)."""
        ...


# --backend name -> module defining `build(cfg: PoseConfig) -> PoseBackend`.
BACKENDS: dict[str, str] = {
    "mediapipe": "reidaug.pose.mediapipe_backend",
    "keypointrcnn": "reidaug.pose.keypointrcnn",
    "openpose-json": "reidaug.pose.openpose_json",
    "coco-json": "reidaug.pose.coco_json",
}
_BUILDERS: dict[str, Callable[[PoseConfig], PoseBackend]] = {}


def register(name: str, build: Callable[[PoseConfig], PoseBackend]) -> None:
    """Add a backend (a plugin, a test double) under `name`."""
    _BUILDERS[name] = build


def backend_names() -> list[str]:
    return sorted(set(BACKENDS) | set(_BUILDERS))


def build_backend(cfg: PoseConfig) -> PoseBackend:
    """The configured backend, ready to run: missing models or packages fail here, before any image."""
    name = cfg.backend
    if name in _BUILDERS:
        return _BUILDERS[name](cfg)
    if name not in BACKENDS:
        raise ReidaugError(f"unknown pose backend {name!r}; choose from {', '.join(backend_names())}")
    return importlib.import_module(BACKENDS[name]).build(cfg)


@dataclass
class PoseSummary:
    backend: str
    out: Path
    images: int = 0  # images found in the input folder
    resumed: int = 0  # already in the output (or its partial file), not extracted again
    extracted: int = 0  # rows added by this run
    no_pose: int = 0  # of them, images where no person was found (all -1 rows)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (name, reason): skipped images
    rows: int = 0  # rows in the output file
    extra_rows: int = 0  # rows of the output whose image is not in the input folder (kept)
    seconds: float = 0.0
    preview: Path | None = None
    skipped_list: Path | None = None  # the file listing every bad image, when there are any

    @property
    def ms_per_image(self) -> float:
        return 1000 * self.seconds / self.extracted if self.extracted else float("nan")


def list_images(images: str | Path, split: str = "train") -> tuple[Path, list[str]]:
    """The folder to read and its sorted image file names. A Market root (a folder with bounding_box_train,
    bounding_box_test or query) is read at its `split` folder; any other folder directly (not recursive)."""
    root = Path(images)
    if not root.is_dir():
        raise ReidaugError(f"image folder {root} is not a folder")
    if split not in SPLITS:
        raise ReidaugError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    folder = root
    if any((root / d).is_dir() for d in SPLITS.values()):
        folder = root / SPLITS[split]
        if not folder.is_dir():
            raise ReidaugError(f"{root} is a Market root without the {split} folder {SPLITS[split]}/")
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.is_dir())
    if not names:
        raise ReidaugError(f"no .jpg/.png images in {folder}")
    return folder, names


def load_checked(path: Path, size: tuple[int, int] | None) -> np.ndarray | str:
    """The RGB crop, or why it is bad: empty file, unreadable, or not `size` (H, W)."""
    import cv2

    try:
        if path.stat().st_size == 0:
            return "empty file"
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        return "unreadable (not a decodable image)"
    if size is not None and tuple(img.shape[:2]) != tuple(size):
        return f"wrong size {img.shape[0]}x{img.shape[1]} (expected {size[0]}x{size[1]})"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def partial_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def skipped_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.skipped.txt")


def _read_partial(path: Path) -> Annotations:
    """Rows of an interrupted run; a last line cut in the middle is dropped."""
    text = path.read_text()
    if HEADER.startswith(text.strip()):  # interrupted before its first row
        return Annotations([], np.zeros((0, NUM_JOINTS, 2)))
    if not text.startswith(HEADER):
        raise ReidaugError(f"{path} is not a partial annotation file; delete it or pass --overwrite")
    complete = text[: text.rfind("\n") + 1]
    if complete != text:
        path.write_text(complete)
    return read_annotations(path)


def _merge(first: Annotations, second: Annotations) -> Annotations:
    """Rows of `first`, then the rows of `second` whose names `first` lacks."""
    extra = [i for i, n in enumerate(second.names) if n not in first]
    names = first.names + [second.names[i] for i in extra]
    coords = np.concatenate([first.coords, second.coords[extra]]) if extra else first.coords
    return Annotations(names, coords)


def extract_poses(
    images: str | Path,
    out: str | Path,
    cfg: PoseConfig | None = None,
    backend: PoseBackend | None = None,
    overwrite: bool = False,
    preview: str | Path | None = None,
    show_progress: bool = True,
) -> PoseSummary:
    """Write the annotation CSV `out` for the images of `images` (a folder or a Market root).

    Resumes by default: images already in `out` (or in the partial file of an interrupted run) are not
    extracted again, and their rows are kept. `overwrite` starts from nothing.
    """
    from reidaug.utils.io import atomic_write_text
    from reidaug.utils.progress import progress

    cfg = cfg or PoseConfig()
    out = Path(out)
    if out.is_dir():
        raise ReidaugError(f"output {out} is a folder; give a file name such as {out / 'annotation.csv'}")
    if preview is not None and Path(preview).is_dir():
        raise ReidaugError(f"--preview {preview} is a folder; give a file name such as {Path(preview) / 'grid.png'}")
    if cfg.batch_size < 1:
        raise ReidaugError(f"batch size must be at least 1, got {cfg.batch_size}")
    size = tuple(cfg.image_size) if cfg.image_size else None
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ReidaugError(f"image_size must be [H, W] with positive values, got {list(size)}")
    folder, names = list_images(images, cfg.split)

    partial = partial_path(out)
    empty = Annotations([], np.zeros((0, NUM_JOINTS, 2)))
    stale = overwrite or partial.exists() or not out.exists()  # the output must be (re)written
    if overwrite:
        partial.unlink(missing_ok=True)
        done = empty
    else:
        try:
            done = read_annotations(out) if out.exists() else empty
        except ReidaugError as e:
            raise ReidaugError(f"cannot resume from {out}: {e} (pass --overwrite to replace it)") from None
        if partial.exists():
            done = _merge(done, _read_partial(partial))
    todo = [n for n in names if n not in done]
    summary = PoseSummary(backend=cfg.backend, out=out, images=len(names), resumed=len(names) - len(todo))

    new_names: list[str] = []
    new_coords: list[np.ndarray] = []
    if todo:
        backend = backend or build_backend(cfg)
        summary.backend = getattr(backend, "name", cfg.backend)
        t0 = time.perf_counter()  # extraction time, without loading the model
        if not partial.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(HEADER + "\n")
        with progress(disable=not show_progress) as bar, partial.open("a") as log:
            task = bar.add_task(f"poses ({summary.backend})", total=len(todo), info="", unit="img")
            for s in range(0, len(todo), cfg.batch_size):
                batch = todo[s : s + cfg.batch_size]
                crops, crop_names = [], []
                for n in batch:
                    img = load_checked(folder / n, size)
                    if isinstance(img, str):
                        summary.bad.append((n, img))
                    else:
                        crops.append(img)
                        crop_names.append(n)
                results = backend.predict(crops, crop_names) if crops else []
                if len(results) != len(crops):
                    raise RuntimeError(
                        f"backend {summary.backend} returned {len(results)} results for {len(crops)}"
                    )
                lines = []
                for n, r in zip(crop_names, results):
                    if isinstance(r, str):
                        summary.bad.append((n, r))
                        continue
                    r = np.asarray(r, dtype=np.int32).reshape(NUM_JOINTS, 2)
                    summary.no_pose += bool((r == MISSING).all())
                    new_names.append(n)
                    new_coords.append(r)
                    lines.append(format_row(n, r) + "\n")
                log.write("".join(lines))
                log.flush()
                bar.update(
                    task, advance=len(batch), info=f"no pose {summary.no_pose}, bad {len(summary.bad)}"
                )
        summary.seconds = time.perf_counter() - t0
    summary.extracted = len(new_names)

    if new_names:
        done = Annotations(done.names + new_names, np.concatenate([done.coords, np.stack(new_coords)]))
    if new_names or stale:
        write_annotations(out, done)
    partial.unlink(missing_ok=True)
    summary.rows = len(done)
    in_folder = set(names)
    summary.extra_rows = sum(n not in in_folder for n in done.names)

    listing = skipped_path(out)
    if summary.bad:
        atomic_write_text(listing, "".join(f"{n}\t{r}\n" for n, r in summary.bad))
        summary.skipped_list = listing
    else:
        listing.unlink(missing_ok=True)
    if preview is not None:
        summary.preview = write_preview(preview, folder, done.subset([n for n in names if n in done]), cfg)
    return summary


def write_preview(path: str | Path, folder: Path, ann: Annotations, cfg: PoseConfig) -> Path:
    """A grid of crops with their skeletons drawn over them, evenly spaced over the sorted names."""
    import cv2

    from reidaug.data.images import grid, read_image, write_image
    from reidaug.data.keypoints import draw_skeleton

    path = Path(path)
    if not len(ann):
        raise ReidaugError("no extracted poses to preview")
    order = np.argsort(np.array(ann.names, dtype=object), kind="stable")
    k = min(cfg.preview_images, len(order))
    pick = order[np.linspace(0, len(order) - 1, k).round().astype(int)]
    h, w = tuple(cfg.image_size) if cfg.image_size else read_image(folder / ann.names[pick[0]]).shape[:2]
    s = max(1, int(cfg.preview_scale))
    tiles = []
    for i in pick:
        img = read_image(folder / ann.names[i])
        kp = ann.coords[i].astype(np.float64)
        sy, sx = s * h / img.shape[0], s * w / img.shape[1]
        img = cv2.resize(img, (s * w, s * h), interpolation=cv2.INTER_LINEAR)
        ok = (kp >= 0).all(axis=1)
        kp = np.where(ok[:, None], np.floor((kp + 0.5) * [sy, sx]), MISSING).astype(np.int32)
        tiles.append(draw_skeleton(img, kp, thickness=s, radius=s + 1))
    cols = max(1, cfg.preview_columns)
    write_image(path, grid([tiles[i : i + cols] for i in range(0, len(tiles), cols)]))
    return path
