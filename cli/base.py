"""The Typer classes every command group is built from: help that reads at 80 columns, one-line errors.

- `App`: a `typer.Typer` whose commands use `Command` and whose groups use `Group`.
- `Command` / `Group`: `--help` shows each option with its metavar (`--out DIR`), never a column
  of type labels (`<path>`, `<int range> [x>=1]`), so the help text keeps the width.
- `Group` also turns usage errors (unknown option, bad choice, missing argument) into one line on
  stderr with exit 2 — or a JSON error on stdout when `--json` was given.
- `DefaultCommandGroup`: `layerpilot probe SPEC` means `layerpilot probe run SPEC`, and
  `probe --help` shows the options of `run` followed by the other subcommands.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from typer import Abort
from typer._click.exceptions import ClickException  # typer vendors click (>= 0.29 pinned)
from typer.core import TyperArgument, TyperCommand, TyperGroup

from cli.console import err, print_json_error
from service.errors import first_line

F = TypeVar("F", bound=Callable[..., Any])


def _plain_params(params: list[Any], ctx: Any) -> None:
    """Show metavars instead of type labels and ranges, and a usage line as every manual writes it
    (`patch apply BASE PATCH_DIR OUT`, optional ones in brackets, where Typer braces the required);
    only ever called on the way to `--help`."""
    for param in params:
        if isinstance(param, TyperArgument):
            param.display_type_rich = lambda ctx: ""  # type: ignore[method-assign] # its name is its metavar
            usage = param.display_name_raw if param.required else f"[{param.display_name_raw}]"
            param._usage_display_name = functools.partial(str, usage)  # type: ignore[method-assign]
        elif getattr(param, "is_flag", False):
            param.metavar = ""
        elif param.metavar is None:
            param.metavar = str(param.name).upper()
        param._get_number_range_help_str = lambda: None


class Command(TyperCommand):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_params(self.get_params(ctx), ctx)
        super().format_help(ctx, formatter)


class Group(TyperGroup):
    """A command group with plain help and one-line usage errors (the root group runs `main`)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_params(self.get_params(ctx), ctx)
        super().format_help(ctx, formatter)

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,  # noqa: FBT001, FBT002 - click's own signature
        windows_expand_args: bool = True,  # noqa: FBT001, FBT002
        **extra: Any,
    ) -> Any:
        forward = {"windows_expand_args": windows_expand_args, **extra}
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **forward)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(argv, prog_name, complete_var, standalone_mode=False, **forward)
        except ClickException as error:
            if type(error).__name__ != "NoArgsIsHelpError":  # help was printed already
                ctx = getattr(error, "ctx", None)
                where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                message = error.format_message().replace("Value error, ", "") + where
                if "--json" in argv:
                    print_json_error(message, exit_code=error.exit_code)
                err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
            sys.exit(error.exit_code)
        except Abort:
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


class DefaultCommandGroup(Group):
    """A group whose first subcommand runs when the arguments name none (`probe SPEC` = `probe run`)."""

    default_command = "run"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        elif not args:
            args = [self.default_command]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The default command's help under the group's name, then the other subcommands."""
        default = self.commands[self.default_command]
        default.format_help(ctx, formatter)
        others = Table.grid(padding=(0, 2))
        for name, command in self.commands.items():
            if name != self.default_command:
                others.add_row(f"[bold cyan]{name}[/]", first_line(command.help or ""))
        Console().print(Panel(others, title="Subcommands", title_align="left", border_style="dim"))


class App(typer.Typer):
    """`typer.Typer` with our command and group classes as defaults."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", Group)
        kwargs.setdefault("add_completion", False)
        kwargs.setdefault("pretty_exceptions_enable", False)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        kwargs.setdefault("cls", Command)
        decorator: Callable[[F], F] = super().command(*args, **kwargs)
        return decorator
