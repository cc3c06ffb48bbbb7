"""The `rsuper` console script: one typer app; extraction (`extract/`) and training (`train/`) each register
their own commands on it.

Training commands import torch lazily, so extraction works without the training stack. Every user-facing
error is one line, `rsuper: error: <file, row or URL>: <what is wrong and what to do>` (`main`, and
`extract.cli_errors.fail` in the commands); `tests/rsuper/test_error_walk.py` walks every command with bad inputs.
"""

from __future__ import annotations

import importlib
import sys

import typer

from extract.cli_errors import PREFIX, one_line, os_problem

try:
    import schemas.vocab  # noqa: F401  (loads the organ tables in force, schemas/organs.yaml + RSUPER_VOCABULARY)
except ValueError as exc:  # a bad organ table: every command would fail on import, so say it in one line
    if type(exc).__module__ != "schemas.organ_tables":
        raise
    typer.echo(PREFIX + one_line(str(exc)), err=True)
    raise SystemExit(1) from None

app = typer.Typer(
    name="rsuper",
    help="Learn tumor segmentation from radiology reports: ingest, extract, query, train.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


#: Modules that each expose `register(app)`; training modules import torch only inside their commands.
COMMAND_MODULES = (
    "extract.store_cli",
    "extract.ingest_cli",
    "extract.run_cli",
    "extract.eval_cli",
    "train.data.cli",
    "train.dicom.cli",
    "train.cli",
    "train.review.cli",
)


def _register_all() -> None:
    import importlib
    import importlib.util

    for module_name in COMMAND_MODULES:
        if importlib.util.find_spec(module_name) is None:  # a side not installed in this environment
            continue
        importlib.import_module(module_name).register(app)


_register_all()


#: The project's error types, by module: each message names the file, row or URL and says what to do, so `main`
#: prints it as one line instead of a traceback. Looked up in `sys.modules` when an error arrives: a module that
#: was never imported raised nothing, and `main` must not import the training stack (torch) just to catch.
USER_ERRORS: dict[str, tuple[str, ...]] = {
    "extract.backends": ("BackendConfigError",),
    "extract.backends.base": ("BackendError",),
    "extract.evaluation": ("GoldError", "EngineUnavailable"),
    "extract.ingest": ("IngestError",),
    "extract.model": ("ModelError",),
    "extract.prompting": ("PromptError",),
    "extract.store.errors": ("StoreError",),
    "train.checkpoint": ("CheckpointError",),
    "train.config": ("ConfigError",),
    "train.data.labels": ("LabelFileError",),
    "train.data.totalsegmentator": ("TotalSegmentatorError",),
    "train.review.files": ("PredictionError",),
}


def _is_user_error(exc: BaseException) -> bool:
    return any(isinstance(exc, getattr(sys.modules[module], name))
               for module, names in USER_ERRORS.items() if module in sys.modules for name in names)


#: click's exceptions as typer raises them: `click.exceptions`, or the copy of click that typer >= 0.2x vendors.
_click = importlib.import_module(typer.BadParameter.__module__)
_NO_ARGS_IS_HELP = getattr(_click, "NoArgsIsHelpError", ())  # click >= 8.2; before, the help exits 0 itself


def _usage_error(exc: Exception) -> str:
    """A click usage error (bad option value, missing argument) as one line, instead of typer's boxed panel."""
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, _click.UsageError) and ctx is not None:
        return f"{ctx.command_path}: {one_line(exc.format_message())} (see '{ctx.command_path} --help')"
    return one_line(exc.format_message())


def main() -> None:
    """The console script: errors are one `rsuper: error:` line on stderr, never a traceback.

    Exit codes: 0 success; 1 an error of `USER_ERRORS` or of the OS (naming the path); 2 a usage error or an
    input a command refused (its own `rsuper: error:` line); 130 Ctrl-C; commands add their own (`rsuper
    extract`: 3, 4, 5).
    Anything else is a bug and keeps its traceback.
    """
    try:
        # standalone_mode=False: click errors come here instead of being printed as a rich panel.
        code = app(standalone_mode=False)
    except _NO_ARGS_IS_HELP as exc:  # `rsuper` or `rsuper images` alone: the help was shown
        if exc.format_message().strip():
            typer.echo(exc.format_message(), err=True)
        raise SystemExit(exc.exit_code) from None
    except _click.ClickException as exc:
        typer.echo(PREFIX + _usage_error(exc), err=True)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:  # end of input at a prompt
        typer.echo(PREFIX + "aborted", err=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # Ctrl-C: every write is a transaction, so nothing is half-stored
        typer.echo(PREFIX + "interrupted", err=True)
        raise SystemExit(130) from None
    except OSError as exc:
        typer.echo(PREFIX + os_problem(exc), err=True)
        raise SystemExit(1) from None
    except Exception as exc:
        if not _is_user_error(exc):
            raise
        typer.echo(PREFIX + one_line(str(exc)), err=True)
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)
