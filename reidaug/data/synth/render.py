"""One synthetic image from its spec: pose, identity, camera background, person, degradations.

Every image draws from three random streams seeded by (seed, split, index): the person's (pose, clothes
under the light), the background's and the camera's. A spec therefore renders to the same bytes in any
process and in any order, and `render(spec, person=False)` gives the very same background and camera
effects without the person (the plate the tests compare against).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from reidaug.data.keypoints import MISSING

from .camera import Camera
from .config import VIEWS, SynthConfig
from .person import Canvas, Identity, draw_person, sample_identity
from .pose import L_ANK, R_ANK, load_prior, sample_pose

SPLIT_CODES = {"train": 1, "gallery": 2, "query": 3}
STREAM_IDENTITY, STREAM_DISTRACTOR, STREAM_CAMERA = 11, 12, 13
KINDS = ("person", "distractor", "junk")


@dataclass(frozen=True)
class ImageSpec:
    """What to draw: `who` is the pid whose identity is drawn (distractor bodies: -1 - i)."""

    split: str
    index: int
    name: str
    pid: int
    cam: int  # 1-based
    kind: str
    who: int
    view: int  # the track's view (VIEWS index)


@dataclass
class Rendered:
    image: np.ndarray  # uint8 (H, W, 3) RGB
    keypoints: np.ndarray  # int (18, 2) [y, x], -1 = missing
    alpha: np.ndarray  # float32 (H, W): person coverage
    quality: int  # JPEG quality
    touched: np.ndarray  # bool (H, W): pixels the person or its shadow changed (before the camera's blur)


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one image: a counter-based generator keyed by (seed, split, index)."""
    return np.random.Generator(np.random.Philox(key=[seed, (SPLIT_CODES[split] << 40) + index]))


class Renderer:
    """Renders specs of one configuration; caches the prior, camera plates and identities."""

    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        self.prior = load_prior(cfg.pose.prior)
        self._cams: dict[int, Camera] = {}
        self._ids: dict[int, Identity] = {}
        vp = cfg.pose.view_probs
        w = np.array([vp.get(v, 0.0) for v in VIEWS], dtype=np.float64)
        self.view_cdf = np.cumsum(w / w.sum())[:-1]
        self._canvas = Canvas(cfg.synth.height, cfg.synth.width, cfg.body.supersample)

    def camera(self, cam: int) -> Camera:
        if cam not in self._cams:
            d = self.cfg.synth
            rng = np.random.default_rng([d.seed, STREAM_CAMERA, cam])
            self._cams[cam] = Camera(self.cfg.cameras[f"c{cam}"], rng, d.height, d.width)
        return self._cams[cam]

    def identity(self, who: int) -> Identity:
        if who not in self._ids:
            d = self.cfg.synth
            key = [d.seed, STREAM_IDENTITY, who] if who >= 0 else [d.seed, STREAM_DISTRACTOR, -who]
            if len(self._ids) > 4096:
                self._ids.clear()
            self._ids[who] = sample_identity(np.random.default_rng(key), self.cfg.appearance, self.cfg.body)
        return self._ids[who]

    def render(self, spec: ImageSpec, person: bool = True) -> Rendered:
        cfg, d = self.cfg, self.cfg.synth
        h, w = d.height, d.width
        rp = image_rng(d.seed, spec.split, spec.index)
        cam = self.camera(spec.cam)
        cd = cam.draw(rp)  # first, and always the same number of draws: the plate-only render matches
        bg = cam.background(cd)
        kp = np.full((18, 2), MISSING, np.int64)
        alpha = np.zeros((h, w), np.float32)
        touched = np.zeros((h, w), bool)
        draw = person
        zoom, shift = 1.0, (0.0, 0.0)
        if spec.kind == "distractor":  # background only, or a fragment of a body much too large
            if rp.random() < d.distractor_empty:
                draw = False
            zoom = rp.uniform(*d.fragment_zoom)
            shift = (rp.uniform(*d.fragment_shift[:2]) * zoom, rp.uniform(*d.fragment_shift[2:]))
        elif spec.kind == "junk":  # a bad detection: shifted sideways, or much too small
            if rp.random() < d.junk_sideways:
                shift = (0.0, rp.uniform(*d.junk_shift) * (1 if rp.random() < 0.5 else -1))
            else:
                zoom = rp.uniform(*d.junk_zoom)
                shift = (rp.uniform(*d.junk_small_shift[:2]), rp.uniform(*d.junk_small_shift[2:]))
        if rp.random() < cfg.pose.track_view_keep:
            view = spec.view
        else:
            view = int(np.searchsorted(self.view_cdf, rp.random(), side="right"))
        pose = sample_pose(rp, self.prior, view, cfg.pose, h, w, zoom=zoom, shift=shift)
        if draw:
            b = cfg.body
            who = self.identity(spec.who)
            canvas = self._canvas
            canvas.img.fill(0)
            kpf, vis = draw_person(canvas, pose, who, b, cfg.pose, rp, cfg.appearance.image_color_jitter)
            small = cv2.resize(canvas.img, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
            alpha = small[..., 3] * np.float32(1 / 255)
            rgb = small[..., :3]
            if b.shading > 0:  # darker toward the silhouette's edges: limbs look round
                k = max(3, int(b.shading_blur * pose.torso * 2) | 1)
                soft = cv2.blur(alpha, (k, k))
                rgb = rgb * (np.float32(1 - b.shading) + np.float32(b.shading) * soft)[..., None]
            bg = _shadow(bg, pose, b, cam.cfg.shadow * rp.uniform(*b.shadow_jitter), touched)
            touched |= alpha > 0
            bg = bg * (1.0 - alpha)[..., None] + rgb
            r = np.rint(kpf).astype(np.int64)
            ok = vis & (r[:, 0] >= 0) & (r[:, 0] < h) & (r[:, 1] >= 0) & (r[:, 1] < w)
            kp[ok] = r[ok]
        return Rendered(cam.degrade(bg, cd), kp, alpha, cd["jpeg"], touched)


def _shadow(bg: np.ndarray, pose, body, strength: float, touched: np.ndarray) -> np.ndarray:
    """A soft dark ellipse on the ground under the feet (drawn on a small window around it)."""
    h, w = bg.shape[:2]
    t = pose.torso
    feet = (pose.points[R_ANK] + pose.points[L_ANK]) / 2
    cy, cx = feet[0] + body.shadow_drop * t, feet[1]
    rx, ry = body.shadow_size[0] * t, body.shadow_size[1] * t
    blur = max(0.5, body.shadow_blur * t)
    pad = 3 * blur
    y0, y1 = max(0, int(cy - ry - pad)), min(h, int(cy + ry + pad) + 1)
    x0, x1 = max(0, int(cx - rx - pad)), min(w, int(cx + rx + pad) + 1)
    if strength <= 0 or y1 <= y0 or x1 <= x0:
        return bg
    m = np.zeros((y1 - y0, x1 - x0), np.float32)
    c = (int(round((cx - x0) * 16)), int(round((cy - y0) * 16)))
    cv2.ellipse(m, c, (int(rx * 16), int(ry * 16)), 0, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
    m = cv2.GaussianBlur(m, (0, 0), blur)
    bg[y0:y1, x0:x1] *= (1.0 - strength * m)[..., None]
    touched[y0:y1, x0:x1] |= m > 0
    return bg
