"""The ``ftsslab`` command: typer + rich, one clear line and exit 2 on bad input."""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    help="ftsslab: a Scapy-based lab for the FTSS, switched-NAS (XAP/TCH), RKey RDMA and I2O"
    " protocols.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def console(name: str):
    """``out`` or ``err``, a rich console made at first use: importing rich costs 17 ms,
    which ``replay`` and ``merge`` (racing tcpreplay and mergecap) print without."""
    made = globals().get(name)
    if made is None:
        from rich.console import Console

        made = globals()[name] = Console(stderr=name == "err")
    return made


def __getattr__(name: str):  # ``from . import out, err`` in the command modules
    if name in ("out", "err"):
        return console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@app.callback()
def _group() -> None:
    """Keeps ``ftsslab`` a group of commands when a run imports only one (typer would make a
    lone command the whole program)."""

EXIT_FAILED = 1  # an expectation failed, or a frame could not be sent
EXIT_USAGE = 2  # bad input: file, expression, layer name, field value
EXIT_INTERNAL = 3


class UserError(Exception):
    """A problem with what the user asked for; shown as one line, exit code 2."""


# The module that defines each command. A run imports only the one it needs (``replay`` and
# ``merge`` race tcpreplay and mergecap: importing every command costs them 3%); help, shell
# completion and unknown names import all of them, in this order.
MODULES = ("ftss", "nas", "san", "i2o", "lab", "capture", "packets", "report", "tour",
           "wireshark")
COMMANDS = {"ftss": "ftss", "nas": "nas", "san": "san", "i2o": "i2o", "validate": "lab",
            "run": "lab", "merge": "capture", "lab": "lab", "replay": "capture",
            "layers": "packets",
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
        _fail("error", str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        console("err").print("interrupted")
        sys.exit(130)
    except Exception as exc:  # never a traceback for users; say what broke
        _fail("internal error", f"{type(exc).__name__}: {exc}", EXIT_INTERNAL)


def _fail(what: str, text: str, code: int) -> None:
    from rich.markup import escape

    console("err").print(f"[bold red]{what}:[/bold red] {escape(text)}", highlight=False,
                         soft_wrap=True)
    sys.exit(code)
