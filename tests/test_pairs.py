"""The PATN pair rule (issue Foundation, section 4)."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pandas as pd
import pytest

from reidaug.config import load_config
from reidaug.data.keypoints import TORSO, Annotations, read_annotations
from reidaug.data.pairs import (
    PairsConfig,
    build_pairs,
    format_pairs,
    make_pairs,
    read_pairs,
    sample_pairs,
    valid_images,
    write_pairs,
)
from reidaug.errors import ReidaugError


def _ann(spec):
    """spec: list of (name, torso_ok). A valid pose has all joints; an invalid one lacks one torso joint."""
    coords = np.full((len(spec), 18, 2), 10, np.int32)
    rng = np.random.default_rng(0)
    for k, (_, ok) in enumerate(spec):
        if not ok:
            coords[k, TORSO[rng.integers(4)]] = -1
    return Annotations([n for n, _ in spec], coords)


SPEC = [
    ("0005_c1s1_000001_01.jpg", True),
    ("0002_c1s1_000001_01.jpg", True),
    ("0005_c2s1_000002_01.jpg", True),
    ("0002_c2s1_000002_01.jpg", False),  # torso incomplete
    ("0005_c3s1_000003_01.jpg", True),
    ("0002_c3s1_000003_01.jpg", True),
    ("0009_c1s1_000001_01.jpg", True),  # alone: no pair
    ("-1_c1s1_000001_01.jpg", True),  # junk
    ("-1_c2s1_000001_01.jpg", True),
    ("0000_c1s1_000001_01.jpg", True),  # distractor
    ("0000_c2s1_000001_01.jpg", True),
    ("0005_c4s1_000004_01.jpg", True),
]


def _reference_pairs(ann: Annotations) -> list[tuple[str, str]]:
    """The rule written the slow, obvious way (identities by first appearance, itertools order)."""
    ok = valid_images(ann)
    kept = [n for n, v in zip(ann.names, ok) if v]
    persons = list(dict.fromkeys(n.split("_")[0] for n in kept))
    out = []
    for p in persons:
        out += list(permutations([n for n in kept if n.split("_")[0] == p], 2))
    return out


def test_small_known_count_and_order():
    ann = _ann(SPEC)
    assert valid_images(ann).tolist() == [True, True, True, False, True, True, True] + [False] * 4 + [True]
    df = make_pairs(ann)
    assert list(df.columns) == ["from", "to"]
    assert len(df) == 4 * 3 + 2 * 1  # identity 0005: n=4, identity 0002: n=2 (one dropped), 0009: n=1
    assert list(map(tuple, df.to_numpy())) == _reference_pairs(ann)
    assert tuple(df.iloc[0]) == ("0005_c1s1_000001_01.jpg", "0005_c2s1_000002_01.jpg")
    assert tuple(df.iloc[-1]) == ("0002_c3s1_000003_01.jpg", "0002_c1s1_000001_01.jpg")
    assert (
        not df["from"].str.startswith(("-1", "0000")).any()
        and not df["to"].str.startswith(("-1", "0000")).any()
    )
    assert (df["from"] != df["to"]).all() and not df.duplicated().any()
    assert (df["from"].str[:4] == df["to"].str[:4]).all()
    assert "0002_c2s1_000002_01.jpg" not in set(df["from"]) | set(df["to"])


@pytest.mark.parametrize("missing", TORSO)
def test_each_torso_joint_required(missing):
    ann = _ann([("0001_c1s1_000001_01.jpg", True), ("0001_c2s1_000001_01.jpg", True)])
    assert len(make_pairs(ann)) == 2
    ann.coords[1, missing, 0] = -1  # one coordinate missing is enough
    assert len(make_pairs(ann)) == 0
    ann.coords[1, missing, 0] = 5
    ann.coords[1, 0] = -1  # the nose is not required
    assert len(make_pairs(ann)) == 2


def test_n_times_n_minus_one_per_identity():
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 30, 40)
    spec = [(f"{p + 1:04d}_c1s1_{k:06d}_01.jpg", True) for p, n in enumerate(sizes) for k in range(n)]
    perm = rng.permutation(len(spec))  # interleave identities
    ann = _ann([spec[i] for i in perm])
    df = make_pairs(ann)
    assert len(df) == int((sizes * (sizes - 1)).sum())
    counts = df["from"].str[:4].value_counts()
    for p, n in enumerate(sizes):
        assert counts.get(f"{p + 1:04d}", 0) == n * (n - 1)
    assert list(map(tuple, df.to_numpy())) == _reference_pairs(ann)


def test_cap_per_identity_is_seeded_subset():
    ann = _ann(
        [(f"{p:04d}_c1s1_{k:06d}_01.jpg", True) for p, n in ((1, 6), (2, 3), (3, 2)) for k in range(n)]
    )
    full = make_pairs(ann)
    capped = make_pairs(ann, cap_per_identity=5, seed=1)
    assert capped["from"].str[:4].value_counts().to_dict() == {"0001": 5, "0002": 5, "0003": 2}
    rows = list(map(tuple, full.to_numpy()))
    got = list(map(tuple, capped.to_numpy()))
    assert set(got) <= set(rows)
    assert got == sorted(got, key=rows.index)  # original order kept
    assert make_pairs(ann, cap_per_identity=5, seed=1).equals(capped)
    picks = {tuple(map(tuple, make_pairs(ann, cap_per_identity=5, seed=s).to_numpy()[:5])) for s in range(6)}
    assert len(picks) > 1  # different seeds choose different pairs
    assert make_pairs(ann, cap_per_identity=1000).equals(full)
    with pytest.raises(ReidaugError, match="cap_per_identity must be at least 1"):
        make_pairs(ann, cap_per_identity=0)


def test_sample_reproducible_and_seed_dependent():
    ann = _ann([(f"{p:04d}_c1s1_{k:06d}_01.jpg", True) for p in range(1, 6) for k in range(8)])
    df = make_pairs(ann)
    a, b, c = sample_pairs(df, 50, 0), sample_pairs(df, 50, 0), sample_pairs(df, 50, 1)
    assert len(a) == 50 and not a.duplicated().any()
    assert a.equals(b) and not a.equals(c)
    assert a.equals(df.sample(n=50, replace=False, random_state=0))  # the reference procedure
    assert len(sample_pairs(df, 10_000, 0)) == len(df)  # min(n, available), as the reference
    with pytest.raises(ReidaugError, match="sample must be at least 1"):
        sample_pairs(df, 0)


def test_build_pairs_and_empty():
    ann = _ann(SPEC)
    df, st = build_pairs(ann, PairsConfig(sample=5, seed=0))
    assert len(df) == 5
    assert (st.images, st.valid_images, st.identities, st.paired_identities, st.all_pairs, st.pairs) == (
        12, 7, 3, 2, 14, 5)  # fmt: skip
    with pytest.raises(ReidaugError, match="no pairs: none of the 1 identities"):
        build_pairs(_ann([("0001_c1s1_000001_01.jpg", True), ("-1_c1s1_000001_01.jpg", True)]), PairsConfig())


def test_configs_load():
    assert load_config(PairsConfig, "pairs/default") == PairsConfig(None, None, 0)
    assert load_config(PairsConfig, "pairs/market-test") == PairsConfig(None, 12000, 0)
    assert load_config(PairsConfig, "pairs/default", ["cap_per_identity=7"]).cap_per_identity == 7


def test_write_read_round_trip(tmp_path):
    df = make_pairs(_ann(SPEC))
    write_pairs(tmp_path / "p.csv", df)
    text = (tmp_path / "p.csv").read_text()
    assert text.startswith("from,to\n0005_c1s1_000001_01.jpg,0005_c2s1_000002_01.jpg\n") and text.endswith(
        ".jpg\n"
    )
    back = read_pairs(tmp_path / "p.csv")
    assert list(back.columns) == ["from", "to"] and back.to_numpy().tolist() == df.to_numpy().tolist()


@pytest.mark.parametrize(
    "body, match",
    [
        ("source,target\na.jpg,b.jpg\n", r"first line must be 'from,to' or 'from_0,...,from_K-1,to', got 'source,target'"),
        ("", r"first line must be 'from,to'"),
        ("from,to\na.jpg,b.jpg\nc.jpg,d.jpg,e.jpg\n", r"malformed CSV"),
        ("from,to\na.jpg,b.jpg\nc.jpg\n", r"p.csv:3: a row needs 2 image names"),
    ],
)
def test_read_pairs_errors(tmp_path, body, match):
    (tmp_path / "p.csv").write_text(body)
    with pytest.raises(ReidaugError, match=match) as e:
        read_pairs(tmp_path / "p.csv")
    assert "\n" not in str(e.value)


def test_read_pairs_missing(tmp_path):
    with pytest.raises(ReidaugError, match="pairs file .*nope.csv not found"):
        read_pairs(tmp_path / "nope.csv")


def test_shared_train_gives_263632_pairs(market_keypoints):
    ann = read_annotations(market_keypoints / "market-annotation-train.csv")
    df, st = build_pairs(ann, PairsConfig())
    assert len(df) == 263_632
    assert (st.images, st.valid_images) == (12_936, 12_116)  # README facts
    assert (df["from"].str.split("_").str[0] == df["to"].str.split("_").str[0]).all()
    assert not df.duplicated().any()


def test_shared_test_sample_reproduces_reference_file(market_keypoints, tmp_path):
    """All test pairs, then 12,000 with random_state=0, give the published test pairs byte for byte."""
    ann = read_annotations(market_keypoints / "market-annotation-test.csv")
    cfg = load_config(PairsConfig, "pairs/market-test")
    df, st = build_pairs(ann, cfg)
    assert st.all_pairs == 257_198 and len(df) == 12_000
    ref = market_keypoints / "market-pairs-test.csv"
    assert format_pairs(df) == ref.read_text()
    assert read_pairs(ref).to_numpy().tolist() == df.to_numpy().tolist()
    other = sample_pairs(make_pairs(ann), 12_000, seed=1)
    assert not pd.Series(other.index).equals(pd.Series(df.index))
