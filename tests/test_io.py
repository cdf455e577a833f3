"""Atomic outputs: permissions of normal files, an interrupted overwrite keeps the old folder."""

import os
import stat

import pytest

from reidaug.config import load_config
from reidaug.errors import ReidaugError
from reidaug.utils.io import atomic_write_text, staged_dir


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_files_and_staged_folders_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with staged_dir(tmp_path / "d") as d:
            (d / "f").write_text("y")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == 0o644
    assert _mode(tmp_path / "d") == 0o755


def test_interrupted_overwrite_keeps_the_old_folder(tmp_path):
    out = tmp_path / "out"
    with staged_dir(out) as d:
        (d / "old").write_text("1")
    with pytest.raises(KeyboardInterrupt), staged_dir(out, overwrite=True) as d:
        (d / "new").write_text("2")
        raise KeyboardInterrupt
    assert sorted(os.listdir(out)) == ["old"]
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no partial or old folder left behind
    with staged_dir(out, overwrite=True) as d:
        (d / "new").write_text("2")
    assert sorted(os.listdir(out)) == ["new"] and sorted(os.listdir(tmp_path)) == ["out"]


def test_non_empty_output_refused_without_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    with pytest.raises(ReidaugError, match="--overwrite"), staged_dir(tmp_path / "out"):
        pass


def test_config_override_into_mismatched_container_is_one_error():
    from dataclasses import dataclass, field

    @dataclass
    class Item:
        q: int = 1

    @dataclass
    class Cfg:
        items: list[Item] = field(default_factory=lambda: [Item()])

    with pytest.raises(ReidaugError, match="bad configuration"):
        load_config(Cfg, None, ["items.0.q=5"])
