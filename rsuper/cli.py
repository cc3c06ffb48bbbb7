"""The `rsuper` console script: one typer app; extraction (`extract/`) and training (`train/`) each register
their own commands on it.

Training commands import torch lazily, so extraction works without the training stack.
"""

from __future__ import annotations

import typer

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
)


def _register_all() -> None:
    import importlib
    import importlib.util

    for module_name in COMMAND_MODULES:
        if importlib.util.find_spec(module_name) is None:  # a side not installed in this environment
            continue
        importlib.import_module(module_name).register(app)


_register_all()


def main() -> None:
    from extract.backends.base import BackendError
    from extract.model import ModelError

    try:
        app()
    except (BackendError, ModelError) as exc:  # the message says what to do; a traceback would bury it
        typer.echo(f"rsuper: error: {exc}", err=True)
        raise SystemExit(1) from None
