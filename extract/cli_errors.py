"""The one error format of every `rsuper` command: `rsuper: error: <message>`, one line on stderr.

The message names the file, row or URL and says what to do. Commands print their own errors with `fail`;
`rsuper.cli.main` prints the project's error types (and click's usage errors) that reach it the same way.
`one_line`, `os_problem` and `yaml_problem` put the messages of other libraries on one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

PREFIX = "rsuper: error: "


def one_line(message: str) -> str:
    """`message` on one line: a multi-line text (DuckDB's "Did you mean", a pydantic listing) joined by spaces."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def os_problem(exc: OSError) -> str:
    """An OS refusal (a missing file, a file where a folder belongs, a full disk) as `<path>: <reason>`."""
    if exc.filename is None:
        return one_line(str(exc))  # raised with a message of ours, e.g. FileNotFoundError("<root>: no cases found")
    target = f" -> {exc.filename2}" if exc.filename2 is not None else ""
    return f"{exc.filename}{target}: {exc.strerror or exc}"


def yaml_problem(exc: Exception) -> str:
    """A YAML parse error in one line, `line L, column C: <problem>`, instead of PyYAML's multi-line excerpt."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or one_line(str(exc))
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `rsuper: error: <message>` on stderr and exit with `code` (2: the input cannot be used)."""
    typer.echo(PREFIX + one_line(message), err=True)
    raise typer.Exit(code)


def make_folder(path: Path) -> None:
    """Create the output folder `path` (and its parents) now, before any work, or fail naming it: a file in the
    way, no permission, a read-only or virtual file system (/proc)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"{path}: cannot create the output folder ({exc.strerror or exc}); choose another path")
