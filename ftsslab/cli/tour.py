"""``ftsslab tour``: the headline scenarios in a row, each with its verdict and capture."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .. import tour as tour_stops
from . import EXIT_FAILED, EXIT_INTERNAL, UserError, app, out
from . import lab as lab_cli

CAPTURES = Path("captures")


def _select(only: list[str] | None):
    if not only:
        return tour_stops.STOPS
    names = [s.name for s in tour_stops.STOPS]
    if unknown := [n for n in only if n not in names]:
        raise UserError(f"no stop named {', '.join(unknown)} (stops: {', '.join(names)})")
    return tuple(s for s in tour_stops.STOPS if s.name in only)


def _packets(as_json: bool) -> tuple[bool, Path]:
    """The packet-side tour (`python -m ftsslab.demo`); its tables go nowhere under --json."""
    from .. import demo

    capture = CAPTURES / "demo.pcapng"  # where demo.main(CAPTURES) writes
    if not as_json:
        return demo.main(CAPTURES) == 0, capture
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        return demo.main(CAPTURES) == 0, capture


def _from_here(path: Path) -> Path:
    """A stop's scenario as the user would name it from here: the verdict tables cite it."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


@app.command(rich_help_panel="Lab")
def tour(
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            metavar="STOP",
            help="Run only this stop (repeatable): "
            + ", ".join(s.name for s in tour_stops.STOPS) + ".",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Run the headline tour (`./run demo`): each stop's verdict, capture and report; a summary.

    Stops: the FTSS download through a SIGKILL, fabric failover, the switch, every seed's packets.
    Needs root: the scenarios run in real network namespaces.
    Exit status: 0 every stop passed, 1 one failed, 2 bad option or scenario, 3 a lab broke.
    """
    from ..lab.backend import BackendError

    stops = _select(only)
    # Every scenario is loaded and its backend chosen before anything runs: a tour that
    # cannot run here (not root, a broken file) says so at once, with exit status 2.
    plans = []
    for stop in stops:
        scenario = lab_cli.load(_from_here(stop.path)) if stop.path else None
        backend = lab_cli.choose_backend(scenario, "auto") if scenario else None
        plans.append((stop, scenario, backend))

    rows, start = [], time.monotonic()
    for number, (stop, scenario, backend) in enumerate(plans, start=1):
        if not as_json:
            out.rule(f"[bold]stop {number}/{len(plans)}: {stop.name}[/bold]")
            out.print(f"{stop.intro}.\n[dim]shows: {stop.claim}[/dim]", highlight=False)
        began = time.monotonic()
        row = {"stop": stop.name, "claim": stop.claim, "scenario": stop.scenario}
        if scenario is None:
            passed, capture = _packets(as_json)
            report = capture.with_suffix(".html")
            lab_cli.write_html_report(capture, report)
            row |= {"verdict": "pass" if passed else "fail", "capture": str(capture),
                    "report": str(report)}
        else:
            capture = lab_cli.default_capture(scenario)
            report = capture.with_suffix(".html")
            row |= {"capture": str(capture), "report": str(report)}
            try:
                result, doc = lab_cli.execute(scenario, backend, capture, progress=not as_json,
                                              report=report)
            except BackendError as exc:
                lab_cli.show_lab_error(exc)  # stderr, as `run` does
                row |= {"verdict": "lab broke", "error": str(exc), "capture": None,
                        "report": None}
            else:
                if not as_json:
                    lab_cli.show_summary(result, capture, report)
                failed = sum(not o.passed for o in result.outcomes)
                row |= {"verdict": "fail" if failed else "pass", "run": doc,
                        "failed": failed, "expectations": len(result.outcomes)}
        row["seconds"] = round(time.monotonic() - began, 3)
        rows.append(row)
    total = round(time.monotonic() - start, 3)

    verdicts = {r["verdict"] for r in rows}
    if "lab broke" in verdicts:
        code = EXIT_INTERNAL
    elif "fail" in verdicts:
        code = EXIT_FAILED
    else:
        code = 0
    if as_json:
        out.print_json(json.dumps({"passed": code == 0, "seconds": total, "stops": rows}))
    else:
        _show_summary(rows, total)
    raise typer.Exit(code)


def _show_summary(rows: list[dict], total: float) -> None:
    stops = f"{len(rows)} stop" + "s" * (len(rows) != 1)
    table = Table(title=f"ftsslab tour: {stops}, {total:.1f} s")
    for col in ("stop", "verdict", "seconds", "capture and report"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for r in rows:
        verdict = {
            "pass": "[green]pass[/green]",
            "fail": "[red]FAIL[/red]" + (f" {r['failed']} of {r['expectations']} expectations"
                                         if "failed" in r else ""),
            "lab broke": "[bold red]lab broke[/bold red]",
        }[r["verdict"]]
        files = "\n".join(f for f in (r["capture"], r["report"]) if f) or "-"
        table.add_row(r["stop"], verdict, f"{r['seconds']:.1f}", files)
    out.rule()
    out.print(table)
    passed = sum(r["verdict"] == "pass" for r in rows)
    if passed == len(rows):
        out.print(f"[green]every stop passed[/green] ({len(rows)} of {len(rows)})")
    else:
        out.print(f"[red]{len(rows) - passed} of {len(rows)} stops did not pass[/red]")
