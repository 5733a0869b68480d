"""What every command shares: the Typer apps, one-line errors, progress bars, opening a model."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from toolkit.cli.helptext import tidy_help


class _OneLineUsageErrors(TyperGroup):
    """A bad command line (a value outside an option's choices, a missing or unknown option) is
    reported like every other bad input: one `error:` line on stderr, before any work, here exit
    status 2, instead of Typer's boxed usage panel. In place for `toolkit` and for CliRunner alike."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return tidy_help(super().get_command(ctx, cmd_name), ctx)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""                 # a flag: no `<bool>` beside it in the help
        return option

    def main(self, *args: Any, **kwargs: Any) -> Any:
        standalone = kwargs.get("standalone_mode", True)
        kwargs["standalone_mode"] = False
        if not standalone:
            return super().main(*args, **kwargs)
        try:
            code = super().main(*args, **kwargs)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        except Exception as exc:
            # Typer's click exceptions (vendored in recent Typer, plain click before it) are
            # recognised by their interface, so either kind of Typer works.
            if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
                raise
            _usage_error(exc)
        if interrupted_silently(code):       # Typer turns Ctrl-C into a bare exit 130
            typer.echo("interrupted", err=True)
        sys.exit(code if isinstance(code, int) else 0)


# Typer's message for a value outside a choice (recent Typer puts "Value error, " before the value).
_NOT_A_CHOICE = re.compile(r"Invalid value for '(?P<option>[^']+)': (?:Value error, )?'(?P<value>.*)' "
                           r"is not one of (?P<choices>'.*')\.?$")


def _usage_error(exc: Any) -> None:
    if type(exc).__name__ != "NoArgsIsHelpError":       # its message is the help, printed already
        message = (str(exc.format_message()).strip().splitlines() or ["bad command line"])[0]
        message = message.replace("Value error, ", "")
        # Said the way every other message of the toolkit names a value and its choices: unquoted.
        if match := _NOT_A_CHOICE.match(message):
            choices = ", ".join(c.strip("'") for c in match["choices"].split(", "))
            message = f"{match['option']} {match['value']} is not one of {choices}"
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        typer.echo(f"error: {message}{hint}", err=True)
    sys.exit(exc.exit_code)


app = typer.Typer(cls=_OneLineUsageErrors, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Train, export, quantize, run and benchmark small image models with ONNX.")
train_app = typer.Typer(no_args_is_help=True, help="Train a model of the zoo.")
app.add_typer(train_app, name="train")


# Set once a command has said why it stops, so that exit status 130 gets "interrupted" only when
# nothing else was said (a Ctrl-C that Typer turns into a bare exit 130).
_said_why = False


def report(message: str) -> None:
    """One `error:` line on stderr for one bad input; the command goes on with the others."""
    typer.echo(f"error: {message}", err=True)


def say(line: str) -> None:
    """A command's running commentary: notes (lines that start with "note:") go to stderr beside
    the errors, so that stdout holds what the command produced; other lines go to stdout."""
    typer.echo(line, err=line.startswith("note:"))


def fail(message: str, code: int = 1) -> NoReturn:
    global _said_why
    _said_why = True
    report(message)
    raise typer.Exit(code)


def interrupted_silently(code: object) -> bool:
    """Whether exit status `code` is a Ctrl-C no command has explained yet."""
    return code == 130 and not _said_why


def check_batch_sizes(values: list[int] | int | None, option: str = "--batch-size") -> None:
    """Refuse, before any work, a batch size over the stated limit (toolkit.edge.infer.MAX_BATCH_SIZE)."""
    from toolkit.edge.infer import MAX_BATCH_SIZE
    for value in [values] if isinstance(values, int) else values or []:
        if value > MAX_BATCH_SIZE:
            fail(f"{option} {value:,} is over the limit of {MAX_BATCH_SIZE:,} per runtime call")


def check_output_file(path: Path | None, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a folder, or a parent that
    is a file or a folder we may not write into."""
    import os

    from toolkit.edge.errors import shown
    if path is None:
        return
    if path.is_dir():
        fail(f"{option} {shown(path)} is a folder; give a file name")
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not parent.is_dir():
        fail(f"{option} {shown(path)}: {shown(parent)} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        fail(f"{option} {shown(path)}: no permission to write in {shown(parent)}")


def check_output_dir(path: Path | None, option: str) -> None:
    """Refuse, before any work, an output folder that is a file or cannot be written."""
    import os

    from toolkit.edge.errors import shown
    if path is None:
        return
    if path.exists() and not path.is_dir():
        fail(f"{option} {shown(path)} is a file, not a folder")
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        fail(f"{option} {shown(path)}: {shown(existing)} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"{option} {shown(path)}: no permission to write in {shown(existing)}")


def each_of(choices: tuple[str, ...]) -> Callable[[list[str] | None], list[str] | None]:
    """Callback of a repeatable option whose values come from `choices` (toolkit.edge.options):
    Typer cannot make a choice of a list of Literals, so the list is checked while parsing, with the
    message Typer gives a single choice."""
    def check(values: list[str] | None) -> list[str] | None:
        for value in values or []:
            if value not in choices:
                raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, choices))}.")
        return values
    return check


def metavar(choices: tuple[str, ...]) -> str:
    """How Typer shows a list of choices in the help (as it would a list of an Enum)."""
    return "<list[" + "|".join(choices) + "]>"


PROVIDER_HELP = "Where to run; no silent fallback to another provider."
DEPLOYED_HELP = (f"{PROVIDER_HELP} Default: the provider (and its schedule, threads and hint) in the "
                 "model's deployment metadata, which `toolkit optimize` writes; else cpu.")


def provider_option() -> Any:
    """The --provider option of every command that runs one model (the choices are its Literal)."""
    return typer.Option("cpu", help=PROVIDER_HELP)


def quantize_option(name: str, *flags: str, more_help: str = "") -> Any:
    """The Typer option for the QuantizeOptions field `name`: its default, help text and limits,
    never restated by a command; `more_help` adds what one command does beyond that."""
    import dataclasses

    from toolkit.edge.options import help_text, limits
    from toolkit.edge.quantize.config import QuantizeOptions

    default = next(f.default for f in dataclasses.fields(QuantizeOptions) if f.name == name)
    text = help_text(QuantizeOptions, name) + (f" {more_help}" if more_help else "")
    bounds = limits(QuantizeOptions, name)
    return typer.Option(default, *flags, help=text, min=bounds.get("min"), max=bounds.get("max"))


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



def _open(path: Path, provider: str | None, precision_hint: str | None = None):
    from toolkit.edge.runtime import ModelError, ProviderError, open_model
    try:
        return open_model(path, provider, precision_hint=precision_hint)
    except (ModelError, ProviderError) as exc:
        fail(str(exc))


def table_console() -> Any:
    """A console for result tables on stdout. Piped output has no terminal width, and rich would
    assume 80 columns and squash wide tables; names are text, never rich markup."""
    from rich.console import Console
    return Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)
