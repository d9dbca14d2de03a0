"""``ftsslab ftss``: talk to a running FTSS node (retention replay, claims 5, 20, 29)."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from . import UserError, app, out
from .lab import LabOpt, _attach, load

ftss_app = typer.Typer(help="The FTSS of a running lab.", no_args_is_help=True)
app.add_typer(ftss_app, name="ftss", rich_help_panel="Systems")


@ftss_app.command("replay")
def replay_cmd(
    node: Annotated[str, typer.Option("--node", help="Server whose stored dialog to replay.")],
    since: Annotated[float, typer.Option(
        "--since", help="Seconds back from now: replay what was stored since then.")],
    ftss: Annotated[str, typer.Option("--ftss", help="The FTSS node.")] = "ftss",
    lab: LabOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Roll back: the FTSS re-sends a node's retained packets stored in the last SINCE seconds."""
    from ..ftss.daemon import control_path
    from ..lab.veth import names

    backend = _attach(lab)
    scenario = load(Path(backend.state.scenario_path))
    try:
        target = scenario.node(node)
        scenario.node(ftss)
    except StopIteration:
        raise UserError(f"no node {node!r} or {ftss!r} in {scenario.name}") from None
    if target.kind != "server":
        raise UserError(f"{node} is a {target.kind}, not a server")
    request = {"op": "replay", "node_id": target.options["node_id"], "since": time.time() - since}
    path = control_path(names.lab_dir(backend.lab_id), ftss)
    reply_path = os.path.join(tempfile.mkdtemp(prefix="ftsslab-"), "reply")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(reply_path)
        s.settimeout(5)
        try:
            s.sendto(json.dumps(request).encode(), path)
            reply = json.loads(s.recv(4096))
        except OSError as exc:
            raise UserError(f"{ftss} does not answer ({exc}); is its process running?") from None
        finally:
            os.unlink(reply_path)
            os.rmdir(os.path.dirname(reply_path))
    if not reply.get("ok"):
        raise UserError(f"{ftss}: {reply.get('error')}")
    if as_json:
        out.print_json(json.dumps(reply))
    else:
        out.print(f"{ftss} re-sent {reply['replayed']} stored packets to {node}", highlight=False)
