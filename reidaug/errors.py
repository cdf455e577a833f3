"""The one exception type for bad input: the CLI prints it on one line and exits with code 2.

`user_message` is the command boundary's view of the expected failure classes: a ReidaugError, an operating
system error on a path (read-only, full disk, missing, a file where a folder is needed ...), text that is not
UTF-8, and any of these raised inside a DataLoader worker (which torch re-raises with the worker's traceback in
the message). Everything else is a bug and keeps its traceback.
"""

import errno
import re


class ReidaugError(Exception):
    """Input the user can fix (a missing folder, a malformed row, an unknown option)."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (libraries' errors carry multi-line context)."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0][:limit] if lines else type(e).__name__


def offenders(items, limit: int = 3) -> str:
    """'a, b, c (and 12 more)': the first offenders of a check, for one error line."""
    items = [str(i) for i in items]
    head = ", ".join(items[:limit])
    return head + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


_WORKER = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.")
_LAST = re.compile(r"^(?:[\w.]+\.)?(\w+): (.*)$")


def _os_message(e: OSError) -> str:
    from pathlib import Path

    reason = e.strerror or errno.errorcode.get(e.errno or 0) or first_line(e)
    if e.errno in (errno.EEXIST, errno.ENOTDIR) and e.filename is not None:  # a file where a folder must be
        path = Path(e.filename)
        for part in (path, *path.parents):
            if part.exists() and not part.is_dir():
                return f"{part} is a file, not a folder" + (f": cannot create {path}" if part != path else "")
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    return f"{reason}: {' -> '.join(paths)}" if paths else reason


def user_message(e: BaseException) -> str | None:
    """One line for an expected failure (see the module doc), None for a bug."""
    text = str(e)
    worker = _WORKER.match(text)
    if worker:  # the original exception's last traceback line: "pkg.Type: message"
        last = [ln for ln in text.strip().splitlines() if ln.strip()][-1].strip()
        m = _LAST.match(last)
        kind, message = (m.group(1), m.group(2)) if m else (worker.group(1), last)
        if kind == "ReidaugError" or kind in _OS_ERRORS or kind == "UnicodeDecodeError":
            return message if kind == "ReidaugError" else f"{message} (in a data loader worker)"
        return None
    if isinstance(e, ReidaugError):
        return text
    if isinstance(e, OSError):
        return _os_message(e)
    if isinstance(e, UnicodeDecodeError):
        return f"input is not UTF-8 text ({e.reason} at byte {e.start})"
    return None


_OS_ERRORS = {c.__name__ for c in (OSError, FileNotFoundError, PermissionError, IsADirectoryError,
                                   NotADirectoryError, FileExistsError)}  # fmt: skip
