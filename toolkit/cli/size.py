"""`--size H W`: the one spelling of an image size on every command that takes one."""

from __future__ import annotations

from typing import Any

import typer

from toolkit.cli.common import fail

SIZE_METAVAR = "H W"


def parse_size(values: tuple[str, str] | None) -> tuple[int, int] | None:
    """(H, W) from the two words of `--size`, or None; a bad value is one line and exit status 1."""
    if not values:
        return None
    if any(v.startswith("-") and not v.lstrip("-").isdigit() for v in values):
        fail(f"--size takes both numbers at once: --size H W (e.g. --size {values[0]} {values[0]}), "
             f"not --size H --size W")
    try:
        height, width = (int(v) for v in values)
    except ValueError:
        fail(f"--size {' '.join(values)}: expected two whole numbers H W")
    if min(height, width) < 1:
        fail(f"--size {height} {width}: both must be positive")
    return height, width


def _checked(values: tuple[str, str] | None) -> tuple[str, str] | None:
    # Checked while parsing: `--size 32 --size 32` leaves a stray 32 that Typer would otherwise
    # report as an unexpected extra argument, without saying how the size is spelled.
    parse_size(values)
    return values


def _refused(values: tuple[str, str] | None) -> None:
    if values:
        fail(f"--input-size is spelled --size H W (e.g. --size {' '.join(values)})")


def size_option(help: str) -> Any:
    """An optional `--size H W` (annotate it tuple[str, str] | None; parse_size gives the ints)."""
    return typer.Option(None, "--size", metavar=SIZE_METAVAR, help=help, callback=_checked)


def refused_input_size() -> Any:
    """A hidden `--input-size` that says, in one line, how the size is spelled."""
    return typer.Option(None, "--input-size", hidden=True, callback=_refused)
