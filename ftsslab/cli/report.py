"""``ftsslab report``: any capture as a self-contained HTML report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..report.model import DISSECT
from . import UserError, app, err, out


@app.command(rich_help_panel="Packets")
def report(
    capture: Annotated[Path, typer.Argument(help="pcap or pcapng capture (a run's, or any).")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="HTML to write (default: CAPTURE.html).")
    ] = None,
    dissect: Annotated[
        int, typer.Option(min=1, help="Frames to dissect and draw; the rest are counted.")
    ] = DISSECT,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Draw a capture as one HTML file: topology, timeline, a ladder diagram per exchange.

    Opens offline in any browser (no network, no CDN). ftsslab's own captures name their
    links, steps and events; for any other capture the lanes are its addresses.
    Exit status: 0 written; 2 the capture cannot be read, or is damaged (the report then
    shows the frames before the damage and says where it is).
    """
    from ..pcapng import CaptureError
    from ..report import write_report
    from .packets import quiet_scapy

    if not capture.is_file():
        raise UserError(f"{capture}: no such file")
    output = output or capture.with_suffix(".html")
    try:
        with quiet_scapy():
            model = write_report(capture, output, dissect=dissect)
    except CaptureError as exc:  # not a capture at all: nothing to draw
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"{exc.filename or capture}: {exc.strerror or exc}") from None
    summary = {
        "report": str(output), "capture": str(capture), "frames": model.total_frames,
        "dissected": model.dissected_frames, "exchanges": len(model.exchanges),
        "drawn": len(model.frames), "folds": model.folds,
    }
    if as_json:
        out.print_json(json.dumps(summary | {"damage": model.damage or None}))
        if model.damage:
            raise typer.Exit(2)
        return
    out.print(f"report: [bold]{output}[/bold] ({model.total_frames:,} frames, "
              f"{len(model.exchanges):,} exchanges, {len(model.frames):,} arrows)",
              highlight=False)
    for fold in model.folds:
        err.print(f"[dim]{fold}[/dim]", highlight=False)
    if model.damage:
        raise UserError(model.damage)
