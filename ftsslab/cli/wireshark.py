"""``ftsslab wireshark``: install the Lua dissectors where Wireshark looks for them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from . import UserError, app, out

wireshark_app = typer.Typer(
    help="Wireshark plugin: Lua dissectors for ftsslab's own formats.", no_args_is_help=True
)
app.add_typer(wireshark_app, name="wireshark", rich_help_panel="Wireshark")


@wireshark_app.command("path")
def path_cmd() -> None:
    """Print the folder `install` writes to (Wireshark's personal Lua plugin folder)."""
    from ..wireshark import PLUGIN_SUBDIR, personal_plugin_dir

    out.print(str(personal_plugin_dir() / PLUGIN_SUBDIR), highlight=False, soft_wrap=True)


@wireshark_app.command("install")
def install_cmd(
    dest: Annotated[
        Path | None,
        typer.Option("--dest", help="Plugin folder to use instead of Wireshark's personal one."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Copy the Lua dissectors into your personal Wireshark plugin folder (idempotent).

    Restart Wireshark (or reload Lua plugins: Analyze → Reload Lua Plugins) afterwards.
    """
    from ..wireshark import install

    try:
        target, files = install(dest)
    except OSError as exc:
        raise UserError(f"cannot install into {exc.filename}: {exc.strerror}") from None
    if as_json:
        out.print_json(json.dumps({"folder": str(target), "files": [str(f) for f in files]}))
        return
    out.print(f"installed {len(files)} Lua dissectors into [bold]{target}[/bold]:", highlight=False)
    for f in files:
        out.print(f"  {f.name}", highlight=False)
