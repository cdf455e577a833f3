"""The command line: version, rich help, `reidaug pairs`, and one-line errors with exit code 2 (section 6)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from reidaug import __version__
from reidaug.data.keypoints import Annotations, write_annotations
from reidaug.data.pairs import read_pairs

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def _one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("reidaug: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def ann_csv(tmp_path):
    names = [f"{p:04d}_c{c}s1_00000{c}_01.jpg" for p, n in ((1, 3), (2, 4)) for c in range(1, n + 1)]
    names += ["-1_c1s1_000001_01.jpg", "0000_c1s1_000001_01.jpg"]
    coords = np.full((len(names), 18, 2), 20, np.int32)
    coords[1, 8] = -1  # 0001_c2: no right hip -> identity 0001 keeps 2 images
    path = tmp_path / "ann.csv"
    write_annotations(path, Annotations(names, coords))
    return path  # 2*1 + 4*3 = 14 pairs


def test_version(run_cli):
    code, out, err = run_cli("--version")
    assert code == 0 and out.strip() == f"reidaug {__version__}" and err == ""


def test_python_m_version():
    r = subprocess.run(
        [sys.executable, "-m", "reidaug", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0 and r.stdout.strip() == f"reidaug {__version__}"


@pytest.mark.parametrize("args", [("--help",), ("pairs", "--help")])
def test_rich_help(run_cli, args):
    code, out, _ = run_cli(*args)
    assert code == 0
    assert "╭" in out and "Options" in out  # rich panels
    if args[0] == "pairs":
        for opt in (
            "--annotations",
            "--out",
            "--config",
            "--set",
            "--cap",
            "--sample",
            "--seed",
            "--overwrite",
        ):
            assert opt in out
        assert "PATN rule" in out
    else:
        assert "pairs" in out


def test_pairs_command(run_cli, ann_csv, tmp_path):
    out = tmp_path / "pairs.csv"
    code, stdout, err = run_cli("pairs", "--annotations", ann_csv, "--out", out)
    assert code == 0, err
    df = read_pairs(out)
    assert len(df) == 14
    assert df["from"].str[:4].value_counts().to_dict() == {"0002": 12, "0001": 2}
    assert "0001_c2s1_000002_01.jpg" not in set(df["from"])
    for text in ("images", "valid images", "identities", "pairs written", "14"):
        assert text in stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_pairs_options_and_config(run_cli, ann_csv, tmp_path):
    out = tmp_path / "p.csv"
    assert run_cli("pairs", "-a", ann_csv, "-o", out, "--sample", "5", "--seed", "3")[0] == 0
    a = read_pairs(out)
    assert len(a) == 5
    assert run_cli("pairs", "-a", ann_csv, "-o", out, "--config", "pairs/default", "--set", "sample=5",
                   "--set", "seed=3", "--overwrite")[0] == 0  # fmt: skip
    assert read_pairs(out).equals(a)
    assert run_cli("pairs", "-a", ann_csv, "-o", out, "--cap", "3", "--overwrite")[0] == 0
    assert read_pairs(out)["from"].str[:4].value_counts().to_dict() == {"0002": 3, "0001": 2}
    code, _, err = run_cli("pairs", "-a", ann_csv, "-o", out, "--cap", "0", "--overwrite")
    assert code == 2
    _one_error_line(err, "cap_per_identity must be at least 1")


def test_pairs_sources_writes_tuples(run_cli, ann_csv, tmp_path):
    out = tmp_path / "t.csv"
    code, stdout, err = run_cli("pairs", "-a", ann_csv, "-o", out, "--sources", "3")
    assert code == 0, err
    assert "tuples written" in stdout and "sources per target" in stdout
    df = read_pairs(out)
    assert list(df.columns) == ["from_0", "from_1", "from_2", "to"] and len(df) == 14  # as many as pairs
    assert all(len({n[:4] for n in row}) == 1 and row[-1] not in row[:-1] for row in df.to_numpy().tolist())
    assert run_cli("pairs", "-a", ann_csv, "-o", out, "--sources", "2", "--cap", "3", "--sample", "4",
                   "--overwrite")[0] == 0  # fmt: skip
    assert read_pairs(out).shape == (4, 3)
    code, _, err = run_cli("pairs", "-a", ann_csv, "-o", tmp_path / "u.csv", "--sources", "0")
    assert code == 2 and not (tmp_path / "u.csv").exists()
    _one_error_line(err, "at least one source")


def test_unknown_option(run_cli, ann_csv, tmp_path):
    code, out, err = run_cli("pairs", "-a", ann_csv, "-o", tmp_path / "p.csv", "--frobnicate")
    assert code == 2
    _one_error_line(err, "--frobnicate")
    assert not (tmp_path / "p.csv").exists()
    code, _, err = run_cli("no-such-command")
    assert code == 2
    _one_error_line(err, "no-such-command")
    code, _, err = run_cli("pairs", "-a", ann_csv, "-o", tmp_path / "p.csv", "--set", "nope=1")
    assert code == 2
    _one_error_line(err, "nope")


def test_existing_output_untouched(run_cli, ann_csv, tmp_path):
    out = tmp_path / "pairs.csv"
    out.write_text("precious\n")
    code, _, err = run_cli("pairs", "-a", ann_csv, "-o", out)
    assert code == 2
    _one_error_line(err, str(out), "--overwrite")
    assert out.read_text() == "precious\n"
    code, _, err = run_cli("pairs", "-a", ann_csv, "-o", tmp_path)
    assert code == 2
    _one_error_line(err, "is a folder")


@pytest.mark.parametrize(
    "row, needle",
    [
        ("0001_c1s1_000001_01.jpg: [1, 2, 3]: [1, 2, 3]", ":3: expected 18 joints, got 3"),
        ("0001_c1s1_000001_01.jpg: [1, 2, 3]", ":3: expected 3 colon-separated fields"),
        ("0001_c1s1_000001_01.jpg: [x]: [1]", ":3: keypoint list is not a JSON list"),
    ],
)
def test_malformed_csv_leaves_no_output(run_cli, ann_csv, tmp_path, row, needle):
    lines = ann_csv.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], lines[1], row, *lines[2:]]) + "\n")
    out = tmp_path / "pairs.csv"
    code, stdout, err = run_cli("pairs", "-a", bad, "-o", out)
    assert code == 2
    _one_error_line(err, needle)
    assert not out.exists() and stdout == ""


def test_missing_annotations_and_no_pairs(run_cli, tmp_path):
    code, _, err = run_cli("pairs", "-a", tmp_path / "nope.csv", "-o", tmp_path / "p.csv")
    assert code == 2
    _one_error_line(err, "nope.csv not found")
    lonely = tmp_path / "lonely.csv"
    write_annotations(lonely, Annotations(["0001_c1s1_000001_01.jpg"], np.zeros((1, 18, 2), np.int32)))
    code, _, err = run_cli("pairs", "-a", lonely, "-o", tmp_path / "p.csv")
    assert code == 2
    _one_error_line(err, "no pairs")
    assert not (tmp_path / "p.csv").exists()


def test_pairs_on_shared_test_reproduces_reference(run_cli, market_keypoints, tmp_path):
    out = tmp_path / "test-pairs.csv"
    code, stdout, err = run_cli("pairs", "-a", market_keypoints / "market-annotation-test.csv", "-o", out,
                                "--config", "pairs/market-test")  # fmt: skip
    assert code == 0, err
    assert out.read_bytes() == (market_keypoints / "market-pairs-test.csv").read_bytes()
    assert "257,198" in stdout and "12,000" in stdout
