"""The ``ftsslab`` command: typer + rich, one clear line and exit 2 on bad input."""

from __future__ import annotations

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

EXIT_USAGE = 2  # bad input: file, expression, layer name, field value
EXIT_INTERNAL = 3


class UserError(Exception):
    """A problem with what the user asked for; shown as one line, exit code 2."""


def main() -> None:
    from . import ftss, lab, packets, wireshark  # noqa: F401  (registers the commands)

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
