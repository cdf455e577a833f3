"""The portion-p protocol of the PATN paper (section 5, Table 6; architecture notes 12.1-12.2, 12.5).

M_p^R keeps a fraction p of the real training images, at least one per identity. Every removed image I~ is
replaced by a generated one: source = a random kept image of I~'s identity, target pose = I~'s keypoints
(or, for the '*' variant, a random pose of M_p^R), label = I~'s identity. M_p^A = M_p^R + generated has |M|
images. The x2/x3 enlargement adds ratio-1 generated images per real image, target poses drawn from all of M.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reidaug.data.keypoints import Annotations, present
from reidaug.errors import ReidaugError
from reidaug.generate import job_source_columns

POSE_SOURCES = ("removed", "random")
# Why a job's pose or source is not the protocol's first choice (reported in the summary).
FALLBACK_NONE = ""
FALLBACK_POSE = "no-joint-pose"  # removed image had no joint: pose of a random valid kept image, same identity
FALLBACK_SOURCE = "no-valid-source"  # no kept image of the identity has a valid pose: any kept image


def select_reduced(train: pd.DataFrame, portion: float, seed: int) -> np.ndarray:
    """Boolean mask of the kept images: one random image per identity, then uniform draws from the rest
    up to round(p * |M|) images in total (exactly one per identity when that is fewer)."""
    if not 0.0 < portion <= 1.0:
        raise ReidaugError(f"portion must be in (0, 1], got {portion}")
    n = len(train)
    rng = np.random.default_rng(seed)
    kept = np.zeros(n, dtype=bool)
    pids = train["pid"].to_numpy()
    order = rng.permutation(n)
    # First occurrence of each pid in a random order = one random image per identity.
    _, first = np.unique(pids[order], return_index=True)
    kept[order[first]] = True
    target = max(int(round(portion * n)), int(kept.sum()))
    rest = np.flatnonzero(~kept)
    extra = rng.choice(rest, size=target - int(kept.sum()), replace=False) if target > kept.sum() else []
    kept[extra] = True
    return kept


def has_joint(coords: np.ndarray) -> np.ndarray:
    """Pose usable as a source/target: any joint detected (notes 12.5 keep I~'s pose if >= 1 joint)."""
    return present(coords).any(axis=-1)


def _more_sources(rng: np.random.Generator, first: int, pool: np.ndarray, m: int) -> list[int]:
    """`first` plus m - 1 further sources from `pool` (other images of the identity): distinct while the pool
    lasts, then repeated (notes 9.6: an identity with fewer than M kept images repeats some)."""
    others = pool[pool != first]
    if m == 1:
        return [first]
    if len(others) == 0:
        return [first] * m
    picks = rng.choice(others, size=min(m - 1, len(others)), replace=False).tolist()
    if len(picks) < m - 1:
        picks += rng.choice(picks, size=m - 1 - len(picks), replace=True).tolist()
    return [first, *picks]


def plan_replacements(
    train: pd.DataFrame, kept: np.ndarray, ann: Annotations, seed: int, pose_source: str = "removed",
    num_sources: int = 1,
) -> pd.DataFrame:
    """One generation job per removed image: columns replaces, pid, camid, source[, source_1 ...],
    target_pose_from, fallback. With M = `num_sources` > 1 the sources are up to M different kept images of the
    removed image's identity (repeated when it has fewer)."""
    if pose_source not in POSE_SOURCES:
        raise ReidaugError(f"pose source must be one of {', '.join(POSE_SOURCES)}, got {pose_source!r}")
    _require_keypoints(train["name"], ann)
    rng = np.random.default_rng(seed + 1)
    names = train["name"].to_numpy()
    pids = train["pid"].to_numpy()
    has_pose = has_joint(ann.subset(names).coords)
    kept_idx = np.flatnonzero(kept)
    kept_valid = kept_idx[has_pose[kept_idx]]
    by_pid_valid = _group(kept_valid, pids)
    by_pid_any = _group(kept_idx, pids)

    rows = []
    for i in np.flatnonzero(~kept):
        pid = pids[i]
        fallback = FALLBACK_NONE
        sources = by_pid_valid.get(pid)
        if sources is None:
            sources, fallback = by_pid_any[pid], FALLBACK_SOURCE
        first = rng.choice(sources)
        src = names[_more_sources(rng, first, sources, num_sources)]
        if pose_source == "random":
            pose_from = names[rng.choice(kept_valid if len(kept_valid) else kept_idx)]
        elif has_pose[i]:
            pose_from = names[i]
        else:
            pose_from = names[rng.choice(sources)]
            fallback = fallback or FALLBACK_POSE
        rows.append((names[i], int(pid), int(train["camid"].iat[i]), *src, pose_from, fallback))
    return pd.DataFrame(rows, columns=["replaces", "pid", "camid", *job_source_columns(num_sources), "target_pose_from",
                                       "fallback"])  # fmt: skip


def plan_enlargement(train: pd.DataFrame, ann: Annotations, ratio: int, seed: int, num_sources: int = 1) -> pd.DataFrame:
    """ratio-1 jobs per real image: that image as the (first) source, a random pose of the whole training set;
    with M > 1, further sources from the identity's other images."""
    if ratio not in (2, 3):
        raise ReidaugError(f"ratio must be 2 or 3, got {ratio}")
    _require_keypoints(train["name"], ann)
    rng = np.random.default_rng(seed + 2)
    names = train["name"].to_numpy()
    poses = names[has_joint(ann.subset(names).coords)]
    if len(poses) == 0:
        raise ReidaugError("no training image has a detected joint: nothing to take target poses from")
    by_pid = _group(np.arange(len(names)), train["pid"].to_numpy())
    rows = []
    for _ in range(ratio - 1):
        picks = rng.choice(poses, size=len(names))
        for i in range(len(names)):
            pid = train["pid"].iat[i]
            src = names[_more_sources(rng, i, by_pid[pid], num_sources)]
            rows.append(("", int(pid), int(train["camid"].iat[i]), *src, picks[i], FALLBACK_NONE))
    return pd.DataFrame(rows, columns=["replaces", "pid", "camid", *job_source_columns(num_sources), "target_pose_from",
                                       "fallback"])  # fmt: skip


def _group(idx: np.ndarray, pids: np.ndarray) -> dict[int, np.ndarray]:
    out: dict[int, list[int]] = {}
    for i in idx:
        out.setdefault(pids[i], []).append(i)
    return {k: np.array(v) for k, v in out.items()}


def _require_keypoints(names, ann: Annotations) -> None:
    from reidaug.errors import offenders

    missing = [n for n in names if n not in ann]
    if missing:
        raise ReidaugError(f"{len(missing)} training images have no keypoints row: {offenders(missing)}")
