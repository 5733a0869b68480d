"""The `toolkit` command: a thin Typer shell. Each command parses, calls one function, prints.

Heavy imports (torch, onnxruntime) happen inside the commands, so `toolkit --help` is instant
and the runtime commands never import torch. Commands live in run.py (the runtime commands),
bench.py (bench), optimize.py (optimize), byom.py (wrap, quantize) and build.py (train, export: the torch layer);
importing them registers them on `app`.
"""

from __future__ import annotations

import os
import sys

import typer

from toolkit.cli import bench, build, byom, optimize, run  # noqa: F401  (registers the commands)
from toolkit.cli.common import app
from toolkit.edge.errors import first_line
from toolkit.edge.runtime import install

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: no traceback reaches the user unless TOOLKIT_DEBUG=1 asks for it."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("TOOLKIT_DEBUG"):
            raise
        if isinstance(exc, install.SetupError) or (isinstance(exc, ModuleNotFoundError) and exc.name == "onnxruntime"):
            # No runtime, two in one folder, or one too old: the fix is an install, said in one line.
            typer.echo(f"error: {exc if isinstance(exc, install.SetupError) else install.missing_line()}", err=True)
            sys.exit(1)
        typer.echo(f"error: {type(exc).__name__}: {first_line(exc)} (set TOOLKIT_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
