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


# The procedural art's fixed proportions: lengths in units of the camera's `pattern_px` (s) unless noted,
# (lo, hi) pairs are ranges drawn per element, "shade" values multiply the camera's colours.
WINDOWS = {"floor": 3.2, "width": 2.2, "inset_x": 0.4, "inset_y": 0.6, "shade": (0.8, 1.15), "frame": 1.15,
           "mullion": 0.7}  # fmt: skip
BRICKS = {"length": 2.2, "recolour": 0.25, "shade": (0.88, 1.1)}  # brick height = s
TREES = {"spacing": 1.5, "top": (0.1, 0.8), "trunk": (70, 55, 40), "trunk_shade": (0.8, 1.2), "trunk_width": 0.25,
         "blobs": 4, "spread": (1.0, 0.6), "rx": (1.0, 2.2), "ry": (0.8, 1.6), "shade": (0.7, 1.4)}  # fmt: skip
GLASS = {"panel": (2.0, 3.5), "shade": (0.6, 1.1), "lintel": 0.08, "frame": 0.6, "frame_width": 0.2,
         "lintel_shade": 1.2}  # fmt: skip  # lintel: fraction of the wall's height
FENCE = {
    "spacing": 0.8,
    "top": 0.45,
    "rails": (0.5, 0.85),
    "rail_shade": 0.9,
}  # top, rails: of the wall's height
GROUND = {"perspective": 1.5, "vanish": (0.3, 0.7), "converge": 0.25, "tile": 2.0, "paver": 1.3, "far_scale": 0.25,
          "min_scale": 0.3, "step": (0.6, 0.8), "step_shade": (0.94, 1.06), "lanes": 3, "lane_from": 0.2, "dash": 2.0,
          "dash_width": 0.2, "blade": 0.5, "blade_tilt": 2.0, "blade_shade": (0.8, 1.2), "horizon_shade": 0.7}  # fmt: skip
PROPS = {"band": 0.25, "near_scale": (0.6, 0.8), "dark": (60, 62, 66), "dark_shade": (0.6, 1.3), "pole": 8.0,
         "pole_width": 2.0, "wheel": 0.9, "wheel_gap": 1.3, "bin": (2.0, 1.3), "bin_color": (50, 80, 60),
         "bin_shade": (0.7, 1.3), "trunk": 5.0, "trunk_width": 3.0, "trunk_color": (80, 60, 45), "crown": (6.0, 2.5, 2.0),
         "leaves": (50, 95, 50), "leaves_shade": (0.7, 1.3), "car": (7.0, 2.2), "car_grey": (40, 220),
         "cabin": (0.2, 0.75, 1.7), "cabin_shade": 0.8, "wheels": (0.2, 0.8), "tyre": 0.4, "tyre_color": (25, 25, 25)}  # fmt: skip
RAMPS = {"wall": (1.08, 0.94), "ground": (0.92, 1.06)}  # light from top to bottom of each region


def _shade(c, f: float) -> tuple:
    return tuple(float(np.clip(v * f, 0, 255)) for v in c)


def _wall(img: np.ndarray, cam: CameraConfig, rng: np.random.Generator, hz: int) -> None:
    h, w = img.shape[:2]
    s = cam.pattern_px
    d = cam.wall_detail
    kind = cam.wall_pattern
    if kind == "windows":
        a = WINDOWS
        floor_h, win_w = s * a["floor"], s * a["width"]
        y = -rng.uniform(0, floor_h)
        while y < hz - s:
            x = -rng.uniform(0, win_w)
            while x < w:
                x0, y0 = int(x + s * a["inset_x"]), int(y + s * a["inset_y"])
                x1, y1 = int(x + win_w - s * a["inset_x"]), int(min(y + floor_h - s * a["inset_y"], hz - 2))
                if y1 > y0:
                    cv2.rectangle(img, (x0, y0), (x1, y1), _shade(d, rng.uniform(*a["shade"])), -1)
                    cv2.rectangle(img, (x0, y0), (x1, y1), _shade(cam.wall, a["frame"]), 1)
                    cv2.line(img, (x0, (y0 + y1) // 2), (x1, (y0 + y1) // 2), _shade(d, a["mullion"]), 1)
                x += win_w
            y += floor_h
    elif kind == "bricks":
        a = BRICKS
        bh, bw = s, s * a["length"]
        for r, y in enumerate(np.arange(0, hz, bh)):
            cv2.line(img, (0, int(y)), (w, int(y)), _shade(d, 1.0), 1)
            off = (r % 2) * bw / 2
            for x in np.arange(-off, w, bw):
                cv2.line(img, (int(x), int(y)), (int(x), int(y + bh)), _shade(d, 1.0), 1)
                if rng.random() < a["recolour"]:
                    shade = _shade(cam.wall, rng.uniform(*a["shade"]))
                    cv2.rectangle(
                        img, (int(x) + 1, int(y) + 1), (int(x + bw) - 1, int(y + bh) - 1), shade, -1
                    )
    elif kind == "trees":
        a = TREES
        for _ in range(int(w / (s * a["spacing"]))):
            cx, cy = rng.uniform(0, w), rng.uniform(a["top"][0] * hz, a["top"][1] * hz)
            trunk = _shade(a["trunk"], rng.uniform(*a["trunk_shade"]))
            cv2.line(img, (int(cx), int(cy)), (int(cx), hz), trunk, max(1, int(s * a["trunk_width"])))
            for _ in range(a["blobs"]):
                c = (int(cx + rng.normal() * s * a["spread"][0]), int(cy + rng.normal() * s * a["spread"][1]))
                ax = (int(s * rng.uniform(*a["rx"])), int(s * rng.uniform(*a["ry"])))
                cv2.ellipse(img, c, ax, 0, 0, 360, _shade(d, rng.uniform(*a["shade"])), -1)
    elif kind == "glass":
        a = GLASS
        top = int(hz * a["lintel"])
        x = 0.0
        while x < w:
            pw = s * rng.uniform(*a["panel"])
            cv2.rectangle(img, (int(x), top), (int(x + pw), hz), _shade(d, rng.uniform(*a["shade"])), -1)
            cv2.line(
                img,
                (int(x), 0),
                (int(x), hz),
                _shade(cam.wall, a["frame"]),
                max(1, int(s * a["frame_width"])),
            )
            x += pw
        cv2.rectangle(img, (0, 0), (w, top), _shade(cam.wall, a["lintel_shade"]), -1)
    elif kind == "fence":
        a = FENCE
        for x in np.arange(rng.uniform(0, s), w, s * a["spacing"]):
            cv2.line(img, (int(x), int(hz * a["top"])), (int(x), hz), _shade(d, 1.0), 1)
        for y in a["rails"]:
            cv2.line(img, (0, int(hz * y)), (w, int(hz * y)), _shade(d, a["rail_shade"]), 2)


def _ground(img: np.ndarray, cam: CameraConfig, rng: np.random.Generator, hz: int) -> None:
    h, w = img.shape[:2]
    s = cam.pattern_px
    d = cam.ground_detail
    depth = h - hz
    kind = cam.ground_pattern
    a = GROUND
    if kind in ("tiles", "bricks"):  # a floor in perspective: rows closer together toward the horizon
        n = max(2, int(depth / s))
        rows = [hz + depth * (k / n) ** a["perspective"] for k in range(n + 1)]
        for y in rows:
            cv2.line(img, (0, int(y)), (w, int(y)), _shade(d, 1.0), 1)
        vx = rng.uniform(*a["vanish"]) * w
        step = s * (a["tile"] if kind == "tiles" else a["paver"])
        if kind == "tiles":
            for xb in np.arange(-w, 2 * w, step):
                cv2.line(img, (int(vx + (xb - vx) * a["converge"]), hz), (int(xb), h), _shade(d, 1.0), 1)
        else:
            for r in range(n):
                y0, y1 = rows[r], rows[r + 1]
                scale = a["far_scale"] + (1 - a["far_scale"]) * (y0 - hz) / depth
                off = (r % 2) * step * scale / 2
                for x in np.arange(-off, w, step * max(scale, a["min_scale"])):
                    cv2.line(img, (int(x), int(y0)), (int(x), int(y1)), _shade(d, 1.0), 1)
    elif kind == "steps":
        y, k = float(hz), 0
        while y < h:
            sh = s * (a["step"][0] + a["step"][1] * (y - hz) / depth)
            cv2.rectangle(img, (0, int(y)), (w, int(y + sh)), _shade(cam.ground, a["step_shade"][k % 2]), -1)
            cv2.line(img, (0, int(y)), (w, int(y)), _shade(d, 1.0), 1)
            y += sh
            k += 1
    elif kind == "asphalt":  # dashed lane markings
        for _ in range(a["lanes"]):
            y = int(rng.uniform(hz + a["lane_from"] * depth, h))
            dash = s * a["dash"]
            for x in np.arange(rng.uniform(0, dash), w, dash * 2):
                cv2.line(
                    img, (int(x), y), (int(x + dash), y), _shade(d, 1.0), max(1, int(s * a["dash_width"]))
                )
    elif kind == "grass":
        for _ in range(int(w * depth / (s * s))):
            x, y = int(rng.uniform(0, w)), int(rng.uniform(hz, h))
            tip = (x + int(rng.normal() * a["blade_tilt"]), y - int(s * a["blade"]))
            cv2.line(img, (x, y), tip, _shade(d, rng.uniform(*a["blade_shade"])), 1)


def _props(img: np.ndarray, cam: CameraConfig, rng: np.random.Generator, hz: int) -> None:
    h, w = img.shape[:2]
    if not cam.props:
        return
    s = cam.pattern_px
    a = PROPS
    for _ in range(int(rng.integers(cam.num_props[0], cam.num_props[1] + 1))):
        kind = cam.props[rng.integers(len(cam.props))]
        x = rng.uniform(0, w)
        y = hz + rng.uniform(0.0, a["band"]) * (h - hz)
        k = a["near_scale"][0] + a["near_scale"][1] * (y - hz) / (h - hz)  # nearer props are larger
        dark = _shade(a["dark"], rng.uniform(*a["dark_shade"]))
        if kind == "pole":
            cv2.line(
                img,
                (int(x), int(y)),
                (int(x), int(y - s * a["pole"] * k)),
                dark,
                max(1, int(a["pole_width"] * k)),
            )
        elif kind == "bike":
            r, gap = s * a["wheel"] * k, s * a["wheel"] * k * a["wheel_gap"]
            for cx in (x - gap, x + gap):
                cv2.circle(img, (int(cx), int(y - r)), int(r), dark, 1)
            cv2.line(img, (int(x - gap), int(y - r)), (int(x), int(y - r * 2)), dark, 1)
            cv2.line(img, (int(x), int(y - r * 2)), (int(x + gap), int(y - r)), dark, 1)
        elif kind == "bin":
            bh, bw = s * a["bin"][0] * k, s * a["bin"][1] * k
            colour = _shade(a["bin_color"], rng.uniform(*a["bin_shade"]))
            cv2.rectangle(img, (int(x), int(y - bh)), (int(x + bw), int(y)), colour, -1)
        elif kind == "tree":
            trunk_top = int(y - s * a["trunk"] * k)
            cv2.line(
                img,
                (int(x), int(y)),
                (int(x), trunk_top),
                _shade(a["trunk_color"], 1.0),
                max(1, int(a["trunk_width"] * k)),
            )
            cy, rx, ry = (int(v * s * k) for v in a["crown"])
            colour = _shade(a["leaves"], rng.uniform(*a["leaves_shade"]))
            cv2.ellipse(img, (int(x), int(y) - cy), (rx, ry), 0, 0, 360, colour, -1)
        elif kind == "car":
            body = _shade([rng.uniform(*a["car_grey"])] * 3, 1.0)
            cw, ch = s * a["car"][0] * k, s * a["car"][1] * k
            c0, c1, c2 = a["cabin"]
            cv2.rectangle(img, (int(x), int(y - ch)), (int(x + cw), int(y)), body, -1)
            cv2.rectangle(
                img,
                (int(x + cw * c0), int(y - ch * c2)),
                (int(x + cw * c1), int(y - ch)),
                _shade(body, a["cabin_shade"]),
                -1,
            )
            for cx in a["wheels"]:
                cv2.circle(
                    img, (int(x + cw * cx), int(y)), int(ch * a["tyre"]), _shade(a["tyre_color"], 1.0), -1
                )


def make_plate(cam: CameraConfig, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """The camera's background plate, float32 RGB, `cam.plate` crop heights by crop widths."""
    h, w = int(height * cam.plate[0]), int(width * cam.plate[1])
    hz = int(h * cam.horizon)
    img = np.zeros((h, w, 3), np.float32)
    ramp = np.linspace(*RAMPS["wall"], hz, dtype=np.float32)[:, None, None]
    img[:hz] = np.asarray(cam.wall, np.float32) * ramp
    ramp = np.linspace(*RAMPS["ground"], h - hz, dtype=np.float32)[:, None, None]
    img[hz:] = np.asarray(cam.ground, np.float32) * ramp
    _wall(img, cam, rng, hz)
    _ground(img, cam, rng, hz)
    cv2.line(img, (0, hz), (w, hz), _shade(cam.ground, GROUND["horizon_shade"]), 1)
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
