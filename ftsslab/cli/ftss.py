"""``ftsslab ftss``: talk to a running FTSS node (retention replay, claims 5, 20, 29)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from . import UserError, app, out
from .lab import attach, load
from .running import LabOpt

ftss_app = typer.Typer(help="The FTSS of a running lab.", no_args_is_help=True)
app.add_typer(ftss_app, name="ftss", rich_help_panel="Systems")


@ftss_app.command("replay")
def replay_cmd(
    node: Annotated[str, typer.Option("--node", help="Server whose stored dialog to replay.")],
    since: Annotated[float, typer.Option(
        "--since", min=0, help="Seconds back from now: replay what was stored since then.")],
    ftss: Annotated[str, typer.Option("--ftss", help="The FTSS node.")] = "ftss",
    lab: LabOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Roll back: the FTSS re-sends a node's retained packets stored in the last SINCE seconds."""
    from ..lab.veth import names
    from ..lab.veth.control import control_request

    backend = attach(lab)
    scenario = load(Path(backend.state.scenario_path))
    kinds = {n.name: n for n in scenario.nodes}
    for name, kind in ((node, "server"), (ftss, "ftss")):
        if name not in kinds:
            raise UserError(f"no node {name!r} in {scenario.name}")
        if kinds[name].kind != kind:
            raise UserError(f"{name} is a {kinds[name].kind}, not a {kind}")
    request = {"op": "replay", "node_id": kinds[node].options["node_id"],
               "since": time.time() - since}
    try:
        reply = control_request(names.lab_dir(backend.lab_id), ftss, request)
    except OSError as exc:
        raise UserError(f"{ftss} does not answer ({exc}); is its process running?") from None
    if not reply.get("ok"):
        raise UserError(f"{ftss}: {reply.get('error')}")
    if as_json:
        out.print_json(json.dumps(reply))
    else:
        out.print(f"{ftss} re-sent {reply['replayed']} stored packets to {node}", highlight=False)
