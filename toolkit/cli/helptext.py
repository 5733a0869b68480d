"""How `--help` shows parameters: a flag takes no value, so it shows no type; a positional argument
is shown as NAME (NAME... when it takes several), the way Unix usage lines read.

Typer's own help shows `<bool>` beside every flag (`--help` included) and wraps a required
argument's name in braces (`{inputs}...`), which reads as a template placeholder. Typer builds its
commands when the app is called, so they are tidied as the command group hands them out."""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument


class _PlainArgument(TyperArgument):
    def _usage_display_name(self) -> str:
        return self.display_name_raw + ("..." if self.nargs != 1 else "")


def tidy_help(command: Any, ctx: Any) -> Any:
    """`command` (and, for a group, its subcommands) with flags showing no type and arguments
    named NAME; returns it."""
    if command is None or getattr(command, "_toolkit_tidied", False):
        return command
    for param in [*command.params, command.get_help_option(ctx)]:
        if param is None:
            continue
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif type(param) is TyperArgument:
            if param.metavar is None:
                param.metavar = (param.name or "").upper()
            param.__class__ = _PlainArgument
    command._toolkit_tidied = True
    for name in getattr(command, "commands", {}):
        tidy_help(command.commands[name], ctx)
    return command
