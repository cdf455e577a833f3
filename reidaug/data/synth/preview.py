"""A grid of sample images with their keypoints drawn over them: rows of identities seen by different
cameras (each image plain, then with its skeleton), and a last row of distractor and junk images."""

from __future__ import annotations

import cv2
import numpy as np

from reidaug.data.images import encode_image, grid
from reidaug.data.keypoints import draw_skeleton

from .config import SynthConfig, validate
from .dataset import plan
from .render import ImageSpec, Renderer


def _pick(specs: list[ImageSpec], n: int) -> list[ImageSpec]:
    """Up to n images spread over the cameras (a round robin over the identity's tracks)."""
    by_cam: dict[int, list[ImageSpec]] = {}
    for s in specs:
        by_cam.setdefault(s.cam, []).append(s)
    out, k = [], 0
    while len(out) < min(n, len(specs)):
        for cam in sorted(by_cam):
            if k < len(by_cam[cam]) and len(out) < n:
                out.append(by_cam[cam][k])
        k += 1
    return out


def preview_grid(cfg: SynthConfig) -> np.ndarray:
    """The preview of the dataset `cfg` describes (the same pixels the dataset's JPEGs hold)."""
    validate(cfg)
    pv = cfg.preview
    specs = plan(cfg)
    r = Renderer(cfg)
    people = [s for s in specs["train"] + specs["gallery"] + specs["query"] if s.kind == "person"]
    pids = sorted({s.pid for s in people})
    chosen = [pids[int(i)] for i in np.linspace(0, len(pids) - 1, min(pv.ids, len(pids)))] if pids else []
    groups = [_pick([s for s in people if s.pid == pid], pv.per_id) for pid in chosen]
    others = [s for s in specs["gallery"] if s.kind != "person"]
    if others:
        step = max(1, len(others) // pv.per_id)
        groups.append(others[::step][: pv.per_id])
    ext = "." + cfg.synth.ext
    rows = []
    for g in groups:
        row = []
        for spec in g:
            out = r.render(spec)
            img = cv2.imdecode(
                np.frombuffer(encode_image(out.image, ext, out.quality), np.uint8), cv2.IMREAD_COLOR
            )
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            row += [img, draw_skeleton(img, out.keypoints)]
        rows.append(row)
    if not rows:
        return np.zeros((cfg.synth.height, cfg.synth.width, 3), np.uint8)
    g = grid(rows)
    return (
        cv2.resize(g, None, fx=pv.scale, fy=pv.scale, interpolation=cv2.INTER_NEAREST) if pv.scale > 1 else g
    )
