"""The synthetic dataset's configuration: counts, pose prior use, body proportions, appearance palettes and
the six cameras. Every number the generator uses is a field here (YAML: configs/synth/*.yaml).

Lengths of the body are in units of the torso length T (neck to mid-hip), which the pose prior measures on
real Market crops; pixel values refer to the 128x64 output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reidaug.data.market import CAMERAS as MARKET_CAMERAS
from reidaug.errors import ReidaugError

RGB = list[int]


def _f(value):
    """A mutable default (OmegaConf wants default_factory for lists and dicts)."""
    import copy

    return field(default_factory=lambda: copy.deepcopy(value))


@dataclass
class DatasetConfig:
    """How many identities and images, and the Market naming of the output."""

    seed: int = 0  # non-negative; every image's random stream is keyed by (seed, split, index)
    train_ids: int = 100
    test_ids: int = 100
    images_per_id: list[int] = _f([10, 14])  # train images of one identity, inclusive range
    test_images_per_id: list[int] = _f([10, 14])  # query + gallery images of one test identity
    cameras_per_id: list[int] = _f([2, 5])  # cameras one identity is seen by (>= 2: cross-camera matching)
    num_cameras: int = 6
    distractors: int = 80  # gallery images of pid 0000 (background or body fragments)
    junk: int = 50  # gallery images of pid -1 (badly cropped detections of test identities)
    pid_max: int = 1501  # identities are drawn from 1..pid_max (torchreid's Market parser: pid <= 1501)
    sequences: int = 6  # the `sS` of a Market name: s1..sS
    frame_step: list[int] = _f([4, 40])  # frames between two images of one track
    height: int = 128
    width: int = 64
    ext: str = "jpg"
    distractor_empty: float = 0.4  # share of distractors that are background only (else body fragments)
    fragment_zoom: list[float] = _f([1.8, 3.0])  # distractor fragments: a body this much too large
    junk_shift: list[float] = _f([0.3, 0.55])  # junk: a test person shifted sideways (fraction of the width)
    junk_zoom: list[float] = _f([0.45, 0.7])
    junk_sideways: float = 0.5  # share of junk shifted sideways (the rest is too small)
    fragment_shift: list[float] = _f([-0.6, 0.4, -0.3, 0.3])  # y range (times the zoom), x range; crop sizes
    junk_small_shift: list[float] = _f(
        [0.0, 0.3, -0.25, 0.25]
    )  # y range, x range of the too-small junk  # ... or this much too small
    workers: int = 1  # processes; the bytes do not depend on it
    chunk: int = 32  # images per work unit


@dataclass
class PoseConfig:
    """Poses come from a prior of real Market poses (cluster centres with view labels) plus jitter."""

    prior: str = ""  # npz path; "" = the packaged reidaug/assets/pose_prior.npz
    view_probs: dict[str, float] = _f({"front": 0.36, "back": 0.36, "left": 0.14, "right": 0.14})
    track_view_keep: float = 0.8  # probability that an image keeps its track's view (else any view)
    joint_noise: float = 0.35  # Gaussian noise per joint, in units of the cluster's spread
    lean_deg: float = 4.0  # sd of a whole-body rotation
    aspect_jitter: float = 0.06  # sd of a horizontal stretch
    yaw_noise_deg: float = 12.0
    scale_jitter: list[float] = _f([0.92, 1.1])  # multiplies the real torso-length distribution
    framing_sd: float = 1.0  # multiplies the real sd of torso length and mid-hip position
    truncate_prob: float = 0.12  # zoomed-in crops whose feet fall outside the frame
    truncate_zoom: list[float] = _f([1.15, 1.45])
    shift_top_prob: float = 0.04  # crops whose head is cut at the top
    shift_top_frac: list[float] = _f([0.06, 0.18])  # fraction of the height the body moves up
    # Which face joints a detector sees: the cosine between the joint's surface normal and the view
    # direction must exceed this (nose/eyes face forward, ears sideways).
    face_visible_min: float = 0.25
    ear_visible_min: float = -0.35
    # Arm joints drawn behind the torso (back views, far arm of side views) count as hidden (-1).
    hide_occluded: bool = True
    views_front_max_deg: float = 45.0  # |yaw| below: front; above 180 - this: back; between: side


@dataclass
class BodyConfig:
    """Proportions (units of the torso length T) and the head model."""

    supersample: int = 2  # people are drawn at this multiple of the output size, then area-averaged
    build: list[float] = _f([0.86, 1.18])  # per-identity width multiplier
    head_rx: float = 0.23
    head_ry: float = 0.28
    neck_width: float = 0.17
    upper_arm_width: float = 0.19
    forearm_width: float = 0.15
    hand_radius: float = 0.075
    hand_offset: float = 0.06  # hand centre beyond the wrist, along the forearm
    thigh_width: float = 0.27
    shin_width: float = 0.19
    foot_length: float = 0.3
    foot_height: float = 0.1
    torso_margin_front: float = 0.02  # torso polygon grows by this around shoulders and hips (front view)
    torso_margin_side: float = 0.14  # ... and by this in side views (the chest's depth)
    hip_margin: float = 0.08
    sleeve_short: list[float] = _f([0.45, 0.8])  # short sleeve ends this far down the upper arm
    shorts_length: list[float] = _f([0.45, 0.8])  # shorts end this far down the thigh
    skirt_length: list[float] = _f([0.55, 1.05])  # skirt hem below the mid-hip
    skirt_flare: float = 0.14
    upper_length: list[float] = _f([0.0, 0.22])  # top garment ends this far below the hips
    long_hair_length: list[float] = _f([0.45, 0.85])
    backpack_size: list[float] = _f([0.42, 0.58])  # width, height in T
    bag_size: list[float] = _f([0.3, 0.26])
    eye_radius: float = 0.03
    shading: float = 0.3  # limb edges darken by this much (rounded look)
    shading_blur: float = 0.12  # blur of the coverage mask that gives the shading, in T
    shadow_drop: float = 0.12  # contact shadow centre below the ankles (T)
    shadow_size: list[float] = _f([0.5, 0.09])  # its half-width, half-height (T)
    shadow_blur: float = 0.06  # (T)
    shadow_jitter: list[float] = _f([0.5, 1.0])  # per-image factor on the camera's shadow strength
    # Head model: points in head-local units (x: person's left, y: down, z: forward) and their normals'
    # forward share, used to project face joints for any yaw. Order: nose, r_eye, l_eye, r_ear, l_ear.
    face_points: list[list[float]] = _f(
        [[0.0, 0.22, 0.95], [-0.38, -0.05, 0.85], [0.38, -0.05, 0.85], [-0.92, 0.02, 0.0], [0.92, 0.02, 0.0]]
    )


@dataclass
class AppearanceConfig:
    """Identity attributes: palettes (RGB) and how often each option is drawn. Palettes are shared by all
    identities so that no single colour identifies anyone; the combination does."""

    skin: list[RGB] = _f(
        [[236, 200, 170], [222, 179, 142], [198, 152, 112], [170, 122, 88], [128, 88, 62], [92, 62, 45]]
    )
    hair: list[RGB] = _f(
        [[20, 18, 18], [44, 32, 26], [78, 52, 34], [120, 86, 52], [186, 150, 96], [120, 120, 120]]
    )
    hair_styles: dict[str, float] = _f({"short": 0.55, "long": 0.3, "bald": 0.05, "bun": 0.1})
    garment: list[RGB] = _f(
        [
            [24, 24, 28], [235, 235, 232], [128, 128, 130], [30, 40, 80], [50, 90, 170], [120, 170, 220],
            [180, 30, 35], [110, 25, 35], [230, 140, 160], [235, 200, 40], [40, 120, 60], [110, 120, 60],
            [195, 175, 135], [110, 75, 45], [110, 60, 140], [235, 120, 40], [60, 170, 160], [200, 200, 120],
        ]
    )  # fmt: skip
    lower: list[RGB] = _f(
        [
            [22, 22, 26], [60, 60, 64], [30, 38, 70], [60, 90, 140], [110, 140, 180], [190, 170, 130],
            [230, 230, 226], [100, 72, 50], [120, 120, 122], [90, 95, 60], [200, 120, 140], [160, 40, 45],
        ]
    )  # fmt: skip
    shoes: list[RGB] = _f(
        [[20, 20, 20], [235, 235, 235], [120, 120, 120], [90, 60, 40], [170, 40, 40], [40, 60, 130]]
    )
    accessory: list[RGB] = _f(
        [
            [25, 25, 25],
            [70, 70, 75],
            [35, 50, 110],
            [150, 30, 30],
            [120, 90, 60],
            [210, 200, 180],
            [60, 110, 70],
        ]
    )
    patterns: dict[str, float] = _f(
        {"solid": 0.42, "stripes": 0.16, "checks": 0.12, "logo": 0.15, "two_tone": 0.15}
    )
    sleeves: dict[str, float] = _f({"short": 0.5, "long": 0.42, "none": 0.08})
    lower_types: dict[str, float] = _f({"trousers": 0.62, "shorts": 0.23, "skirt": 0.15})
    stripe_period: list[float] = _f([0.1, 0.22])  # in T
    check_period: list[float] = _f([0.14, 0.26])
    logo_size: list[float] = _f([0.16, 0.28])
    two_tone_split: list[float] = _f([0.35, 0.6])  # where a two-tone top changes colour, neck to hip
    backpack_prob: float = 0.22
    bag_prob: float = 0.2
    hat_prob: float = 0.1
    color_jitter: float = 10.0  # sd of a per-identity RGB offset from the palette colour (clothes, bags)
    skin_hair_jitter: float = 5.0  # the same for skin, hair and shoes
    image_color_jitter: float = 4.0  # sd of a per-image RGB offset (clothes under changing light)


@dataclass
class CameraConfig:
    """One camera: its background plate, light and degradations (ranges are drawn per image)."""

    name: str = "plaza"
    wall: RGB = _f([190, 180, 165])
    ground: RGB = _f([150, 148, 140])
    horizon: float = 0.45  # where the ground starts, as a fraction of the plate height
    wall_pattern: str = "windows"  # windows | bricks | trees | glass | fence | plain
    wall_detail: RGB = _f([110, 120, 130])
    ground_pattern: str = "tiles"  # tiles | bricks | steps | asphalt | grass | plain
    ground_detail: RGB = _f([120, 118, 112])
    pattern_px: float = 14.0  # size of the wall/ground pattern in plate pixels
    props: list[str] = _f(["pole", "bike"])  # pole | bike | bin | tree | car
    num_props: list[int] = _f([2, 5])
    texture: float = 14.0  # amplitude of a smooth random texture
    grain: float = 5.0  # amplitude of per-pixel texture
    gain: list[float] = _f([1.0, 1.0, 1.0])  # colour cast (RGB multipliers)
    brightness: list[float] = _f([-8.0, 8.0])  # added after the gain
    contrast: list[float] = _f([0.9, 1.05])
    saturation: list[float] = _f([0.7, 0.9])  # colour saturation kept (the sensor and the JPEG mute colours)
    light_gradient: float = 0.12  # strength of a linear light fall-off across the crop
    shadow: float = 0.3  # darkness of the person's contact shadow
    downscale: list[float] = _f([0.55, 0.85])  # the crop was detected at this fraction of 128x64
    blur: list[float] = _f([0.3, 0.8])  # Gaussian sigma (px)
    motion_blur: list[float] = _f([0.0, 0.0])  # horizontal motion length (px)
    noise: list[float] = _f([2.0, 4.0])  # Gaussian noise sd (of 255)
    jpeg: list[int] = _f([80, 92])
    plate: list[float] = _f([1.6, 5.0])  # background plate size in crop heights, crop widths
    zoom: list[float] = _f([0.8, 1.25])  # background magnification per image
    horizon_jitter: float = 0.12  # sd of the horizon's position in the crop (fraction of the height)


def _cam(**kw) -> CameraConfig:
    return CameraConfig(**kw)


CAMERAS = [
    _cam(name="plaza", wall=[196, 186, 170], ground=[158, 154, 146], horizon=0.42, wall_pattern="windows",
         wall_detail=[96, 110, 124], ground_pattern="tiles", ground_detail=[128, 124, 118], props=["pole", "bike", "bin"],
         gain=[1.02, 1.0, 0.97], blur=[0.3, 0.7], noise=[2.0, 4.0], jpeg=[82, 94]),
    _cam(name="campus-green", wall=[70, 110, 60], ground=[150, 150, 138], horizon=0.35, wall_pattern="trees",
         wall_detail=[40, 80, 40], ground_pattern="bricks", ground_detail=[120, 118, 108], props=["bike", "pole"],
         gain=[0.95, 1.04, 0.98], blur=[0.5, 1.0], noise=[2.5, 5.0], jpeg=[78, 90], pattern_px=10.0),
    _cam(name="brick-wall", wall=[150, 84, 64], ground=[96, 94, 92], horizon=0.58, wall_pattern="bricks",
         wall_detail=[112, 60, 46], ground_pattern="asphalt", ground_detail=[80, 80, 80], props=["pole", "bin"],
         gain=[1.07, 0.99, 0.9], brightness=[-4.0, 10.0], blur=[0.3, 0.7], noise=[2.0, 4.0], jpeg=[80, 92],
         pattern_px=8.0),
    _cam(name="doorway", wall=[52, 56, 62], ground=[118, 116, 112], horizon=0.62, wall_pattern="glass",
         wall_detail=[90, 104, 118], ground_pattern="tiles", ground_detail=[96, 96, 94], props=["pole"],
         num_props=[0, 2], gain=[0.92, 0.98, 1.1], brightness=[-16.0, -2.0], contrast=[0.85, 1.0],
         blur=[0.4, 0.9], noise=[4.0, 7.0], jpeg=[70, 85], light_gradient=0.2),
    _cam(name="road", wall=[150, 160, 150], ground=[92, 92, 96], horizon=0.3, wall_pattern="fence",
         wall_detail=[60, 64, 60], ground_pattern="asphalt", ground_detail=[210, 210, 200], props=["car", "bike", "tree"],
         gain=[0.97, 1.0, 1.05], blur=[0.6, 1.1], motion_blur=[0.0, 3.0], noise=[2.5, 5.0], jpeg=[76, 90]),
    _cam(name="stone-steps", wall=[206, 198, 178], ground=[186, 176, 156], horizon=0.4, wall_pattern="plain",
         wall_detail=[170, 160, 140], ground_pattern="steps", ground_detail=[150, 140, 122], props=["tree", "bin"],
         gain=[1.06, 1.02, 0.94], brightness=[4.0, 18.0], contrast=[0.8, 0.95], blur=[0.3, 0.8],
         noise=[1.5, 3.5], jpeg=[75, 90], pattern_px=12.0),
]  # fmt: skip


@dataclass
class PreviewConfig:
    """The sample grid: `ids` identities (rows) with `per_id` images each, every image shown plain and
    with its skeleton; then `extra` distractor and junk images; upscaled by `scale` (nearest)."""

    ids: int = 6
    per_id: int = 6
    scale: int = 2


@dataclass
class SynthConfig:
    synth: DatasetConfig = field(default_factory=DatasetConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    body: BodyConfig = field(default_factory=BodyConfig)
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    # Market cameras c1..c6 (override one with e.g. --set cameras.c4.jpeg=[60,75])
    cameras: dict[str, CameraConfig] = field(
        default_factory=lambda: {f"c{i + 1}": CameraConfig(**vars(c)) for i, c in enumerate(CAMERAS)}
    )
    preview: PreviewConfig = field(default_factory=PreviewConfig)


WALL_PATTERNS = ("windows", "bricks", "trees", "glass", "fence", "plain")
GROUND_PATTERNS = ("tiles", "bricks", "steps", "asphalt", "grass", "plain")
PROPS = ("pole", "bike", "bin", "tree", "car")
VIEWS = ("front", "back", "left", "right")


def validate(cfg: SynthConfig) -> SynthConfig:
    """Raise ReidaugError (one line) for values the generator cannot honour."""
    d = cfg.synth

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ReidaugError(f"bad synth config: {msg}")

    def rng_pair(name: str, v, lo=None, hi=None) -> None:
        need(len(v) == 2, f"{name} must be [min, max], got {v}")
        need(v[0] <= v[1], f"{name} must be [min, max] with min <= max, got {v}")
        if lo is not None:
            need(v[0] >= lo, f"{name} must be >= {lo}, got {v}")
        if hi is not None:
            need(v[1] <= hi, f"{name} must be <= {hi}, got {v}")

    need(
        0 <= d.junk_sideways <= 1 and 0 <= d.distractor_empty <= 1,
        "synth.junk_sideways and synth.distractor_empty must be probabilities",
    )
    need(
        len(d.fragment_shift) == 4 and len(d.junk_small_shift) == 4,
        "synth.fragment_shift and synth.junk_small_shift must be [y_min, y_max, x_min, x_max]",
    )
    need(0 <= d.seed < 2**63, f"synth.seed must be a non-negative integer, got {d.seed}")
    for k in ("train_ids", "test_ids", "distractors", "junk"):
        need(getattr(d, k) >= 0, f"synth.{k} must be >= 0, got {getattr(d, k)}")
    need(d.train_ids + d.test_ids >= 1, "synth.train_ids + synth.test_ids must be >= 1")
    need(1 <= d.pid_max <= 1501, f"synth.pid_max must be in 1..1501 (Market names), got {d.pid_max}")
    need(
        d.train_ids + d.test_ids <= d.pid_max,
        f"synth.train_ids + synth.test_ids = {d.train_ids + d.test_ids} exceeds synth.pid_max = {d.pid_max}",
    )
    need(
        2 <= d.num_cameras <= 6,
        f"synth.num_cameras must be in 2..6 (Market cameras c1..c6), got {d.num_cameras}",
    )
    names = [f"c{i}" for i in range(1, d.num_cameras + 1)]
    need(
        set(cfg.cameras) <= {f"c{i}" for i in MARKET_CAMERAS},
        f"cameras are Market's c1..c6; got {', '.join(sorted(set(cfg.cameras) - {f'c{i}' for i in MARKET_CAMERAS}))}",
    )
    need(
        all(n in cfg.cameras for n in names),
        f"cameras must define {', '.join(names)}; got {', '.join(cfg.cameras)}",
    )
    rng_pair("synth.cameras_per_id", d.cameras_per_id, 2, d.num_cameras)
    rng_pair("synth.images_per_id", d.images_per_id, 1)
    rng_pair("synth.test_images_per_id", d.test_images_per_id, 2 * d.cameras_per_id[0])
    rng_pair("synth.frame_step", d.frame_step, 1)
    need(
        d.frame_step[1] * max(d.images_per_id[1], d.test_images_per_id[1]) < 999_999,
        "synth.frame_step too large: a track's frames must stay below 999999",
    )
    need(1 <= d.sequences <= 9, f"synth.sequences must be in 1..9, got {d.sequences}")
    need(d.height >= 16 and d.width >= 8, f"synth.height/width too small: {d.height}x{d.width}")
    need(d.ext in ("jpg", "png"), f"synth.ext must be jpg or png, got {d.ext!r}")
    need(d.workers >= 1 and d.chunk >= 1, "synth.workers and synth.chunk must be >= 1")
    p = cfg.pose
    need(
        set(p.view_probs) <= set(VIEWS)
        and sum(p.view_probs.values()) > 0
        and min(p.view_probs.values()) >= 0,
        f"pose.view_probs must give non-negative weights to {', '.join(VIEWS)}",
    )
    for k in ("track_view_keep", "truncate_prob", "shift_top_prob"):
        need(0 <= getattr(p, k) <= 1, f"pose.{k} must be a probability, got {getattr(p, k)}")
    rng_pair("pose.scale_jitter", p.scale_jitter, 0.1)
    rng_pair("pose.truncate_zoom", p.truncate_zoom, 1.0)
    rng_pair("pose.shift_top_frac", p.shift_top_frac, 0.0, 1.0)
    need(p.joint_noise >= 0 and p.framing_sd >= 0, "pose.joint_noise and pose.framing_sd must be >= 0")
    b = cfg.body
    need(1 <= b.supersample <= 4, f"body.supersample must be in 1..4, got {b.supersample}")
    rng_pair("body.build", b.build, 0.1)
    need(
        len(b.face_points) == 5 and all(len(q) == 3 for q in b.face_points),
        "body.face_points must be 5 [x, y, z]",
    )
    a = cfg.appearance
    for k in ("skin", "hair", "garment", "lower", "shoes", "accessory"):
        pal = getattr(a, k)
        need(
            len(pal) >= 1 and all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in pal),
            f"appearance.{k} must be a non-empty list of [r, g, b] in 0..255",
        )
    need(len(a.garment) >= 2, "appearance.garment needs at least 2 colours (patterns use two)")
    for k, allowed in (
        ("hair_styles", ("short", "long", "bald", "bun")),
        ("patterns", ("solid", "stripes", "checks", "logo", "two_tone")),
        ("sleeves", ("short", "long", "none")),
        ("lower_types", ("trousers", "shorts", "skirt")),
    ):
        probs = getattr(a, k)
        need(
            set(probs) <= set(allowed) and sum(probs.values()) > 0 and min(probs.values()) >= 0,
            f"appearance.{k} must give non-negative weights to {', '.join(allowed)}",
        )
    for k in ("backpack_prob", "bag_prob", "hat_prob"):
        need(0 <= getattr(a, k) <= 1, f"appearance.{k} must be a probability, got {getattr(a, k)}")
    for i, c in ((n, cfg.cameras[n]) for n in names):
        need(
            c.wall_pattern in WALL_PATTERNS,
            f"cameras.{i}.wall_pattern {c.wall_pattern!r} not in {WALL_PATTERNS}",
        )
        need(
            c.ground_pattern in GROUND_PATTERNS,
            f"cameras.{i}.ground_pattern {c.ground_pattern!r} not in {GROUND_PATTERNS}",
        )
        need(all(pr in PROPS for pr in c.props), f"cameras.{i}.props must be among {PROPS}")
        need(0 < c.horizon < 1, f"cameras.{i}.horizon must be in (0, 1)")
        rng_pair(f"cameras.{i}.jpeg", c.jpeg, 1, 100)
        rng_pair(f"cameras.{i}.downscale", c.downscale, 0.1, 1.0)
        rng_pair(f"cameras.{i}.blur", c.blur, 0.0)
        rng_pair(f"cameras.{i}.motion_blur", c.motion_blur, 0.0)
        rng_pair(f"cameras.{i}.noise", c.noise, 0.0)
        rng_pair(f"cameras.{i}.contrast", c.contrast, 0.0)
        rng_pair(f"cameras.{i}.saturation", c.saturation, 0.0)
        rng_pair(f"cameras.{i}.zoom", c.zoom, 0.1)
        need(
            len(c.plate) == 2 and c.plate[0] >= 1 and c.plate[1] >= 1,
            f"cameras.{i}.plate must be [>= 1, >= 1]",
        )
        rng_pair(f"cameras.{i}.brightness", c.brightness)
        rng_pair(f"cameras.{i}.num_props", c.num_props, 0)
    pv = cfg.preview
    need(
        pv.ids >= 1 and pv.per_id >= 1 and pv.scale >= 1,
        "preview.ids, preview.per_id and preview.scale must be >= 1",
    )
    return cfg
