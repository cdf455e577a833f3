"""The Market-1501 folder layout and its image names `PPPP_cCsS_FFFFFF_BB.jpg`.

pid -1 marks junk images and pid 0 distractors; cameras are 1 to 6. torchreid's `Market1501` parser reads
`([-\\d]+)_c(\\d)` from `*.jpg` names and asserts 0 <= pid <= 1501 (or -1) and 1 <= camid <= 6.

The camera rule has one home, `name_problem`: a Market-shaped name with camera 0 or 7 to 9 is not a Market name,
and `check_cameras` refuses it wherever names come in (root folders, keypoint files, pairs files), so no command
accepts what another refuses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reidaug.errors import ReidaugError, offenders

SPLITS = {"train": "bounding_box_train", "gallery": "bounding_box_test", "query": "query"}
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
IMAGE_SIZE = (128, 64)  # H, W of a Market-1501 crop (and of reidaug synth's)
JUNK_PID = -1
DISTRACTOR_PID = 0

CAMERAS = range(1, 7)  # Market-1501's cameras c1..c6
_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d+)_(\d{6})_(\d{2})\.(jpg|jpeg|png)$")  # Market-shaped


@dataclass(frozen=True)
class MarketName:
    pid: int
    camid: int
    sequence: int
    frame: int
    bbox: int
    ext: str = "jpg"

    def __str__(self) -> str:
        return format_name(self.pid, self.camid, self.sequence, self.frame, self.bbox, self.ext)


def name_problem(name: str) -> str | None:
    """Why `name` (a bare name or a path) is not a Market image name; None when it is one."""
    m = _NAME.match(Path(name).name)
    if m is None:
        return "expected PPPP_cCsS_FFFFFF_BB.jpg"
    if int(m.group(2)) not in CAMERAS:
        return f"camera {m.group(2)} outside Market's range 1..6"
    return None


def parse_name(name: str) -> MarketName:
    """Parse `0002_c1s1_000451_03.jpg`; raise ReidaugError for names that are not Market names."""
    problem = name_problem(name)
    if problem is not None:
        raise ReidaugError(f"not a Market-1501 image name: {name!r} ({problem})")
    pid, cam, seq, frame, bbox, ext = _NAME.match(Path(name).name).groups()
    return MarketName(int(pid), int(cam), int(seq), int(frame), int(bbox), ext)


def is_market_name(name: str) -> bool:
    return name_problem(name) is None


def check_cameras(names, where) -> None:
    """Refuse Market-shaped names whose camera is outside 1..6 (other names are not Market names and pass)."""
    bad = [n for n in names if (m := _NAME.match(Path(str(n)).name)) and int(m.group(2)) not in CAMERAS]
    if bad:
        raise ReidaugError(f"{where}: {len(bad)} image names have a camera outside Market's range 1..6: "
                           f"{offenders(bad)}")  # fmt: skip


def format_name(pid: int, camid: int, sequence: int, frame: int, bbox: int, ext: str = "jpg") -> str:
    """The inverse of `parse_name`. Raises for values torchreid's Market parser would reject."""
    if not (pid == JUNK_PID or 0 <= pid <= 1501):
        raise ReidaugError(f"pid {pid} outside Market's range (-1 or 0..1501)")
    if camid not in CAMERAS:
        raise ReidaugError(f"camera {camid} outside Market's range 1..6")
    if not (0 <= sequence <= 9 and 0 <= frame <= 999_999 and 0 <= bbox <= 99):
        raise ReidaugError(f"sequence/frame/bbox out of range: s{sequence} f{frame} b{bbox}")
    p = "-1" if pid == JUNK_PID else f"{pid:04d}"
    return f"{p}_c{camid}s{sequence}_{frame:06d}_{bbox:02d}.{ext}"


def check_root(root: str | Path, require=()) -> Path:
    """A Market root that exists as a folder and holds the folders of the `require`d splits; one error line."""
    root = Path(root)
    if not root.is_dir():
        raise ReidaugError(f"Market root {root} is not a folder")
    missing = [SPLITS[s] for s in require if not (root / SPLITS[s]).is_dir()]
    if missing:
        raise ReidaugError(f"Market root {root} lacks {', '.join(missing)}")
    return root


ANNOTATIONS = "annotations"  # ROOT/annotations/{train,test,query}.csv: the keypoints of each folder


def annotation_path(root: str | Path, split: str = "train") -> Path:
    """The default keypoint file of a split: ROOT/annotations/<split>.csv (what `reidaug synth` writes)."""
    if split not in ("train", "test", "query"):
        raise ReidaugError(f"unknown annotation split {split!r}; choose from train, test, query")
    return Path(root) / ANNOTATIONS / f"{split}.csv"


def pid_of(name: str) -> str:
    """Identity key as the pair rule uses it: the text before the first underscore."""
    return Path(name).name.split("_", 1)[0]


def read_split(root: str | Path, split: str) -> pd.DataFrame:
    """One Market folder as a table: name, path, pid, camid, sequence, frame, bbox (sorted by name)."""
    if split not in SPLITS:
        raise ReidaugError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    folder = Path(root) / SPLITS[split]
    if not folder.is_dir():
        raise ReidaugError(f"missing folder {folder} (a Market root has {', '.join(SPLITS.values())})")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise ReidaugError(f"empty folder {folder}: no .jpg/.png images")
    check_cameras([p.name for p in files], folder)
    bad = [p.name for p in files if not is_market_name(p.name)]
    if bad:
        raise ReidaugError(f"{len(bad)} image names in {folder} do not parse as Market names: {offenders(bad)}")
    rows = []
    for p in files:
        n = parse_name(p.name)
        rows.append((p.name, str(p), n.pid, n.camid, n.sequence, n.frame, n.bbox))
    return pd.DataFrame(rows, columns=["name", "path", "pid", "camid", "sequence", "frame", "bbox"])


def read_market(root: str | Path, splits=tuple(SPLITS)) -> pd.DataFrame:
    """All requested splits of a Market root in one table with a `split` column."""
    root = check_root(root)
    frames = [read_split(root, s).assign(split=s) for s in splits]
    return pd.concat(frames, ignore_index=True)


def split_dir(root: str | Path, split: str) -> Path:
    """`root/bounding_box_train` for split "train" (also "gallery" and "query")."""
    if split not in SPLITS:
        raise ReidaugError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    return Path(root) / SPLITS[split]


def market_image_path(root: str | Path, split: str, name: str) -> Path:
    """Where image `name` of `split` lives in a Market root; the name must parse as a Market name."""
    parse_name(name)
    if Path(name).name != name:
        raise ReidaugError(f"image name {name!r} must be a bare file name, not a path")
    return split_dir(root, split) / name


def write_market_image(root: str | Path, split: str, name: str, rgb, quality: int = 95) -> Path:
    """Write an RGB uint8 image atomically into a Market root (creating the split folder); returns its path."""
    from reidaug.data.images import write_image

    path = market_image_path(root, split, name)
    write_image(path, rgb, quality)
    return path
