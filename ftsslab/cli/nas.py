"""``ftsslab nas``: who holds which connection in a running lab's NAS cluster (seed 002)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from . import UserError, app, out
from .lab import attach, load
from .running import LabOpt

nas_app = typer.Typer(help="The NAS switch and devices of a running lab.", no_args_is_help=True)
app.add_typer(nas_app, name="nas", rich_help_panel="Systems")


def _ask(lab: str | None, kind: str, node: str | None, request: dict) -> dict[str, dict]:
    """``request`` to every node of ``kind`` (or just ``node``): {node: reply}."""
    from ..lab.veth import names
    from ..lab.veth.control import control_request

    backend = attach(lab)
    scenario = load(Path(backend.state.scenario_path))
    nodes = [n.name for n in scenario.nodes if n.kind == kind]
    if node is not None:
        if node not in {n.name for n in scenario.nodes}:
            raise UserError(f"no node {node!r} in {scenario.name}")
        if node not in nodes:
            raise UserError(f"{node} is a {scenario.node(node).kind}, not a {kind}")
        nodes = [node]
    if not nodes:
        raise UserError(f"{scenario.name} has no {kind} node")
    replies = {}
    for name in nodes:
        try:
            reply = control_request(names.lab_dir(backend.lab_id), name, request)
        except OSError as exc:
            raise UserError(f"{name} does not answer ({exc}); is its process running?") from None
        if not reply.get("ok"):
            raise UserError(f"{name}: {reply.get('error')}")
        replies[name] = reply
    return replies


@nas_app.command("table")
def table_cmd(
    switch: Annotated[str | None, typer.Argument(help="The nas-switch (default: every one).")]
    = None,
    lab: LabOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for machines.")] = False,
) -> None:
    """The switch's forwarding table: each client connection and the device that holds it."""
    replies = _ask(lab, "nas-switch", switch, {"op": "table"})
    if as_json:
        out.print_json(json.dumps({n: r["entries"] for n, r in replies.items()}))
        return
    t = Table("switch", "client", "proto", "VIP", "device", title="forwarding table")
    for name, reply in replies.items():
        for e in reply["entries"]:
            t.add_row(name, e["client"], str(e["proto"]), e["vip"], e["device"])
    out.print(t)


@nas_app.command("sessions")
def sessions_cmd(
    device: Annotated[str | None, typer.Argument(help="The nas device (default: every one).")]
    = None,
    lab: LabOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for machines.")] = False,
) -> None:
    """The client connections each device serves now, and any handoff under way."""
    replies = _ask(lab, "nas", device, {"op": "sessions"})
    if as_json:
        out.print_json(json.dumps({n: r["sessions"] for n, r in replies.items()}))
        return
    t = Table("device", "client", "HTTP state", "handing off to", title="sessions")
    for name, reply in replies.items():
        for s in reply["sessions"]:
            t.add_row(name, s["client"], s["state"], s["handoff"] or "")
    out.print(t)
