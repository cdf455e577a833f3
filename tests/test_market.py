"""Market-1501 names and folder layout (issue Foundation, section 2)."""

from __future__ import annotations

import numpy as np
import pytest

from reidaug.data.market import (
    MarketName,
    format_name,
    is_market_name,
    market_image_path,
    parse_name,
    pid_of,
    read_market,
    read_split,
    split_dir,
    write_market_image,
)
from reidaug.errors import ReidaugError

NAMES = [
    "0002_c1s1_000451_03.jpg",
    "-1_c5s3_086412_11.jpg",
    "0000_c6s4_002427_02.jpg",
    "1501_c6s6_999999_99.png",
]


@pytest.mark.parametrize("name", NAMES)
def test_name_round_trip(name):
    n = parse_name(name)
    assert str(n) == name
    assert format_name(n.pid, n.camid, n.sequence, n.frame, n.bbox, n.ext) == name


def test_parse_values():
    assert parse_name("0002_c1s1_000451_03.jpg") == MarketName(2, 1, 1, 451, 3, "jpg")
    assert parse_name("-1_c5s3_086412_11.jpg").pid == -1
    assert parse_name("0000_c6s4_002427_02.jpg").pid == 0
    assert parse_name("some/dir/0843_c2s2_104907_04.jpg").pid == 843
    assert pid_of("0843_c2s2_104907_04.jpg") == "0843" and pid_of("-1_c5s3_086412_11.jpg") == "-1"
    assert format_name(7, 3, 2, 42, 1) == "0007_c3s2_000042_01.jpg"
    assert format_name(-1, 1, 1, 0, 0) == "-1_c1s1_000000_00.jpg"


@pytest.mark.parametrize(
    "name",
    ["2_c1s1_000451_03.jpg", "0002_c1_000451_03.jpg", "0002_c1s1_451_03.jpg", "0002_c1s1_000451_03.gif",
     "0002-c1s1-000451-03.jpg", "abcd_c1s1_000451_03.jpg", "0002_c1s1_000451_03.jpg.bak", ""],
)  # fmt: skip
def test_parse_rejects(name):
    assert not is_market_name(name)
    with pytest.raises(ReidaugError, match="not a Market-1501 image name"):
        parse_name(name)


@pytest.mark.parametrize(
    "args, what",
    [((1502, 1, 1, 0, 0), "pid 1502"), ((-2, 1, 1, 0, 0), "pid -2"), ((1, 0, 1, 0, 0), "camera 0"),
     ((1, 7, 1, 0, 0), "camera 7"), ((1, 1, 10, 0, 0), "s10"), ((1, 1, 1, 10**6, 0), "f1000000"),
     ((1, 1, 1, 0, 100), "b100")],
)  # fmt: skip
def test_format_rejects_what_torchreid_would(args, what):
    with pytest.raises(ReidaugError, match=what):
        format_name(*args)


def _make_root(root, per_split=None):
    per_split = per_split or {
        "train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s1_000101_01.jpg"],
        "gallery": ["0003_c1s1_000100_01.jpg", "-1_c1s1_000200_01.jpg", "0000_c2s1_000300_01.jpg"],
        "query": ["0003_c2s1_000150_01.jpg"],
    }
    img = np.full((128, 64, 3), 127, np.uint8)
    for split, names in per_split.items():
        for name in names:
            write_market_image(root, split, name, img)
    return per_split


def test_read_market_table(tmp_path):
    _make_root(tmp_path)
    (tmp_path / "bounding_box_train" / "Thumbs.db").write_bytes(b"x")  # not an image: ignored
    df = read_market(tmp_path)
    assert list(df.columns) == ["name", "path", "pid", "camid", "sequence", "frame", "bbox", "split"]
    assert len(df) == 7
    assert df["split"].value_counts().to_dict() == {"train": 3, "gallery": 3, "query": 1}
    row = df[df.name == "0002_c2s1_000301_01.jpg"].iloc[0]
    assert (row.pid, row.camid, row.sequence, row.frame, row.bbox) == (2, 2, 1, 301, 1)
    assert row.path == str(tmp_path / "bounding_box_train" / "0002_c2s1_000301_01.jpg")
    assert sorted(df[df.split == "gallery"].pid) == [-1, 0, 3]
    train = read_split(tmp_path, "train")
    assert list(train.name) == sorted(train.name)


def test_read_market_errors(tmp_path):
    with pytest.raises(ReidaugError, match="is not a folder"):
        read_market(tmp_path / "nope")
    _make_root(tmp_path, {"train": ["0002_c1s1_000451_03.jpg"], "gallery": ["0003_c1s1_000100_01.jpg"]})
    with pytest.raises(ReidaugError, match=r"missing folder .*query"):
        read_market(tmp_path)
    (tmp_path / "query").mkdir()
    with pytest.raises(ReidaugError, match=r"empty folder .*query"):
        read_market(tmp_path)
    for bad in ("img_001.jpg", "0003_c9x_1.jpg", "zz.png", "yy.png"):
        (tmp_path / "query" / bad).write_bytes(b"x")
    with pytest.raises(ReidaugError) as e:
        read_market(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("4 image names in ") and "0003_c9x_1.jpg, img_001.jpg, yy.png (and 1 more)" in msg
    with pytest.raises(ReidaugError, match="unknown split 'val'"):
        read_split(tmp_path, "val")


def test_market_image_path(tmp_path):
    assert market_image_path(tmp_path, "gallery", "0003_c1s1_000100_01.jpg") == (
        tmp_path / "bounding_box_test" / "0003_c1s1_000100_01.jpg"
    )
    assert split_dir(tmp_path, "query") == tmp_path / "query"
    with pytest.raises(ReidaugError, match="not a Market-1501 image name"):
        market_image_path(tmp_path, "train", "person.jpg")
    with pytest.raises(ReidaugError, match="bare file name"):
        market_image_path(tmp_path, "train", "sub/0003_c1s1_000100_01.jpg")
    with pytest.raises(ReidaugError, match="unknown split"):
        split_dir(tmp_path, "test")


def test_torchreid_parses_written_root(tmp_path):
    """Images written with write_market_image load with torchreid's own Market1501 dataset."""
    market1501 = pytest.importorskip("torchreid.reid.data.datasets.image.market1501")
    layout = _make_root(tmp_path / "market1501" / "Market-1501-v15.09.15")
    ds = market1501.Market1501(root=str(tmp_path))
    assert len(ds.train) == 3 and ds.num_train_pids == 2 and ds.num_train_cams == 3
    # torchreid drops junk (-1) and keeps distractors (0) in the gallery; camids become 0-based
    assert sorted((pid, cam) for _, pid, cam, *_ in ds.gallery) == [(0, 1), (3, 0)]
    assert [(pid, cam) for _, pid, cam, *_ in ds.query] == [(3, 1)]
    assert len(layout["gallery"]) == 3
