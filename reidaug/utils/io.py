"""Atomic file output: a reader never sees a half-written file or folder."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from reidaug.errors import ReidaugError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _public(path: str | Path, mode: int) -> None:
    """Give a temporary file or folder (created private by tempfile) the permissions of a normal one."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, mode & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _public(tmp, 0o666)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno:  # a failed write(): name the file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def portable(path: str | Path, base: str | Path) -> str:
    """How an output records `path`: relative to `base` when inside it (so the folder can move), else absolute."""
    path, base = Path(path).resolve(), Path(base).resolve()
    return os.path.relpath(path, base) if path == base or base in path.parents else str(path)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def check_output_dir(out: str | Path, overwrite: bool, remove: bool = True) -> Path:
    """Refuse an existing non-empty folder unless `overwrite`; with `remove`, delete it then."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReidaugError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ReidaugError(f"output folder {out} exists and is not empty (pass --overwrite to replace it)")
        if remove:
            shutil.rmtree(out)
    return out


@contextlib.contextmanager
def staged_dir(out: str | Path, overwrite: bool = False):
    """Build a whole folder under a temporary sibling name and move it into place at the end.

    An interrupted job leaves no folder at `out` (and, with `overwrite`, the old one intact), only a hidden
    `.out.partial-*` that the next run ignores.
    """
    out = check_output_dir(out, overwrite, remove=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        _public(tmp, 0o777)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
