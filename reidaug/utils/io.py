"""Atomic file output (a reader never sees a half-written file or folder), outputs checked before the work, and
inputs read with one error line: small CSV tables, JSON files, PyTorch weight files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from reidaug.errors import ReidaugError, first_line


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


def check_writable(path: str | Path, kind: str = "file") -> Path:
    """Refuse, before any work, an output `path` (a "file" or a "dir") that cannot be written: a folder where a
    file goes (or the reverse), a path below a file, a place on a read-only filesystem or in a folder nobody may
    add to. Creates nothing: a probe file in the nearest existing folder comes and goes."""
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise ReidaugError(f"output {path} is a folder; give a file name such as {path / 'out.json'}")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise ReidaugError(f"output {path} exists and is not a folder")
    probe = path if kind == "dir" and path.is_dir() else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ReidaugError(f"{probe} is a file, not a folder: cannot create {path}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".reidaug-probe-", dir=probe)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    os.unlink(tmp)
    return path


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


OWNER = ".reidaug-owner.json"  # inside a staged folder while it is built: host, pid and start of the builder


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot, /proc/PID/stat field 22); None where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner() -> dict:
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid()),
            "boot": _boot_id()}  # fmt: skip


def owner_gone(owner: dict) -> bool:
    """True only when certain that the process recorded in `owner` has ended: same host, and it rebooted since,
    or no process has that pid, or the process with that pid started at another time (the pid was reused)."""
    import socket

    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False  # another machine (a shared filesystem) or no record: not ours to judge
    if owner.get("boot") and _boot_id() and owner["boot"] != _boot_id():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    start = _process_start(pid)
    return owner.get("start") is not None and start is not None and start != owner["start"]


def clean_stale_partials(out: str | Path) -> list[Path]:
    """Remove the hidden `.OUT.partial-*` folders of killed runs (their owner record names a process that has
    ended; a live run's folder is never touched), and `.OUT.old-*` folders whose swap finished. Returns them."""
    import json

    out = Path(out)
    removed = []
    if not out.parent.is_dir():
        return removed
    for p in out.parent.glob(f".{out.name}.partial-*"):
        try:
            owner = json.loads((p / OWNER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(owner, dict) and owner_gone(owner):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    if out.exists():  # an old copy whose replacement is in place (killed between the swap and its deletion)
        for p in out.parent.glob(f".{out.name}.old-*"):
            if not (out.parent / f".{out.name}.partial-{p.name.rsplit('-', 1)[-1]}").exists():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


@contextlib.contextmanager
def staged_dir(out: str | Path, overwrite: bool = False):
    """Build a whole folder under a temporary sibling name and move it into place at the end.

    An interrupted job leaves no folder at `out` (and, with `overwrite`, the old one intact), only a hidden
    `.out.partial-*` recording its builder (host, pid, process start): a later run removes it once that process
    has ended.
    """
    out = check_output_dir(out, overwrite, remove=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_partials(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        import json

        (tmp / OWNER).write_text(json.dumps(_owner()) + "\n")
        yield tmp
        (tmp / OWNER).unlink()
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


def read_table(path: str | Path, columns=(), numeric=()):
    """A CSV table as strings, its `numeric` columns as numbers; one error line for a file that is empty, not
    UTF-8 text or not CSV, or that lacks one of `columns` or holds a value that is not a number."""
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise ReidaugError(f"{path} is empty (a CSV table starts with its header)") from None
    except UnicodeDecodeError:
        raise ReidaugError(f"{path}: not a UTF-8 text file") from None
    except pd.errors.ParserError as e:
        raise ReidaugError(f"{path}: malformed CSV: {first_line(e)}") from None
    missing = [c for c in [*columns, *numeric] if c not in df.columns]
    if missing:
        raise ReidaugError(f"{path} lacks the column(s) {', '.join(dict.fromkeys(missing))}")
    for col in numeric:
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().any():
            row = int(values.isna().to_numpy().argmax())
            raise ReidaugError(f"{path}:{row + 2}: {col} is not a number: {df[col].iat[row]!r}")
        df[col] = values
    return df


def read_json(path: str | Path):
    """A JSON file's content; one error line for a file that is not UTF-8 JSON."""
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ReidaugError(f"{path} is not a JSON file ({first_line(e)})") from None


TORCH_LEGACY = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8"  # a pre-1.6 torch.save file starts with this pickled number


def check_torch_file(path: str | Path, what: str = "checkpoint") -> Path:
    """One error line for a file torch.load would fail on with a misleading message: empty, not a PyTorch file at
    all (random bytes, text), or a torn zip archive (a copy or download that stopped early)."""
    import zipfile

    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(len(TORCH_LEGACY))
    if not head:
        raise ReidaugError(f"cannot read {what} {path}: the file is empty")
    if head[:4] == b"PK\x03\x04":
        if not zipfile.is_zipfile(path):
            raise ReidaugError(f"cannot read {what} {path}: a torn file (its zip archive ends early)")
    elif head[:2] not in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        raise ReidaugError(f"cannot read {what} {path}: not a PyTorch file")
    return path


def load_weights(path: str | Path, map_location="cpu", what: str = "checkpoint"):
    """`torch.load(weights_only=True)` with one error line: a file that pickles code is refused (never run), an
    empty, torn or foreign file says so, without torch's advice to turn weights_only off."""
    import pickle
    import re

    import torch

    path = check_torch_file(path, what)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        code = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
        if code:
            raise ReidaugError(f"{what} {path} needs more than weights to load (it pickles {code.group(1)}): "
                               "refused, nothing in it was executed") from None  # fmt: skip
        found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        raise ReidaugError(f"cannot read {what} {path}: not a PyTorch file"
                           + (f" ({found.group(1)})" if found else "")) from None  # fmt: skip
    except Exception as e:  # wrong magic numbers, EOF inside a legacy file: RuntimeError, EOFError, ValueError ...
        raise ReidaugError(f"cannot read {what} {path}: {first_line(e)}") from None
