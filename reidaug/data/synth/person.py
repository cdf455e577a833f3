"""Identities (sets of appearance attributes) and the articulated body drawn from a pose.

A person is drawn with OpenCV primitives onto an RGBA canvas `body.supersample` times the output size:
limbs are thick lines with round caps, the torso and garments convex polygons, head, hands, shoes and
accessories ellipses. The alpha channel records coverage; area-averaging the canvas down gives an
anti-aliased, premultiplied person layer. Upper-garment pixels are drawn with a marker alpha first so a
pattern can be laid over exactly the garment pixels that stay visible.

The keypoints returned are the points the parts were drawn around, rounded to output pixels; a joint is
-1 when it falls outside the crop, when it is a face joint turned away from the camera (head model in
pose.face_joints), or (`pose.hide_occluded`) an elbow or wrist drawn behind the torso.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .config import AppearanceConfig, BodyConfig, PoseConfig
from .pose import (
    HEAD,
    L_ANK,
    L_ELB,
    L_HIP,
    L_KNE,
    L_SHO,
    L_WRI,
    NECK,
    R_ANK,
    R_ELB,
    R_HIP,
    R_KNE,
    R_SHO,
    R_WRI,
    Pose,
    face_joints,
    to_coco,
)

SHIFT = 4  # cv2 fixed-point bits: coordinates are drawn with 1/16 pixel precision
FP = 1 << SHIFT
GARMENT_ALPHA = 254  # alpha marker of upper-garment pixels until the pattern is applied
ARMS = {"r": (R_SHO, R_ELB, R_WRI), "l": (L_SHO, L_ELB, L_WRI)}
LEGS = {"r": (R_HIP, R_KNE, R_ANK), "l": (L_HIP, L_KNE, L_ANK)}
LOGO_SHAPES = ("circle", "square", "triangle", "bar")


def _pick(rng: np.random.Generator, probs: dict[str, float]) -> str:
    keys = sorted(probs)
    w = np.array([probs[k] for k in keys], dtype=np.float64)
    return keys[rng.choice(len(keys), p=w / w.sum())]


def _color(rng: np.random.Generator, palette, jitter: float, exclude: int | None = None):
    idx = [i for i in range(len(palette)) if i != exclude]
    i = idx[rng.integers(len(idx))]
    return i, np.clip(np.asarray(palette[i], np.float64) + rng.normal(size=3) * jitter, 0, 255)


@dataclass
class Identity:
    """What stays the same across a person's images."""

    skin: np.ndarray
    hair: np.ndarray
    hair_style: str
    hair_length: float
    hat: np.ndarray | None
    upper: np.ndarray
    upper2: np.ndarray
    pattern: str
    pattern_period: float
    logo_shape: str
    two_tone_split: float
    sleeves: str
    sleeve_end: float
    upper_length: float
    lower: np.ndarray
    lower_type: str
    lower_end: float  # shorts: fraction of the thigh; skirt: hem below the hips (T)
    shoes: np.ndarray
    backpack: np.ndarray | None
    bag: np.ndarray | None
    bag_side: str  # "r" | "l": the person's side the bag hangs on
    build: float
    palette: dict  # palette index of each colour attribute (which colours identities share)

    def attributes(self) -> dict:
        """Categorical summary: palette indices and options (for manifests and tests)."""
        return {
            **{f"{k}_color": v for k, v in self.palette.items()}, "pattern": self.pattern, "sleeves": self.sleeves, "lower": self.lower_type, "hair": self.hair_style,
            "hat": self.hat is not None, "backpack": self.backpack is not None, "bag": self.bag is not None,
        }  # fmt: skip


def sample_identity(rng: np.random.Generator, a: AppearanceConfig, b: BodyConfig) -> Identity:
    j = a.color_jitter
    i_skin, skin = _color(rng, a.skin, j * 0.5)
    i_hair, hair = _color(rng, a.hair, j * 0.5)
    style = _pick(rng, a.hair_styles)
    iu, upper = _color(rng, a.garment, j)
    iu2, upper2 = _color(rng, a.garment, j, exclude=iu)
    pattern = _pick(rng, a.patterns)
    period = rng.uniform(*(a.check_period if pattern == "checks" else a.stripe_period))
    if pattern == "logo":
        period = rng.uniform(*a.logo_size)
    sleeves = _pick(rng, a.sleeves)
    lower_type = _pick(rng, a.lower_types)
    lower_end = rng.uniform(*(b.shorts_length if lower_type == "shorts" else b.skirt_length))
    il, lower = _color(rng, a.lower, j)
    i_shoes, shoes = _color(rng, a.shoes, j * 0.5)
    hat = _color(rng, a.accessory, j)[1] if rng.random() < a.hat_prob else None
    backpack = _color(rng, a.accessory, j)[1] if rng.random() < a.backpack_prob else None
    bag = _color(rng, a.accessory, j)[1] if rng.random() < a.bag_prob else None
    return Identity(
        skin=skin, hair=hair, hair_style=style, hair_length=rng.uniform(*b.long_hair_length), hat=hat,
        upper=upper, upper2=upper2, pattern=pattern, pattern_period=period,
        logo_shape=LOGO_SHAPES[rng.integers(len(LOGO_SHAPES))], two_tone_split=rng.uniform(0.35, 0.6),
        sleeves=sleeves, sleeve_end=rng.uniform(*b.sleeve_short), upper_length=rng.uniform(*b.upper_length),
        lower=lower, lower_type=lower_type, lower_end=lower_end, shoes=shoes, backpack=backpack, bag=bag,
        bag_side="r" if rng.random() < 0.5 else "l", build=rng.uniform(*b.build),
        palette={"skin": i_skin, "hair": i_hair, "upper": iu, "upper2": iu2, "lower": il, "shoes": i_shoes},
    )  # fmt: skip


class Canvas:
    """Drawing in output-pixel coordinates ([y, x] floats, pixel centres at integers) on a supersampled
    RGBA canvas."""

    def __init__(self, height: int, width: int, s: int):
        self.s = s
        self.img = np.zeros((height * s, width * s, 4), np.uint8)

    def pt(self, p) -> tuple[int, int]:
        k, o = self.s * FP, (self.s - 1) / 2 * FP + 0.5
        return (math.floor(p[1] * k + o), math.floor(p[0] * k + o))

    def pts(self, ps) -> np.ndarray:
        ps = np.asarray(ps, np.float64)
        s = self.s
        return np.rint((ps[:, ::-1] * s + (s - 1) / 2) * FP).astype(np.int32)

    def line(self, a, b, width: float, color) -> None:
        cv2.line(
            self.img, self.pt(a), self.pt(b), color, max(1, int(round(width * self.s))), cv2.LINE_8, SHIFT
        )

    def ellipse(
        self, c, ry: float, rx: float, color, angle: float = 0.0, start: float = 0, end: float = 360
    ) -> None:
        axes = (max(1, int(round(rx * self.s * FP))), max(1, int(round(ry * self.s * FP))))
        cv2.ellipse(self.img, self.pt(c), axes, angle, start, end, color, -1, cv2.LINE_8, SHIFT)

    def poly(self, ps, color) -> None:
        cv2.fillConvexPoly(self.img, self.pts(ps), color, cv2.LINE_8, SHIFT)


def _rgba(c, alpha: int = 255) -> tuple:
    return (float(c[0]), float(c[1]), float(c[2]), alpha)


@lru_cache(maxsize=16)
def _unit_circle(n: int, phase: float) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False) + phase
    return np.stack([np.sin(a), np.cos(a)], axis=-1)


def _circle_pts(c, r: float, n: int = 8, phase: float = 0.0) -> np.ndarray:
    return np.asarray(c, np.float64) + r * _unit_circle(n, phase)


def _hull(ps) -> np.ndarray:
    ps = np.asarray(ps, np.float32)
    return cv2.convexHull(ps).reshape(-1, 2).astype(np.float64)


def _lerp(a, b, t):
    return np.asarray(a) + (np.asarray(b) - np.asarray(a)) * t


def _unit(v):
    n = math.hypot(v[0], v[1])
    return v / n if n > 1e-9 else np.array([1.0, 0.0])


def draw_person(
    canvas: Canvas,
    pose: Pose,
    who: Identity,
    body: BodyConfig,
    pcfg: PoseConfig,
    rng: np.random.Generator,
    image_jitter: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `who` in `pose`; returns float COCO-18 keypoints (18, 2) [y, x] and their visibility (18,)."""
    p = pose.points
    t = pose.torso
    bw = who.build
    yaw = np.deg2rad(pose.yaw)
    cos_y, sin_y = np.cos(yaw), np.sin(yaw)
    front_cos = np.cos(np.deg2rad(pcfg.views_front_max_deg))
    mode = "front" if cos_y >= front_cos else ("back" if cos_y <= -front_cos else "side")
    near = "r" if sin_y > 0 else "l"  # facing image-right shows the right side
    far = "l" if near == "r" else "r"
    fwd = np.array([0.0, np.sign(sin_y) or 1.0])  # image direction the person faces (side views)

    def col(c, alpha=255):
        return _rgba(np.clip(c + rng.normal(size=3) * image_jitter, 0, 255), alpha)

    skin, hair, upper, lower, shoes = (
        col(who.skin),
        col(who.hair),
        col(who.upper, GARMENT_ALPHA),
        col(who.lower),
        col(who.shoes),
    )
    mid_hip = (p[R_HIP] + p[L_HIP]) / 2
    down = _unit(mid_hip - p[NECK])
    chest = _lerp(p[NECK], mid_hip, 0.35)

    # torso outline: shoulders and hips grown by the torso's half-depth (more in side views)
    m_sh = _lerp(body.torso_margin_front, body.torso_margin_side, abs(sin_y)) * t * bw
    m_hip = body.hip_margin * t * bw
    hem = down * who.upper_length * t
    torso = _hull(np.concatenate([
        _circle_pts(p[R_SHO], m_sh), _circle_pts(p[L_SHO], m_sh),
        _circle_pts(p[R_HIP] + hem, m_hip), _circle_pts(p[L_HIP] + hem, m_hip),
    ]))  # fmt: skip
    pelvis = _hull(np.concatenate([
        _circle_pts(p[R_HIP], m_hip), _circle_pts(p[L_HIP], m_hip),
        _circle_pts(mid_hip + down * 0.25 * t, m_hip),
    ]))  # fmt: skip

    def arm(side: str) -> None:
        s, e, w = (p[j] for j in ARMS[side])
        canvas.line(s, e, body.upper_arm_width * t * bw, skin)
        canvas.line(e, w, body.forearm_width * t * bw, skin)
        canvas.ellipse(
            w + _unit(w - e) * body.hand_offset * t, body.hand_radius * t, body.hand_radius * t, skin
        )
        if who.sleeves == "short":
            canvas.line(s, _lerp(s, e, who.sleeve_end), body.upper_arm_width * t * bw * 1.25, upper)
        elif who.sleeves == "long":
            canvas.line(s, e, body.upper_arm_width * t * bw * 1.15, upper)
            canvas.line(e, _lerp(e, w, 0.9), body.forearm_width * t * bw * 1.2, upper)

    def leg(side: str) -> None:
        h, k, a = (p[j] for j in LEGS[side])
        wt, ws = body.thigh_width * t * bw, body.shin_width * t * bw
        lower_legs = who.lower_type == "trousers"
        canvas.line(h, k, wt, lower if who.lower_type != "skirt" else skin)
        canvas.line(k, a, ws, lower if lower_legs else skin)
        if who.lower_type == "shorts":
            canvas.line(k, _lerp(h, k, who.lower_end), wt * 0.96, skin)
        if lower_legs:
            canvas.line(k, _lerp(k, h, 0.3), wt * 0.92, lower)
        # shoe: a flat ellipse under the ankle, long in side views
        length = body.foot_length * t * (0.45 + 0.55 * abs(sin_y))
        c = a + np.array([body.foot_height * t * 0.4, 0.0]) + fwd * abs(sin_y) * length * 0.35
        canvas.ellipse(c, body.foot_height * t, length / 2, shoes)

    def lower_body() -> None:
        canvas.poly(pelvis, lower)
        if who.lower_type == "skirt":
            hem_c = mid_hip + down * who.lower_end * t
            half = np.array([0.0, 1.0]) * (abs(p[L_HIP][1] - p[R_HIP][1]) / 2 + m_hip)
            flare = np.array([0.0, 1.0]) * body.skirt_flare * t
            canvas.poly(
                _hull(
                    [p[R_HIP] - [0, m_hip], p[L_HIP] + [0, m_hip], hem_c - half - flare, hem_c + half + flare]
                ),
                lower,
            )

    def backpack(where: str) -> None:
        if who.backpack is None:
            return
        c = col(who.backpack)
        bw_, bh = body.backpack_size[0] * t * bw, body.backpack_size[1] * t
        centre = _lerp(p[NECK], mid_hip, 0.45)
        if where == "back":
            canvas.poly(
                _hull(
                    np.concatenate(
                        [
                            _circle_pts(centre + [-bh / 2 + bw_ * 0.2, 0], bw_ * 0.45),
                            _circle_pts(centre + [bh / 2 - bw_ * 0.2, 0], bw_ * 0.5),
                        ]
                    )
                ),
                c,
            )
        elif where == "side":
            off = centre - fwd * (m_sh + bw_ * 0.25)
            canvas.poly(
                _hull(
                    np.concatenate(
                        [
                            _circle_pts(off + [-bh / 2 + bw_ * 0.2, 0], bw_ * 0.3),
                            _circle_pts(off + [bh / 2 - bw_ * 0.2, 0], bw_ * 0.35),
                        ]
                    )
                ),
                c,
            )
        else:  # straps over the shoulders
            for s in (R_SHO, L_SHO):
                canvas.line(p[s], _lerp(p[s], p[R_HIP if s == R_SHO else L_HIP], 0.55), 0.05 * t, c)

    def bag(draw_bag: bool) -> None:
        if who.bag is None:
            return
        c = col(who.bag)
        hip = p[R_HIP] if who.bag_side == "r" else p[L_HIP]
        other_sho = p[L_SHO] if who.bag_side == "r" else p[R_SHO]
        outward = _unit(hip - mid_hip) if mode != "side" else -fwd * 0.3
        centre = hip + outward * m_hip * 1.3 + down * 0.05 * t
        canvas.line(other_sho, centre, 0.045 * t, c)
        if draw_bag:
            canvas.ellipse(centre, body.bag_size[1] * t / 2, body.bag_size[0] * t / 2, c)
            canvas.poly(
                _hull(
                    [
                        centre + [-body.bag_size[1] * t / 2, -body.bag_size[0] * t / 2],
                        centre + [body.bag_size[1] * t / 2, -body.bag_size[0] * t / 2],
                        centre + [body.bag_size[1] * t / 2, body.bag_size[0] * t / 2],
                        centre + [-body.bag_size[1] * t / 2, body.bag_size[0] * t / 2],
                    ]
                ),
                c,
            )

    rx, ry = body.head_rx * t, body.head_ry * t
    head = p[HEAD]
    tilt = float(np.degrees(np.arctan2(head[1] - p[NECK][1], p[NECK][0] - head[0])))

    def long_hair() -> None:
        if who.hair_style != "long":
            return
        length = who.hair_length * t
        c = head + np.array([length / 2, 0.0]) - (fwd * abs(sin_y) * rx * 0.35)
        canvas.ellipse(c, ry * 0.55 + length / 2, rx * 1.1, hair, angle=-tilt)

    face, face_vis = face_joints(head, pose.yaw, t, body, pcfg)

    def head_parts() -> None:
        canvas.line(p[NECK], _lerp(p[NECK], head, 0.6), body.neck_width * t * bw, skin)
        bald = who.hair_style == "bald"
        canvas.ellipse(head, ry, rx, skin if bald else hair, angle=-tilt)
        if cos_y > -0.35:  # the face: the lower front part of the head
            fc = head + np.array([0.17 * ry, sin_y * 0.3 * rx])
            canvas.ellipse(fc, 0.8 * ry, rx * (0.84 - 0.3 * abs(sin_y)), skin, angle=-tilt)
        for (y, x), v, i in zip(face, face_vis, range(5)):
            if i >= 3 and v:  # ears
                canvas.ellipse((y, x), 0.2 * ry, 0.16 * rx, skin)
        if who.hair_style == "bun":
            canvas.ellipse(head + np.array([-0.8 * ry, -sin_y * 0.5 * rx]), 0.35 * ry, 0.4 * rx, hair)
        if who.hat is not None:
            hc = col(who.hat)
            canvas.ellipse(
                head - np.array([0.25 * ry, 0.0]), 0.85 * ry, 1.08 * rx, hc, angle=-tilt, start=180, end=360
            )
            brim = head - np.array([0.25 * ry, 0.0]) + fwd * sin_y * rx * 0.9
            canvas.ellipse(brim, 0.12 * ry, rx * (0.7 + 0.5 * abs(sin_y)), hc)
        for (y, x), v, i in zip(face, face_vis, range(5)):
            if i in (1, 2) and v:
                canvas.ellipse((y, x), body.eye_radius * t, body.eye_radius * t, (30.0, 24.0, 22.0, 255))

    def torso_parts() -> None:
        canvas.poly(torso, upper)
        if who.pattern == "logo" and mode == "front":
            size = who.pattern_period * t
            c2 = col(who.upper2)
            centre = chest + np.array([0.1 * t, 0.0])
            if who.logo_shape == "circle":
                canvas.ellipse(centre, size / 2, size / 2, c2)
            elif who.logo_shape == "square":
                canvas.poly(_circle_pts(centre, size * 0.6, 4, np.pi / 4), c2)
            elif who.logo_shape == "triangle":
                canvas.poly(_circle_pts(centre, size * 0.6, 3, np.pi / 2), c2)
            else:
                canvas.line(centre - [0, size / 2], centre + [0, size / 2], size * 0.4, c2)

    # draw order: what is farther from the camera first
    if mode == "front":
        long_hair()
        backpack("none")
        leg("r")
        leg("l")
        lower_body()
        torso_parts()
        backpack("front")
        bag(True)
        arm("r")
        arm("l")
        head_parts()
        behind = ()
    elif mode == "back":
        arm("r")
        arm("l")
        leg("r")
        leg("l")
        lower_body()
        torso_parts()
        bag(True)
        backpack("back")
        head_parts()
        long_hair()
        behind = ("r", "l")
    else:
        arm(far)
        backpack("side")
        bag(who.bag_side == far)
        leg(far)
        leg(near)
        lower_body()
        torso_parts()
        bag(who.bag_side == near)
        head_parts()
        arm(near)
        behind = (far,)
    if who.pattern in ("stripes", "checks", "two_tone"):
        _apply_pattern(canvas, who, p, t, rng, image_jitter)
    img = canvas.img
    img[..., 3][img[..., 3] == GARMENT_ALPHA] = 255

    kp = to_coco(p, face)
    vis = np.ones(len(kp), bool)
    vis[[0, 14, 15, 16, 17]] = face_vis
    if pcfg.hide_occluded:
        poly = torso.astype(np.float32).reshape(-1, 1, 2)
        for side in behind:
            for j in ARMS[side][1:]:
                if cv2.pointPolygonTest(poly, (float(p[j][0]), float(p[j][1])), False) >= 0:
                    vis[j] = False
    return kp, vis


def _apply_pattern(canvas: Canvas, who: Identity, p: np.ndarray, t: float, rng, jitter: float) -> None:
    """Lay stripes, checks or a two-tone split over the visible upper-garment pixels."""
    img = canvas.img
    rows = np.flatnonzero((img[..., 3] == GARMENT_ALPHA).any(1))
    if not len(rows):
        return
    y0, y1 = rows[0], rows[-1] + 1
    roi = img[y0:y1]
    m = roi[..., 3] == GARMENT_ALPHA
    s = canvas.s
    ys = np.arange(y0, y1)[:, None] - p[NECK][0] * s
    xs = np.arange(img.shape[1])[None, :]
    half = max(1.0, who.pattern_period * t * s / 2)
    if who.pattern == "stripes":
        on = (ys // half).astype(np.int64) % 2 == 1
    elif who.pattern == "checks":
        on = ((ys // half).astype(np.int64) + (xs // half).astype(np.int64)) % 2 == 1
    else:
        mid_y = (p[R_HIP][0] + p[L_HIP][0]) / 2
        on = ys >= who.two_tone_split * (mid_y - p[NECK][0]) * s
    c2 = np.clip(who.upper2 + rng.normal(size=3) * jitter, 0, 255).astype(np.uint8)
    roi[m & on, :3] = c2
