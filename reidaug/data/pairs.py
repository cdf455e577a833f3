"""(source, target) pairs of the same identity by the PATN rule (architecture notes 1.5).

An image is valid when both shoulders and both hips are detected and its name does not start with `-1`
(junk) or `0000` (distractor). Every identity (text before the first `_`) with n valid images gives all
n(n-1) ordered pairs, identities in order of first appearance, images in file order, pairs in
`itertools.permutations` order. Built with index arithmetic, no loop over pairs. With this order,
`sample_pairs(make_pairs(test), 12000, seed=0)` reproduces the published `market-pairs-test.csv`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reidaug.data.keypoints import MISSING, TORSO, Annotations
from reidaug.data.market import check_cameras
from reidaug.errors import ReidaugError, first_line

COLUMNS = ["from", "to"]
EXCLUDED_PREFIXES = ("-1", "0000")  # junk, distractor


@dataclass
class PairsConfig:
    """`cap_per_identity`: keep at most this many (seeded random) pairs per identity; `sample`: then draw
    this many pairs without replacement (the reference's test split: 12,000 with seed 0); `sources`: K-source
    tuples instead of pairs (`make_tuples`, the multi-source format of notes 1.6), capped and sampled alike."""

    cap_per_identity: int | None = None
    sample: int | None = None
    seed: int = 0
    sources: int | None = None


@dataclass
class PairsStats:
    images: int
    valid_images: int
    identities: int  # identities with at least one valid image
    paired_identities: int  # identities with two or more valid images
    all_pairs: int  # before the cap
    pairs: int  # after cap and sampling


def identity_of(names) -> np.ndarray:
    """Identity keys (text before the first underscore) as an object array."""
    return np.array([n.split("_", 1)[0] for n in names], dtype=object)


def valid_images(ann: Annotations) -> np.ndarray:
    """(N,) bool: all four torso joints present and not a junk or distractor image."""
    torso = (ann.coords[:, TORSO, :] != MISSING).all(axis=(1, 2))
    kept = np.array([not n.startswith(EXCLUDED_PREFIXES) for n in ann.names], dtype=bool)
    return torso & kept if len(ann) else np.zeros(0, dtype=bool)


def _permutation_indices(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For groups of `sizes`, all ordered pairs (i, j), i != j, of local indices, group by group.

    Pair k of a group of size n is (k // (n-1), k % (n-1) shifted past the diagonal): the order of
    itertools.permutations(range(n), 2). Returns (group, i, j) per pair.
    """
    per_group = sizes * (sizes - 1)
    group = np.repeat(np.arange(len(sizes)), per_group)
    starts = np.cumsum(per_group) - per_group
    k = np.arange(per_group.sum()) - starts[group]
    m = sizes[group] - 1
    i = k // m
    j = k % m
    j = j + (j >= i)
    return group, i, j


def _cap(group: np.ndarray, n_groups: int, cap: int, seed: int) -> np.ndarray:
    """Indices (sorted) of a seeded random subset of at most `cap` pairs per group."""
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(group)), group))  # by group, random within group
    counts = np.bincount(group, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    rank = np.arange(len(group)) - starts[group[order]]
    return np.sort(order[rank < cap])


def make_pairs(ann: Annotations, cap_per_identity: int | None = None, seed: int = 0) -> pd.DataFrame:
    """All ordered same-identity pairs of valid images, as a DataFrame with columns `from`, `to`.

    `cap_per_identity` keeps a random subset (seeded by `seed`, original order kept) of each identity's pairs.
    """
    return _make_pairs(ann, cap_per_identity, seed)[0]


def _make_pairs(ann: Annotations, cap_per_identity: int | None, seed: int) -> tuple[pd.DataFrame, PairsStats]:
    if cap_per_identity is not None and cap_per_identity < 1:
        raise ReidaugError(f"cap_per_identity must be at least 1, got {cap_per_identity}")
    names = np.array(ann.names, dtype=object)
    ok = valid_images(ann)
    idx = np.flatnonzero(ok)
    codes, uniques = pd.factorize(identity_of(names[idx]))  # codes in order of first appearance
    order = np.argsort(codes, kind="stable")
    members = idx[order]  # valid image indices grouped by identity, file order inside a group
    sizes = np.bincount(codes, minlength=len(uniques)).astype(np.int64)
    offsets = np.cumsum(sizes) - sizes

    group, i, j = _permutation_indices(sizes)
    n_all = len(group)
    if cap_per_identity is not None:
        keep = _cap(group, len(sizes), cap_per_identity, seed)
        group, i, j = group[keep], i[keep], j[keep]
    frm = names[members[offsets[group] + i]]
    to = names[members[offsets[group] + j]]
    df = pd.DataFrame({"from": frm, "to": to}, columns=COLUMNS).astype(str)
    return df, PairsStats(len(ann), int(ok.sum()), len(uniques), int((sizes > 1).sum()), n_all, len(df))


def sample_pairs(df: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """`min(n, len(df))` pairs without replacement, pandas `random_state=seed` (the reference procedure)."""
    if n < 1:
        raise ReidaugError(f"sample must be at least 1, got {n}")
    return df.sample(n=min(n, len(df)), replace=False, random_state=seed)


def build_pairs(ann: Annotations, cfg: PairsConfig) -> tuple[pd.DataFrame, PairsStats]:
    """make_pairs (or make_tuples) with the config's cap, then the optional sample. Raises if no pair can be made."""
    df, st = _make_pairs(ann, cfg.cap_per_identity, cfg.seed)
    if cfg.sources is not None and len(df):  # as many tuples per identity as pairs, capped alike
        tuples = make_tuples(ann, cfg.sources, cfg.seed)
        if cfg.cap_per_identity is not None:
            group = pd.factorize(identity_of(tuples["to"]))[0]
            tuples = tuples.iloc[_cap(group, group.max() + 1, cfg.cap_per_identity, cfg.seed)].reset_index(drop=True)
        df, st.pairs = tuples, len(tuples)
    if len(df) == 0:
        raise ReidaugError(
            f"no pairs: none of the {st.identities} identities has two images with both shoulders and hips "
            f"({st.valid_images} of {st.images} images are valid)"
        )
    if cfg.sample is not None:
        df = sample_pairs(df, cfg.sample, cfg.seed)
        st.pairs = len(df)
    return df, st


def format_pairs(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, columns=COLUMNS, lineterminator="\n")


def write_pairs(path: str | Path, df: pd.DataFrame) -> None:
    """Write a `from,to` CSV (or a tuples CSV, for a table with `from_0`... columns) atomically."""
    from reidaug.utils.io import atomic_write_text

    if "from" not in df.columns:
        return write_tuples(path, df)
    atomic_write_text(path, format_pairs(df))


def read_pairs(path: str | Path) -> pd.DataFrame:
    """Read a `from,to` pairs CSV or a `from_0,...,from_{K-1},to` tuples CSV (notes 1.6); one error line for a
    missing file, a wrong header or a malformed row. Columns are kept as in the file (see `source_columns`)."""
    path = Path(path)
    if not path.is_file():
        raise ReidaugError(f"pairs file {path} not found")
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n")
    except UnicodeDecodeError:
        raise ReidaugError(f"{path}: not a UTF-8 text file") from None
    cols = header.split(",")
    if cols != COLUMNS and (len(cols) < 2 or cols != tuple_columns(len(cols) - 1)):
        raise ReidaugError(f"{path}: first line must be 'from,to' or 'from_0,...,from_K-1,to', got {header[:60]!r}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ReidaugError(f"{path}: malformed CSV: {first_line(e)}") from None
    if df.empty:
        raise ReidaugError(f"{path} holds no rows (only its header)")
    dup = df.duplicated(subset=cols)
    if cols == COLUMNS and dup.any():  # tuples may repeat: their sources are drawn with replacement (notes 1.6)
        row = int(np.flatnonzero(dup.to_numpy())[0])
        first = int(np.flatnonzero((df[cols] == df.loc[row, cols]).all(axis=1).to_numpy())[0])
        raise ReidaugError(f"{path}:{row + 2}: duplicate of row {first + 2} ({', '.join(df.loc[row, cols])})")
    empty = (df[cols] == "").any(axis=1)
    if empty.any():
        raise ReidaugError(
            f"{path}:{int(np.flatnonzero(empty.to_numpy())[0]) + 2}: a row needs {len(cols)} image names"
        )
    check_cameras(pd.unique(df[cols].to_numpy().ravel()), path)
    return df


def check_same_identity(df: pd.DataFrame, where) -> None:
    """Training rows pair images of one person: a row whose source and target identities (the text before the
    first `_`) differ is refused with its line number (the generator would learn to change who is shown)."""
    to = identity_of(df["to"])
    for col in source_columns(df):
        bad = np.flatnonzero(identity_of(df[col]) != to)
        if len(bad):
            row = int(bad[0])
            raise ReidaugError(f"{where}:{row + 2}: {df[col].iat[row]} and {df['to'].iat[row]} show two identities; "
                               f"training pairs show one person ({len(bad)} such rows)")  # fmt: skip


# -- tuples: one target and K sources of the same identity (multi-source methods) -------------------------------


def tuple_columns(k: int) -> list[str]:
    """`from_0, ..., from_{k-1}, to`: the header of a tuples CSV with k sources."""
    if k < 1:
        raise ReidaugError(f"a tuple needs at least one source, got {k}")
    return [f"from_{i}" for i in range(k)] + ["to"]


def source_columns(df: pd.DataFrame) -> list[str]:
    """The source columns of a pairs (`from`) or tuples (`from_0..`) table, in order."""
    if "from" in df.columns:
        return ["from"]
    cols = [c for c in df.columns if c.startswith("from_")]
    if not cols or cols != [f"from_{i}" for i in range(len(cols))]:
        raise ReidaugError(f"a pairs table needs a 'from' or 'from_0'... column, got {list(df.columns)}")
    return cols


def source_names(df: pd.DataFrame, m: int) -> np.ndarray:
    """(N, m) source names of each row: the first m source columns (a K-source file serves any m <= K)."""
    cols = source_columns(df)
    if m > len(cols):
        raise ReidaugError(f"the method takes {m} sources per target; the pairs table has {len(cols)}")
    return df[cols[:m]].to_numpy(dtype=object).reshape(len(df), m)


def make_tuples(ann: Annotations, k: int, seed: int = 0) -> pd.DataFrame:
    """Tuples (`from_0..from_{k-1}`, `to`) of valid same-identity images, as many per identity as it has ordered
    pairs (n(n-1), so the identity distribution is the pairs file's, notes 1.6): each target in turn, its
    sources drawn without replacement from the identity's other images, with replacement when it has fewer
    than k. `k = 1` gives the pairs' targets with random sources. Seeded."""
    if k < 1:
        raise ReidaugError(f"a tuple needs at least one source, got {k}")
    names = np.array(ann.names, dtype=object)
    idx = np.flatnonzero(valid_images(ann))
    codes, uniques = pd.factorize(identity_of(names[idx]))
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(len(uniques)):
        members = idx[codes == g]
        n = len(members)
        for t in np.repeat(np.arange(n), n - 1):  # n(n-1) tuples, each image the target n-1 times
            others = np.delete(members, t)
            src = rng.choice(others, size=k, replace=len(others) < k)
            rows.append([*names[src], names[members[t]]])
    return pd.DataFrame(rows, columns=tuple_columns(k)).astype(str) if rows else pd.DataFrame(columns=tuple_columns(k))


def tuples_from_pairs(pairs: pd.DataFrame, ann: Annotations, k: int, seed: int = 0) -> pd.DataFrame:
    """The pairs (`from`, `to`) as k-source tuples: from_0 = `from`, the k - 1 others drawn from the valid images
    of its identity other than `from` and `to` (without replacement while they last, then repeated; `from` itself
    when there is no other). k = 1 gives the pairs back. Seeded."""
    if k < 1:
        raise ReidaugError(f"a tuple needs at least one source, got {k}")
    names = np.array(ann.names, dtype=object)
    valid = names[valid_images(ann)]
    by_id: dict[str, list[str]] = {}
    for n, pid in zip(valid, identity_of(valid)):
        by_id.setdefault(pid, []).append(n)
    rng = np.random.default_rng(seed)
    rows = []
    for frm, to in zip(pairs["from"], pairs["to"]):
        pool = [n for n in by_id.get(frm.split("_", 1)[0], []) if n not in (frm, to)]
        picks = list(rng.choice(pool, size=min(k - 1, len(pool)), replace=False)) if pool and k > 1 else []
        extra = list(rng.choice(picks or [frm], size=k - 1 - len(picks))) if k - 1 > len(picks) else []
        rows.append([frm, *picks, *extra, to])
    return pd.DataFrame(rows, columns=tuple_columns(k)).astype(str)


def write_tuples(path: str | Path, df: pd.DataFrame) -> None:
    """Write a tuples CSV atomically (its columns as `tuple_columns`)."""
    from reidaug.utils.io import atomic_write_text

    cols = tuple_columns(len(source_columns(df)))
    atomic_write_text(path, df.to_csv(index=False, columns=cols, lineterminator="\n"))
