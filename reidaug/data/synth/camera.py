"""The six cameras: a procedurally drawn background plate each (wall or vegetation above a textured ground,
with structures and props), and the camera's light, colour cast, resolution loss, blur, noise and JPEG.

A plate is drawn once per (seed, camera) and cached; each image views a random window of it. Everything
per image comes from the image's own random stream, so the bytes do not depend on the order of rendering.
"""

from __future__ import annotations

import cv2
import numpy as np

from .config import CameraConfig

PLATE_BLUR = 0.6  # softens the plate's primitives to the crop's optics (sigma, plate pixels)
TEXTURE_CELL = 10  # plate pixels per cell of the smooth random texture
LUMA = np.array([0.299, 0.587, 0.114])  # grey level of RGB (saturation is a blend toward it)
NOISE_BANK = 2  # noise bank size in crop sizes (per axis); windows of it give every image its own noise


def _shade(c, f: float) -> tuple:
    return tuple(float(np.clip(v * f, 0, 255)) for v in c)


def _wall(img: np.ndarray, cam: CameraConfig, rng: np.random.Generator, hz: int) -> None:
    h, w = img.shape[:2]
    s = cam.pattern_px
    d = cam.wall_detail
    kind = cam.wall_pattern
    if kind == "windows":
        floor_h, win_w = s * 3.2, s * 2.2
        y = -rng.uniform(0, floor_h)
        while y < hz - s:
            x = -rng.uniform(0, win_w)
            while x < w:
                x0, y0 = int(x + s * 0.4), int(y + s * 0.6)
                x1, y1 = int(x + win_w - s * 0.4), int(min(y + floor_h - s * 0.6, hz - 2))
                if y1 > y0:
                    cv2.rectangle(img, (x0, y0), (x1, y1), _shade(d, rng.uniform(0.8, 1.15)), -1)
                    cv2.rectangle(img, (x0, y0), (x1, y1), _shade(cam.wall, 1.15), 1)
                    cv2.line(img, (x0, (y0 + y1) // 2), (x1, (y0 + y1) // 2), _shade(d, 0.7), 1)
                x += win_w
            y += floor_h
    elif kind == "bricks":
        bh, bw = s, s * 2.2
        for r, y in enumerate(np.arange(0, hz, bh)):
            cv2.line(img, (0, int(y)), (w, int(y)), _shade(d, 1.0), 1)
            off = (r % 2) * bw / 2
            for x in np.arange(-off, w, bw):
                cv2.line(img, (int(x), int(y)), (int(x), int(y + bh)), _shade(d, 1.0), 1)
                if rng.random() < 0.25:
                    cv2.rectangle(
                        img,
                        (int(x) + 1, int(y) + 1),
                        (int(x + bw) - 1, int(y + bh) - 1),
                        _shade(cam.wall, rng.uniform(0.88, 1.1)),
                        -1,
                    )
    elif kind == "trees":
        for _ in range(int(w / (s * 1.5))):
            cx, cy = rng.uniform(0, w), rng.uniform(0.1 * hz, 0.8 * hz)
            cv2.line(
                img,
                (int(cx), int(cy)),
                (int(cx), hz),
                _shade([70, 55, 40], rng.uniform(0.8, 1.2)),
                max(1, int(s * 0.25)),
            )
            for _ in range(4):
                c = (int(cx + rng.normal() * s), int(cy + rng.normal() * s * 0.6))
                ax = (int(s * rng.uniform(1.0, 2.2)), int(s * rng.uniform(0.8, 1.6)))
                cv2.ellipse(img, c, ax, 0, 0, 360, _shade(d, rng.uniform(0.7, 1.4)), -1)
    elif kind == "glass":
        x = 0.0
        while x < w:
            pw = s * rng.uniform(2.0, 3.5)
            cv2.rectangle(
                img, (int(x), int(hz * 0.08)), (int(x + pw), hz), _shade(d, rng.uniform(0.6, 1.1)), -1
            )
            cv2.line(img, (int(x), 0), (int(x), hz), _shade(cam.wall, 0.6), max(1, int(s * 0.2)))
            x += pw
        cv2.rectangle(img, (0, 0), (w, int(hz * 0.08)), _shade(cam.wall, 1.2), -1)
    elif kind == "fence":
        for x in np.arange(rng.uniform(0, s), w, s * 0.8):
            cv2.line(img, (int(x), int(hz * 0.45)), (int(x), hz), _shade(d, 1.0), 1)
        for y in (hz * 0.5, hz * 0.85):
            cv2.line(img, (0, int(y)), (w, int(y)), _shade(d, 0.9), 2)


def _ground(img: np.ndarray, cam: CameraConfig, rng: np.random.Generator, hz: int) -> None:
    h, w = img.shape[:2]
    s = cam.pattern_px
    d = cam.ground_detail
    depth = h - hz
    kind = cam.ground_pattern
    if kind in ("tiles", "bricks"):
        n = max(2, int(depth / s))
        rows = [hz + depth * (k / n) ** 1.5 for k in range(n + 1)]
        for y in rows:
            cv2.line(img, (0, int(y)), (w, int(y)), _shade(d, 1.0), 1)
        vx = rng.uniform(0.3, 0.7) * w
        step = s * (2.0 if kind == "tiles" else 1.3)
        if kind == "tiles":
            for xb in np.arange(-w, 2 * w, step):
                cv2.line(img, (int(vx + (xb - vx) * 0.25), hz), (int(xb), h), _shade(d, 1.0), 1)
        else:
            for r in range(n):
                y0, y1 = rows[r], rows[r + 1]
                scale = 0.25 + 0.75 * (y0 - hz) / depth
                off = (r % 2) * step * scale / 2
                for x in np.arange(-off, w, step * max(scale, 0.3)):
                    cv2.line(img, (int(x), int(y0)), (int(x), int(y1)), _shade(d, 1.0), 1)
    elif kind == "steps":
        y = float(hz)
        k = 0
        while y < h:
            sh = s * (0.6 + 0.8 * (y - hz) / depth)
            cv2.rectangle(img, (0, int(y)), (w, int(y + sh)), _shade(cam.ground, 1.06 if k % 2 else 0.94), -1)
            cv2.line(img, (0, int(y)), (w, int(y)), _shade(d, 1.0), 1)
            y += sh
            k += 1
    elif kind == "asphalt":
        for _ in range(3):
            y = int(rng.uniform(hz + 0.2 * depth, h))
            dash = s * 2
            for x in np.arange(rng.uniform(0, dash), w, dash * 2):
                cv2.line(img, (int(x), y), (int(x + dash), y), _shade(d, 1.0), max(1, int(s * 0.2)))
    elif kind == "grass":
        for _ in range(int(w * depth / (s * s))):
            x, y = int(rng.uniform(0, w)), int(rng.uniform(hz, h))
            cv2.line(
                img,
                (x, y),
                (x + int(rng.normal() * 2), y - int(s * 0.5)),
                _shade(d, rng.uniform(0.8, 1.2)),
                1,
            )


def _props(img: np.ndarray, cam: CameraConfig, rng: np.random.Generator, hz: int) -> None:
    h, w = img.shape[:2]
    if not cam.props:
        return
    s = cam.pattern_px
    for _ in range(int(rng.integers(cam.num_props[0], cam.num_props[1] + 1))):
        kind = cam.props[rng.integers(len(cam.props))]
        x = rng.uniform(0, w)
        y = hz + rng.uniform(0.0, 0.25) * (h - hz)
        k = 0.6 + 0.8 * (y - hz) / (h - hz)  # nearer props are larger
        dark = _shade([60, 62, 66], rng.uniform(0.6, 1.3))
        if kind == "pole":
            cv2.line(img, (int(x), int(y)), (int(x), int(y - s * 8 * k)), dark, max(1, int(2 * k)))
        elif kind == "bike":
            r = s * 0.9 * k
            for cx in (x - r * 1.3, x + r * 1.3):
                cv2.circle(img, (int(cx), int(y - r)), int(r), dark, 1)
            cv2.line(img, (int(x - r * 1.3), int(y - r)), (int(x), int(y - r * 2)), dark, 1)
            cv2.line(img, (int(x), int(y - r * 2)), (int(x + r * 1.3), int(y - r)), dark, 1)
        elif kind == "bin":
            cv2.rectangle(
                img,
                (int(x), int(y - s * 2 * k)),
                (int(x + s * 1.3 * k), int(y)),
                _shade([50, 80, 60], rng.uniform(0.7, 1.3)),
                -1,
            )
        elif kind == "tree":
            cv2.line(
                img,
                (int(x), int(y)),
                (int(x), int(y - s * 5 * k)),
                _shade([80, 60, 45], 1.0),
                max(1, int(3 * k)),
            )
            cv2.ellipse(
                img,
                (int(x), int(y - s * 6 * k)),
                (int(s * 2.5 * k), int(s * 2 * k)),
                0,
                0,
                360,
                _shade([50, 95, 50], rng.uniform(0.7, 1.3)),
                -1,
            )
        elif kind == "car":
            body = _shade([rng.uniform(40, 220)] * 3, 1.0)
            cw, ch = s * 7 * k, s * 2.2 * k
            cv2.rectangle(img, (int(x), int(y - ch)), (int(x + cw), int(y)), body, -1)
            cv2.rectangle(
                img,
                (int(x + cw * 0.2), int(y - ch * 1.7)),
                (int(x + cw * 0.75), int(y - ch)),
                _shade(body, 0.8),
                -1,
            )
            for cx in (x + cw * 0.2, x + cw * 0.8):
                cv2.circle(img, (int(cx), int(y)), int(ch * 0.4), (25.0, 25.0, 25.0), -1)


def make_plate(cam: CameraConfig, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """The camera's background plate, float32 RGB, `cam.plate` crop heights by crop widths."""
    h, w = int(height * cam.plate[0]), int(width * cam.plate[1])
    hz = int(h * cam.horizon)
    img = np.zeros((h, w, 3), np.float32)
    ramp = np.linspace(1.08, 0.94, hz, dtype=np.float32)[:, None, None]
    img[:hz] = np.asarray(cam.wall, np.float32) * ramp
    ramp = np.linspace(0.92, 1.06, h - hz, dtype=np.float32)[:, None, None]
    img[hz:] = np.asarray(cam.ground, np.float32) * ramp
    _wall(img, cam, rng, hz)
    _ground(img, cam, rng, hz)
    cv2.line(img, (0, hz), (w, hz), _shade(cam.ground, 0.7), 1)
    _props(img, cam, rng, hz)
    smooth = rng.normal(size=(h // TEXTURE_CELL + 2, w // TEXTURE_CELL + 2)).astype(np.float32)
    smooth = cv2.resize(smooth, (w, h), interpolation=cv2.INTER_CUBIC)
    img += (smooth * cam.texture)[..., None]
    img += rng.normal(size=(h, w, 1)).astype(np.float32) * cam.grain
    img = cv2.GaussianBlur(img, (0, 0), PLATE_BLUR)
    return np.clip(img, 0, 255)


class Camera:
    """One camera of one dataset seed: plate + noise bank, and the per-image steps."""

    def __init__(self, cam: CameraConfig, rng: np.random.Generator, height: int, width: int):
        self.cfg = cam
        self.h, self.w = height, width
        self.plate = (make_plate(cam, rng, height, width) + 0.5).astype(np.uint8)
        self.noise = rng.standard_normal((height * NOISE_BANK, width * NOISE_BANK, 3), dtype=np.float32)
        self._ramp_y = np.arange(height)[:, None] / height - 0.5
        self._ramp_x = np.arange(width)[None, :] / width - 0.5

    def draw(self, rng: np.random.Generator) -> dict:
        """Everything random about one image of this camera, drawn in a fixed order and number."""
        c = self.cfg
        u = rng.random(12)
        g = rng.normal(size=4)
        lo = lambda r, i: r[0] + (r[1] - r[0]) * u[i]  # noqa: E731
        return {
            "zoom": lo(c.zoom, 0), "flip": u[1] < 0.5, "x": u[2], "horizon": c.horizon + g[0] * c.horizon_jitter,
            "gain": np.asarray(c.gain, np.float32) * (1 + g[1:4].astype(np.float32) * 0.02),
            "contrast": lo(c.contrast, 3), "bright": lo(c.brightness, 4), "light_dir": u[5] * 2 * np.pi,
            "light": c.light_gradient * u[6] * 2, "down": lo(c.downscale, 7), "blur": lo(c.blur, 8),
            "motion": lo(c.motion_blur, 9), "noise": lo(c.noise, 10), "saturation": lo(c.saturation, 11),
            "noise_at": (int(rng.integers(self.noise.shape[0] - self.h + 1)), int(rng.integers(self.noise.shape[1] - self.w + 1))),
            "jpeg": int(rng.integers(c.jpeg[0], c.jpeg[1] + 1)),
        }  # fmt: skip

    def background(self, d: dict) -> np.ndarray:
        """A window of the plate (zoomed, maybe mirrored), float32 (H, W, 3)."""
        h, w = self.h, self.w
        ph, pw = self.plate.shape[:2]
        z = d["zoom"]
        x0 = d["x"] * (pw - w / z)
        y_top = self.cfg.horizon * ph - d["horizon"] * h / z
        y0 = float(np.clip(y_top, 0, ph - h / z))
        sx = -1.0 / z if d["flip"] else 1.0 / z
        m = np.array([[sx, 0, x0 + (w / z if d["flip"] else 0)], [0, 1 / z, y0]], np.float32)
        win = cv2.warpAffine(
            self.plate,
            m,
            (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
        return win.astype(np.float32)

    def degrade(self, img: np.ndarray, d: dict) -> np.ndarray:
        """Colour cast, saturation, contrast and brightness (one 3x4 colour matrix), light fall-off,
        resolution loss, blur, motion blur, noise -> uint8 RGB."""
        h, w = self.h, self.w
        sat, ct = d["saturation"], d["contrast"]
        m = d["gain"][:, None] * (sat * np.eye(3) + (1 - sat) * LUMA[None, :]) * ct
        off = d["gain"] * (128.0 * (1 - ct) + d["bright"])
        img = cv2.transform(img, np.hstack([m, off[:, None]]).astype(np.float32))
        light = (
            1.0 + (self._ramp_y * np.sin(d["light_dir"]) + self._ramp_x * np.cos(d["light_dir"])) * d["light"]
        )
        img *= light.astype(np.float32)[..., None]
        f = d["down"]
        if f < 1.0:
            small = cv2.resize(
                img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA
            )
            img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        if d["blur"] > 0.05:
            img = cv2.GaussianBlur(img, (0, 0), d["blur"])
        if d["motion"] >= 1.0:
            k = int(round(d["motion"])) | 1
            img = cv2.blur(img, (k, 1))
        oy, ox = d["noise_at"]
        img = cv2.scaleAdd(self.noise[oy : oy + h, ox : ox + w], float(d["noise"]), img)
        img += 0.5
        return np.clip(img, 0, 255, out=img).astype(np.uint8)
