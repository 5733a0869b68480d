"""The `toolkit` command: a thin Typer shell. Each command parses, calls one function, prints.

Heavy imports (torch, onnxruntime) happen inside the commands, so `toolkit --help` is instant
and the runtime commands never import torch. Commands live in run.py (runtime layer) and
build.py (build layer); importing them registers them on `app`.
"""

from __future__ import annotations

import os
import sys

import typer

from toolkit.cli import build, byom, run  # noqa: F401  (registers the commands)
from toolkit.cli.common import _one_line, app

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
        typer.echo(f"error: {type(exc).__name__}: {_one_line(exc)} (set TOOLKIT_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
