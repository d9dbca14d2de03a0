"""``ftsslab i2o``: seed 001 on a running lab -- what a host advertises to a remote, a service
connection from a remote to an IOP, and a remote's disk exported to real NBD clients."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from . import UserError, app, out
from .nodes import LabNodes
from .running import LabOpt

i2o_app = typer.Typer(help="Seed 001 on a running lab: advertisements, service connections, "
                           "NBD exports.", no_args_is_help=True)
app.add_typer(i2o_app, name="i2o", rich_help_panel="Systems")

WAIT = 30.0
Remote = Annotated[str, typer.Argument(help="An i2o-remote node of the lab.")]
IopArg = Annotated[str, typer.Argument(help="One of its host's IOPs, by its scenario name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON for machines.")]


class _Remote(LabNodes):
    def __init__(self, lab: str | None, remote: str) -> None:
        super().__init__(lab, (remote,), "i2o-remote")
        self.name = remote
        self.host = self.scenario.node(remote).options["host"]
        self.iops = list(self.scenario.node(self.host).options["iops"])

    def iop(self, name: str) -> str:
        if name not in self.iops:
            raise UserError(f"{self.host} has no IOP {name!r} (it has: {', '.join(self.iops)})")
        return name

    def call(self, kind: str, match=lambda e: True, **args) -> dict:
        since = self.logged_since(self.name)
        self.verb(self.name, **args)
        return self.wait_for(self.name, since, lambda e: e.get("kind") == kind and match(e),
                             WAIT)


@i2o_app.command("ls")
def ls(remote: Remote, lab: LabOpt = None, as_json: JsonOpt = False) -> None:
    """What REMOTE's host advertises on the management channel: IOPs and their devices."""
    r = _Remote(lab, remote)
    got = r.call("advertised", op="hello")
    names = {2 + i: n for i, n in enumerate(r.iops)}  # the LT numbers IOPs from 2, in order
    rows = []
    for entry in filter(None, got["list"].split(";")):
        iop_id, tids = entry.split(":")
        rows.append({"iop": names.get(int(iop_id), "?"), "iop_id": int(iop_id),
                     "tids": tids.split(",")})
    if as_json:
        out.print_json(json.dumps({"host": got["host"], "iops": rows}))
        return
    t = Table("IOP", "id", "device TIDs", title=f"{got['host']} advertises to {remote}")
    for row in rows:
        t.add_row(row["iop"], str(row["iop_id"]), ", ".join(row["tids"]))
    out.print(t)
    hidden = sorted(set(r.iops) - {row["iop"] for row in rows})
    if hidden:
        out.print(f"not advertised to {remote} (private, down or not allowed): "
                  + ", ".join(hidden))


@i2o_app.command("attach")
def attach_iop(remote: Remote, iop: IopArg, lab: LabOpt = None, as_json: JsonOpt = False
               ) -> None:
    """Open a service connection from REMOTE to IOP (CM_CONNECT); exit 1 if refused."""
    r = _Remote(lab, remote)
    got = r.call("connected", lambda e: e.get("iop") == iop, op="connect", iop=r.iop(iop))
    if as_json:
        out.print_json(json.dumps({"remote": remote, "iop": iop, "status": got["status"],
                                   "conn": got["conn"]}))
    else:
        out.print(f"{remote} -> {r.host}:{iop}: {got['status']}"
                  + (f", connection {got['conn']}" if got["status"] == "OK" else ""))
    if got["status"] != "OK":
        raise typer.Exit(1)


@i2o_app.command("export")
def export(remote: Remote, iop: IopArg,
           device: Annotated[int, typer.Option("--device", "-d", min=0,
                                               help="The device's index on the IOP.")] = 0,
           lab: LabOpt = None, as_json: JsonOpt = False) -> None:
    """Export the disk to NBD clients: REMOTE connects to IOP and runs nbdkit on it."""
    r = _Remote(lab, remote)
    devices = r.scenario.node(r.host).options["iops"][r.iop(iop)]["devices"]
    if device >= len(devices):
        raise UserError(f"{iop} has {len(devices)} devices")
    uri = r.ask(remote, {"op": "export", "iop": iop, "device": device})["uri"]
    if as_json:
        out.print_json(json.dumps({"remote": remote, "iop": iop, "device": device, "uri": uri}))
        return
    out.print(f"{r.host}:{iop} device {device} on NBD: [bold]{uri}[/bold]\n"
              f"  nbdinfo '{uri}'\n  nbdcopy disk.img '{uri}'\n"
              f"  fio --ioengine=nbd --uri='{uri}' --name=job --rw=randrw --bs=4k --size=4M")
