"""The ``ftsslab`` command: typer + rich, one clear line and exit 2 on bad input."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    help="ftsslab: a Scapy-based lab for the FTSS, switched-NAS (XAP/TCH), RKey RDMA and I2O"
    " protocols.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
out = Console()
err = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Keeps ``ftsslab`` a group of commands when a run imports only one (typer would make a
    lone command the whole program)."""

EXIT_USAGE = 2  # bad input: file, expression, layer name, field value
EXIT_INTERNAL = 3


class UserError(Exception):
    """A problem with what the user asked for; shown as one line, exit code 2."""


# The module that defines each command. A run imports only the one it needs (``replay`` and
# ``merge`` race tcpreplay and mergecap: importing every command costs them 3%); help, shell
# completion and unknown names import all of them, in this order.
MODULES = ("ftss", "nas", "san", "i2o", "lab", "packets", "report", "tour", "wireshark")
COMMANDS = {"ftss": "ftss", "nas": "nas", "san": "san", "i2o": "i2o", "validate": "lab",
            "run": "lab", "merge": "lab", "lab": "lab", "replay": "lab", "layers": "packets",
            "craft": "packets", "inspect": "packets", "shell": "packets", "report": "report",
            "tour": "tour", "wireshark": "wireshark"}


def register(args: list[str]) -> None:
    """Import the command modules that ``args`` need (their decorators register commands)."""
    needed = COMMANDS.get(args[0]) if args else None
    for name in (needed,) if needed else MODULES:
        importlib.import_module(f"{__name__}.{name}")


def main() -> None:
    register(sys.argv[1:])
    try:
        app()
    except UserError as exc:
        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False,
                  soft_wrap=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # never a traceback for users; say what broke
        err.print(
            f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_INTERNAL)
