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
PATTERNED = ("stripes", "checks", "two_tone")  # drawn as a second colour over the garment's pixels
EYE_COLOR = (30.0, 24.0, 22.0, 255)


@dataclass(frozen=True)
class Shapes:
    """The drawing's fixed geometry (fractions of the part they refer to; T = torso length, rx/ry = head
    radii). Proportions that vary between people live in BodyConfig; these only shape the primitives."""

    chest: float = 0.35  # chest centre, from the neck toward the mid-hip (logo, backpack)
    crotch: float = 0.25  # the pelvis reaches this far below the mid-hip (T)
    sleeve_short_width: float = 1.25  # sleeve widths relative to the arm
    sleeve_long_width: float = 1.15
    cuff_width: float = 1.2
    cuff_end: float = 0.9  # long sleeves end this far down the forearm
    shorts_skin_width: float = 0.96  # the bare thigh under shorts, relative to the thigh
    trouser_knee: float = 0.3  # trousers are redrawn over the knee joint up to this far up the thigh
    trouser_knee_width: float = 0.92
    foot_front: float = 0.45  # a shoe's visible length in a front view (of foot_length); side adds the rest
    foot_drop: float = 0.4  # shoe centre below the ankle (of foot_height)
    foot_ahead: float = 0.35  # shoe centre ahead of the ankle in side views (of its length)
    backpack_round: float = 0.2  # its lobes' centres inset from its ends (of its width)
    backpack_top: float = 0.45  # its two lobes' radii (of its width)
    backpack_bottom: float = 0.5
    backpack_side: float = 0.3  # the same seen from the side
    backpack_side_bottom: float = 0.35
    backpack_depth: float = 0.25  # how far it sticks out behind in side views (of its width)
    strap_width: float = 0.05  # (T)
    strap_length: float = 0.55  # shoulder straps reach this far toward the hip
    bag_out: float = 1.3  # bag centre outside the hip (of the hip margin)
    bag_drop: float = 0.05  # (T)
    bag_strap: float = 0.045  # (T)
    bag_back: float = 0.3  # bag behind the hip in side views (of the facing direction)
    neck_length: float = 0.6  # the neck is drawn from the neck joint this far toward the head centre
    face_min_cos: float = -0.35  # the face is drawn when cos(yaw) exceeds this
    face_drop: float = 0.17  # face centre below the head centre (of ry)
    face_ahead: float = 0.3  # face centre ahead in side views (of rx)
    face_ry: float = 0.8
    face_rx: float = 0.84  # face half-width in a front view (of rx), narrowing by face_rx_side at the side
    face_rx_side: float = 0.3
    ear_ry: float = 0.2
    ear_rx: float = 0.16
    bun_up: float = 0.8  # bun above the head centre (of ry), behind by bun_back (of rx)
    bun_back: float = 0.5
    bun_ry: float = 0.35
    bun_rx: float = 0.4
    hat_up: float = 0.25  # the crown's centre above the head centre (of ry)
    hat_ry: float = 0.85
    hat_rx: float = 1.08
    brim_ahead: float = 0.9  # (of rx)
    brim_ry: float = 0.12
    brim_rx: float = 0.7  # (of rx), plus brim_rx_side in side views
    brim_rx_side: float = 0.5
    long_hair_ry: float = 0.55  # long hair: an ellipse from the head down hair_length
    long_hair_rx: float = 1.1
    long_hair_back: float = 0.35  # hangs behind the head in side views (of rx)
    logo_drop: float = 0.1  # logo below the chest centre (T)
    logo_radius: float = 0.6  # polygon logos' circumradius (of the logo size)
    logo_bar: float = 0.4  # bar logo thickness (of its length)


SHAPES = Shapes()


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
    i_skin, skin = _color(rng, a.skin, a.skin_hair_jitter)
    i_hair, hair = _color(rng, a.hair, a.skin_hair_jitter)
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
    i_shoes, shoes = _color(rng, a.shoes, a.skin_hair_jitter)
    hat = _color(rng, a.accessory, j)[1] if rng.random() < a.hat_prob else None
    backpack = _color(rng, a.accessory, j)[1] if rng.random() < a.backpack_prob else None
    bag = _color(rng, a.accessory, j)[1] if rng.random() < a.bag_prob else None
    return Identity(
        skin=skin, hair=hair, hair_style=style, hair_length=rng.uniform(*b.long_hair_length), hat=hat,
        upper=upper, upper2=upper2, pattern=pattern, pattern_period=period,
        logo_shape=LOGO_SHAPES[rng.integers(len(LOGO_SHAPES))], two_tone_split=rng.uniform(*a.two_tone_split),
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
        col(who.upper, GARMENT_ALPHA if who.pattern in PATTERNED else 255),
        col(who.lower),
        col(who.shoes),
    )
    mid_hip = (p[R_HIP] + p[L_HIP]) / 2
    down = _unit(mid_hip - p[NECK])
    g = SHAPES
    chest = _lerp(p[NECK], mid_hip, g.chest)

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
        _circle_pts(mid_hip + down * g.crotch * t, m_hip),
    ]))  # fmt: skip

    def arm(side: str) -> None:
        s, e, w = (p[j] for j in ARMS[side])
        canvas.line(s, e, body.upper_arm_width * t * bw, skin)
        canvas.line(e, w, body.forearm_width * t * bw, skin)
        canvas.ellipse(
            w + _unit(w - e) * body.hand_offset * t, body.hand_radius * t, body.hand_radius * t, skin
        )
        if who.sleeves == "short":
            canvas.line(
                s, _lerp(s, e, who.sleeve_end), body.upper_arm_width * t * bw * g.sleeve_short_width, upper
            )
        elif who.sleeves == "long":
            canvas.line(s, e, body.upper_arm_width * t * bw * g.sleeve_long_width, upper)
            canvas.line(e, _lerp(e, w, g.cuff_end), body.forearm_width * t * bw * g.cuff_width, upper)

    def leg(side: str) -> None:
        h, k, a = (p[j] for j in LEGS[side])
        wt, ws = body.thigh_width * t * bw, body.shin_width * t * bw
        lower_legs = who.lower_type == "trousers"
        canvas.line(h, k, wt, lower if who.lower_type != "skirt" else skin)
        canvas.line(k, a, ws, lower if lower_legs else skin)
        if who.lower_type == "shorts":
            canvas.line(k, _lerp(h, k, who.lower_end), wt * g.shorts_skin_width, skin)
        if lower_legs:
            canvas.line(k, _lerp(k, h, g.trouser_knee), wt * g.trouser_knee_width, lower)
        # shoe: a flat ellipse under the ankle, long in side views
        length = body.foot_length * t * (g.foot_front + (1 - g.foot_front) * abs(sin_y))
        c = a + np.array([body.foot_height * t * g.foot_drop, 0.0]) + fwd * abs(sin_y) * length * g.foot_ahead
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
        centre = _lerp(p[NECK], mid_hip, g.chest + g.logo_drop)
        def pack(c0, r_top: float, r_bottom: float) -> None:
            """A rounded box of height bh around c0: the hull of a top and a bottom circle."""
            dy = bh / 2 - bw_ * g.backpack_round
            canvas.poly(_hull(np.concatenate([_circle_pts(c0 + [-dy, 0], bw_ * r_top),
                                              _circle_pts(c0 + [dy, 0], bw_ * r_bottom)])), c)  # fmt: skip

        if where == "back":
            pack(centre, g.backpack_top, g.backpack_bottom)
        elif where == "side":
            pack(centre - fwd * (m_sh + bw_ * g.backpack_depth), g.backpack_side, g.backpack_side_bottom)
        else:  # straps over the shoulders
            for s in (R_SHO, L_SHO):
                canvas.line(
                    p[s], _lerp(p[s], p[R_HIP if s == R_SHO else L_HIP], g.strap_length), g.strap_width * t, c
                )

    def bag(draw_bag: bool) -> None:
        if who.bag is None:
            return
        c = col(who.bag)
        hip = p[R_HIP] if who.bag_side == "r" else p[L_HIP]
        other_sho = p[L_SHO] if who.bag_side == "r" else p[R_SHO]
        outward = _unit(hip - mid_hip) if mode != "side" else -fwd * g.bag_back
        centre = hip + outward * m_hip * g.bag_out + down * g.bag_drop * t
        canvas.line(other_sho, centre, g.bag_strap * t, c)
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
        c = head + np.array([length / 2, 0.0]) - (fwd * abs(sin_y) * rx * g.long_hair_back)
        canvas.ellipse(c, ry * g.long_hair_ry + length / 2, rx * g.long_hair_rx, hair, angle=-tilt)

    face, face_vis = face_joints(head, pose.yaw, t, body, pcfg)

    def head_parts() -> None:
        canvas.line(p[NECK], _lerp(p[NECK], head, g.neck_length), body.neck_width * t * bw, skin)
        bald = who.hair_style == "bald"
        canvas.ellipse(head, ry, rx, skin if bald else hair, angle=-tilt)
        if cos_y > g.face_min_cos:  # the face: the lower front part of the head
            fc = head + np.array([g.face_drop * ry, sin_y * g.face_ahead * rx])
            canvas.ellipse(
                fc, g.face_ry * ry, rx * (g.face_rx - g.face_rx_side * abs(sin_y)), skin, angle=-tilt
            )
        for (y, x), v, i in zip(face, face_vis, range(5)):
            if i >= 3 and v:  # ears
                canvas.ellipse((y, x), g.ear_ry * ry, g.ear_rx * rx, skin)
        if who.hair_style == "bun":
            canvas.ellipse(
                head + np.array([-g.bun_up * ry, -sin_y * g.bun_back * rx]),
                g.bun_ry * ry,
                g.bun_rx * rx,
                hair,
            )
        if who.hat is not None:
            hc = col(who.hat)
            canvas.ellipse(
                head - np.array([g.hat_up * ry, 0.0]),
                g.hat_ry * ry,
                g.hat_rx * rx,
                hc,
                angle=-tilt,
                start=180,
                end=360,
            )
            brim = head - np.array([g.hat_up * ry, 0.0]) + fwd * sin_y * rx * g.brim_ahead
            canvas.ellipse(brim, g.brim_ry * ry, rx * (g.brim_rx + g.brim_rx_side * abs(sin_y)), hc)
        for (y, x), v, i in zip(face, face_vis, range(5)):
            if i in (1, 2) and v:
                canvas.ellipse((y, x), body.eye_radius * t, body.eye_radius * t, EYE_COLOR)

    def torso_parts() -> None:
        canvas.poly(torso, upper)
        if who.pattern == "logo" and mode == "front":
            size = who.pattern_period * t
            c2 = col(who.upper2)
            centre = chest + np.array([g.logo_drop * t, 0.0])
            if who.logo_shape == "circle":
                canvas.ellipse(centre, size / 2, size / 2, c2)
            elif who.logo_shape == "square":
                canvas.poly(_circle_pts(centre, size * g.logo_radius, 4, np.pi / 4), c2)
            elif who.logo_shape == "triangle":
                canvas.poly(_circle_pts(centre, size * g.logo_radius, 3, np.pi / 2), c2)
            else:
                canvas.line(centre - [0, size / 2], centre + [0, size / 2], size * g.logo_bar, c2)

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
        leg("r")
        leg("l")
        lower_body()
        arm("r")
        arm("l")
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
    if who.pattern in PATTERNED:
        _apply_pattern(canvas, who, p, t, rng, image_jitter)

    kp = to_coco(p, face)
    vis = np.ones(len(kp), bool)
    vis[[0, 14, 15, 16, 17]] = face_vis
    if pcfg.hide_occluded:
        # (hulls are [y, x] point lists; testing [y, x] points against them is consistent)
        parts = (torso, pelvis) if mode == "side" else (torso,)
        covers = [h.astype(np.float32).reshape(-1, 1, 2) for h in parts]
        for side in behind:
            for j in ARMS[side][1:]:
                pt = (float(p[j][0]), float(p[j][1]))
                if any(cv2.pointPolygonTest(c, pt, False) >= 0 for c in covers):
                    vis[j] = False
    return kp, vis


def _apply_pattern(canvas: Canvas, who: Identity, p: np.ndarray, t: float, rng, jitter: float) -> None:
    """Lay stripes, checks or a two-tone split over the upper-garment pixels still visible (those that
    kept the marker alpha), then mark them opaque."""
    img = canvas.img
    garment = cv2.extractChannel(img, 3) == GARMENT_ALPHA
    rows = np.flatnonzero(garment.any(1))
    if not len(rows):
        return
    y0, y1 = rows[0], rows[-1] + 1
    s = canvas.s
    yy = np.arange(y0, y1) - p[NECK][0] * s
    half = max(1.0, who.pattern_period * t * s / 2)
    if who.pattern == "stripes":
        on = ((yy // half) % 2 == 1)[:, None]
    elif who.pattern == "checks":
        xx = np.arange(img.shape[1])
        on = ((yy // half)[:, None] + (xx // half)[None, :]) % 2 == 1
    else:
        mid_y = (p[R_HIP][0] + p[L_HIP][0]) / 2
        on = (yy >= who.two_tone_split * (mid_y - p[NECK][0]) * s)[:, None]
    c2 = np.clip(who.upper2 + rng.normal(size=3) * jitter, 0, 255)
    roi = img[y0:y1]
    g = garment[y0:y1]
    roi[..., 3][g] = 255
    roi[g & on] = (*np.rint(c2).astype(np.uint8), 255)
