"""What every command shares: the Typer apps, one-line errors, progress bars, opening a model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, export, quantize, run and benchmark small image models with ONNX.")
train_app = typer.Typer(no_args_is_help=True, help="Train a model of the zoo.")
app.add_typer(train_app, name="train")


class UserError(Exception):
    """An error whose message is for the user: printed on one line, exit status 1."""


def fail(message: str, code: int = 1):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def each_of(choices: tuple[str, ...]) -> Callable[[list[str] | None], list[str] | None]:
    """Callback of a repeatable option whose values come from `choices` (toolkit.core.options):
    Typer cannot make a choice of a list of Literals, so the list is checked while parsing, with the
    message Typer gives a single choice."""
    def check(values: list[str] | None) -> list[str] | None:
        for value in values or []:
            if value not in choices:
                raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, choices))}.")
        return values
    return check


def metavar(choices: tuple[str, ...]) -> str:
    return "[" + "|".join(choices) + "]"


# What the build commands (train, export from torch) need beyond the runtime install.
TRAIN_EXTRA_MODULES = ("torch", "onnxscript", "safetensors")


def require_train_extra() -> None:
    """Fail in one line, before any work, when the `train` extra is not installed."""
    import importlib.util
    missing = [name for name in TRAIN_EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        fail(f"this command needs the train extra ({', '.join(missing)} missing): pip install 'toolkit[train]'")



def _progress_factory():
    """A callback (description, total) → advance(k), drawing a rich progress bar on stderr."""
    from rich.console import Console
    from rich.progress import Progress

    def start(description: str, total: int):
        progress = Progress(console=Console(stderr=True), transient=True)
        progress.start()
        task = progress.add_task(description, total=total)

        def advance(k: int):
            progress.advance(task, k)
            if progress.tasks[0].finished:
                progress.stop()
        return advance
    return start


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]



def _open(path: Path, provider: str, precision_hint: str | None = None):
    from toolkit.core.sessions import ModelError, ProviderError, open_model
    try:
        return open_model(path, provider, precision_hint=precision_hint)
    except (ModelError, ProviderError) as exc:
        fail(str(exc))


