"""The one exception type for bad input: the CLI prints it on one line and exits with code 2."""


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
