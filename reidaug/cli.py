"""The `reidaug` command line: one Typer command per pipeline step (each is also a Python API)."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from reidaug import __version__
from reidaug.errors import ReidaugError, user_message

app = typer.Typer(
    name="reidaug",
    help="Pose-guided person image generation for re-ID training sets, and the benchmark that proves it helps.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Pipeline order. Each module in reidaug.commands defines `command`, a Typer-annotated function.
COMMANDS: list[str] = [
    "synth",
    "poses",
    "pairs",
    "train",
    "import-checkpoint",
    "generate",
    "augment",
    "reid-eval",
    "experiment",
    "metrics",
    "report",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reidaug {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of any error (or REIDAUG_DEBUG=1)."),
) -> None:
    """reidaug: poses -> pairs -> train -> generate -> augment -> reid-eval -> metrics."""


for _name in COMMANDS:
    _module = importlib.import_module(f"reidaug.commands.{_name.replace('-', '_')}")
    _doc = _module.command.__doc__ or ""
    _short = " ".join(_doc.split()).split(". ")[0].split(": ")[0]
    _short = _short[: _short.rfind(" (")] if _short.count("(") > _short.count(")") else _short
    app.command(_name, help=_doc, short_help=_short)(_module.command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: usage errors and expected failures (reidaug.errors.user_message: bad input, operating-system
    errors on paths, undecodable text, also from data loader workers) become one line on stderr with exit code 2;
    a training that breaks (a non-finite loss, diverged replicas) one line with exit code 1; anything else is a
    bug (traceback). `reidaug --debug ...` or REIDAUG_DEBUG=1 shows the full traceback of any error."""
    cmd = typer.main.get_command(app)
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("REIDAUG_DEBUG", "") not in ("", "0")
    try:
        rv = cmd.main(args=argv, prog_name="reidaug", standalone_mode=False)
    except (ReidaugError, OSError, UnicodeDecodeError, RuntimeError) as e:
        from reidaug.train.trainer import TrainingError

        if debug:
            raise
        if isinstance(e, TrainingError):
            print(f"reidaug: training failed: {e}", file=sys.stderr)  # not the input's fault: exit 1
            return 1
        message = user_message(e)
        if message is None:
            raise  # a bug: the traceback is what a report needs
        print(f"reidaug: error: {message}", file=sys.stderr)
        return 2
    except typer.TyperException as e:  # usage errors (exit code 2) and other CLI errors
        print(f"reidaug: error: {e.format_message()}", file=sys.stderr)
        return e.exit_code
    except typer.Abort:
        print("reidaug: interrupted", file=sys.stderr)
        return 130
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
