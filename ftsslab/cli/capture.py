"""Capture commands: ``merge`` and ``replay``. Both race C tools (mergecap, tcpreplay) as
whole commands, so this module imports neither rich nor Scapy and prints plain text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from . import EXIT_FAILED, EXIT_INTERNAL, UserError, app
from .running import LabOpt, lab_state


@app.command(rich_help_panel="Lab")
def merge(
    output: Annotated[Path, typer.Argument(help="pcapng to write.")],
    inputs: Annotated[list[Path], typer.Argument(help="Captures to merge by timestamp.")],
) -> None:
    """Merge captures by timestamp, keeping interface names and packet comments."""
    from ..pcapng import merge as merge_files

    for path in inputs:
        if not path.is_file():
            raise UserError(f"{path}: no such file")
    try:
        count = merge_files(output, inputs)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot merge: {exc}") from None
    print(f"wrote {count} packets to {output}")


@app.command(rich_help_panel="Lab")
def replay(
    file: Annotated[Path, typer.Argument(help="pcap or pcapng to replay.")],
    into: Annotated[str, typer.Option("--into", help="NODE:IF of a running lab.")],
    multiplier: Annotated[float | None, typer.Option(help="Speed factor on file times.")] = None,
    pps: Annotated[float | None, typer.Option(help="Fixed packets per second.")] = None,
    topspeed: Annotated[bool, typer.Option("--topspeed", help="As fast as possible.")] = False,
    loop: Annotated[int, typer.Option(min=1, help="Times to play the file.")] = 1,
    lab: LabOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
):
    """Replay a capture into a running lab on an absolute timeline; report like tcpreplay."""
    # the hot path of a whole-command race with tcpreplay: no VethBackend, no Scapy
    from ..lab.replay import PacketSocket, read_capture
    from ..lab.replay import replay as play
    from ..lab.veth.netns import NetnsError, call_in_netns

    if not file.is_file():
        raise UserError(f"{file}: no such file")
    state = lab_state(lab)
    node, _, iface = into.partition(":")
    rec = state.nodes.get(node)
    if rec is None or iface not in rec.get("ifaces", []):
        raise UserError(f"no endpoint {into!r} in lab {state.lab_id}")
    try:
        frames = read_capture(file)
    except OSError as exc:
        raise UserError(f"{file}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        sock = call_in_netns(rec["ns"], PacketSocket, iface)
    except NetnsError as exc:
        from .lab import show_lab_error

        show_lab_error(exc)
        raise typer.Exit(EXIT_INTERNAL) from None
    except OSError as exc:
        raise UserError(f"{into}: {exc.strerror or exc}") from None
    try:
        report = play(frames, sock, multiplier=multiplier, pps=pps, topspeed=topspeed,
                      loop=loop)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        sock.close()
    print(json.dumps(report.as_dict(), indent=2) if as_json else report.summary())
    if report.failed:
        raise typer.Exit(EXIT_FAILED)
