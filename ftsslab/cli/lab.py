"""Scenario commands: ``run``, ``validate`` and the ``lab`` group."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from . import EXIT_FAILED, EXIT_INTERNAL, UserError, app, err, out
from .running import LabOpt, lab_state

EVENTS_SHOWN = 40  # events the run table shows (the capture and --json have all)


def veth_available() -> str | None:
    """None when the veth backend can run here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "nft", "ethtool"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, check=False)
    if probe.returncode != 0:
        return "network namespaces are not available"
    return None


def choose_backend(scenario, requested: str):
    """veth when it can run (root, namespaces), else sim; a forced choice is honoured or refused."""
    from ..lab.sim import SimBackend

    wanted = requested if requested != "auto" else scenario.backend
    why_not = veth_available()
    if wanted == "sim" or (wanted == "auto" and why_not):
        if scenario.needs_kernel():
            raise UserError(
                f"{scenario.path}: this scenario runs commands in hosts, which needs the "
                f"veth backend ({why_not or 'sim was requested'})"
            )
        return SimBackend()
    if why_not:
        raise UserError(f"the veth backend cannot run here: {why_not} (try --backend sim)")
    from ..lab.veth.backend import VethBackend

    return VethBackend()


def load(path: Path):
    from ..lab.scenario import ScenarioErrors, load_scenario

    try:
        return load_scenario(path)
    except ScenarioErrors as exc:
        for line in exc.lines():
            err.print(line, highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(2) from None


@app.command(rich_help_panel="Lab")
def validate(
    files: Annotated[list[Path], typer.Argument(help="Scenario YAML files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check scenario files: every error at once, with its path, line and a hint (exit 2)."""
    from ..lab.scenario import ScenarioErrors, load_scenario

    report, bad = [], 0
    for path in files:
        try:
            sc = load_scenario(path)
            report.append({"file": str(path), "ok": True, "name": sc.name, "errors": []})
        except ScenarioErrors as exc:
            bad += 1
            report.append({"file": str(path), "ok": False, "errors": exc.lines()})
    if as_json:
        out.print_json(json.dumps(report))
    else:
        for r in report:
            if r["ok"]:
                out.print(f"[green]ok[/green] {r['file']} ({r['name']})", highlight=False)
            for line in r["errors"]:
                err.print(line, highlight=False, soft_wrap=True, markup=False)
    if bad:
        raise typer.Exit(2)


@app.command(rich_help_panel="Lab")
def run(
    file: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    backend: Annotated[
        str,
        typer.Option(
            "--backend", "-b", help="veth (real namespaces), sim (virtual clock) or auto."
        ),
    ] = "auto",
    capture: Annotated[
        Path | None,
        typer.Option(
            "--capture", "-w", help="pcapng to write (default captures/<scenario>.pcapng)."
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="HTML report to write (default: the capture's name, .html)."),
    ] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Write no report.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Run a scenario: build the lab, play the steps, check the expectations, write the capture.

    Its HTML report (topology, timeline, a ladder per exchange) goes beside it, or --no-report.

    Exit status: 0 all expectations passed, 1 one failed, 2 bad file or option, 3 the lab broke.
    """
    from ..lab.backend import BackendError

    if backend not in ("auto", "veth", "sim"):
        raise UserError(f"--backend must be veth, sim or auto, not {backend!r}")
    scenario = load(file)
    chosen = choose_backend(scenario, backend)
    capture = capture or default_capture(scenario)
    report = None if no_report else report or capture.with_suffix(".html")
    try:
        result, doc = execute(scenario, chosen, capture, progress=not as_json, report=report)
    except BackendError as exc:
        show_lab_error(exc)
        raise typer.Exit(EXIT_INTERNAL) from None
    if as_json:
        out.print_json(json.dumps(doc))
    else:
        show_summary(result, capture, report)
    if not result.passed:
        raise typer.Exit(EXIT_FAILED)


def default_capture(scenario) -> Path:
    return Path("captures") / f"{scenario.name}.pcapng"


def execute(scenario, backend, capture: Path, progress: bool = True, report: Path | None = None):
    """Play a loaded scenario (progress bar on stderr), write its capture and, when asked, its
    report: (result, JSON doc).

    Shared by `run` and `tour`; a BackendError (the lab broke) is the caller's to report.
    """
    from rich.progress import BarColumn, Progress, TextColumn

    from ..lab.capture import write_capture
    from ..lab.runner import Runner

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.fields[step]}"),
        console=err,
        transient=True,
        disable=not progress or not err.is_terminal,  # a log gets no stray blank line
    ) as bar:
        task = bar.add_task(f"{scenario.name} on {backend.name}", total=len(scenario.steps),
                            step="")

        def advance(step, i, total):
            bar.update(task, completed=i, step=step.label)

        result = Runner(scenario, backend, progress=advance).run()
    written = write_capture(capture, scenario, result.frames, result.events, backend.name)
    doc = result.as_dict() | {"capture": str(capture), "frames_written": written}
    if report is not None:
        write_html_report(capture, report, result)
        doc["report"] = str(report)
    return result, doc


def write_html_report(capture: Path, report: Path, result=None) -> None:
    """The capture's report (and the run's, with ``result``), without Scapy's warnings."""
    from ..report import write_report
    from .packets import quiet_scapy

    with quiet_scapy():
        write_report(capture, report, result)


def show_lab_error(exc: Exception) -> None:
    err.print(f"[bold red]lab error:[/bold red] {escape(str(exc))}", highlight=False,
              soft_wrap=True)


def show_summary(result, capture: Path, report: Path | None = None) -> None:
    from rich.table import Table

    sc = result.scenario
    table = Table(
        title=f"{sc.name}: {len(sc.steps)} steps on the [bold]{result.backend}[/bold] "
        f"backend, {result.duration:.3f} s"
    )
    for col in ("", "when", "expectation", "result"):
        table.add_column(col)
    for o in result.outcomes:
        mark = "[green]pass[/green]" if o.passed else "[red]FAIL[/red]"
        table.add_row(mark, o.at, f"{o.what}\n[dim]{sc.path}:{o.line} {o.where}[/dim]", o.detail)
    out.print(table)
    links = Table(title="frames per link")
    links.add_column("link")
    links.add_column("frames", justify="right")
    for name, count in result.frames_per_link().items():
        links.add_row(name, str(count))
    out.print(links)
    if result.events:
        events = Table(title="events")
        for col in ("time", "node", "event", "detail"):
            events.add_column(col)
        for e in result.events[:EVENTS_SHOWN]:
            events.add_row(f"{e.time:.6f}", e.node, e.kind, e.detail)
        if len(result.events) > EVENTS_SHOWN:
            events.caption = (f"the first {EVENTS_SHOWN} of {len(result.events)} events; "
                              "all are comments in the capture, and in --json")
        out.print(events)
    verdict = (
        "[green]all expectations passed[/green]"
        if result.passed
        else f"[red]{sum(not o.passed for o in result.outcomes)} expectation(s) failed[/red]"
    )
    out.print(f"{verdict}; capture: [bold]{capture}[/bold]"
              + (f"; report: [bold]{report}[/bold]" if report else ""), highlight=False)


lab_app = typer.Typer(
    help="Interactive labs on the veth backend: up, exec, capture, down, ls, clean.",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab", rich_help_panel="Lab")


def attach(lab_id: str | None):
    """A backend driving the lab named, or the only running one; UserError otherwise."""
    from ..lab.backend import BackendError
    from ..lab.veth.backend import VethBackend

    try:
        return VethBackend.attach(lab_state(lab_id).lab_id)
    except BackendError as exc:
        raise UserError(str(exc)) from None


@lab_app.command("up")
def lab_up(file: Annotated[Path, typer.Argument(help="Scenario YAML (its topology is used).")]):
    """Build a scenario's topology on veth and leave it running (no steps are played)."""
    from ..lab.backend import BackendError

    if why := veth_available():
        raise UserError(f"the veth backend cannot run here: {why}")
    scenario = load(file)
    from ..lab.veth.backend import VethBackend

    backend = VethBackend(capture=False)
    try:
        backend.up(scenario)
    except BackendError as exc:
        raise UserError(str(exc)) from None
    lab_id = backend.detach()
    out.print(
        f"lab [bold]{lab_id}[/bold] is up ({scenario.name}: {len(scenario.nodes)} nodes, "
        f"{len(scenario.links)} links); `ftsslab lab down --lab {lab_id}` removes it",
        highlight=False,
    )


@lab_app.command(
    "exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def lab_exec(
    node: Annotated[str, typer.Argument(help="Node whose namespace runs the command.")],
    cmd: Annotated[list[str], typer.Argument(help="Command after `--`.")],
    lab: LabOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds before the command is killed.")] = 60,
):
    """Run a command inside a node's namespace: `ftsslab lab exec h1 -- ping -c1 10.0.0.2`."""
    from ..lab.backend import BackendError

    backend = attach(lab)
    try:
        res = backend.exec(node, tuple(cmd), timeout)
    except BackendError as exc:
        raise UserError(str(exc)) from None
    out.out(res.stdout, end="", highlight=False)
    if res.stderr:
        err.out(res.stderr, end="", highlight=False)
    raise typer.Exit(res.status)


@lab_app.command("capture")
def lab_capture(
    output: Annotated[Path, typer.Option("-o", "--output", help="pcapng to write.")],
    seconds: Annotated[float, typer.Option("--seconds", "-s", min=0.1, help="How long.")] = 10,
    lab: LabOpt = None,
):
    """Capture one end of every link of a running lab for a while."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn

    from ..lab.capture import write_capture
    from ..lab.veth.capture import Capture

    backend = attach(lab)
    state = backend.state
    scenario = load(Path(state.scenario_path))
    cap = Capture(state.created)
    for rec in state.links:
        cap.add_link(rec["name"], rec["ns_a"], rec["if_a"], rec["a"], rec["b"])
    cap.start()
    with Progress(TextColumn("capturing"), BarColumn(), console=err, transient=True) as progress:
        task = progress.add_task("", total=seconds)
        start = time.monotonic()
        while (done := time.monotonic() - start) < seconds:
            progress.update(task, completed=done)
            time.sleep(min(0.1, seconds - done))
    frames = cap.frames()
    cap.close()
    count = write_capture(output, scenario, frames, [], "veth")
    out.print(f"wrote {count} frames to [bold]{output}[/bold]", highlight=False)


@lab_app.command("down")
def lab_down(lab: LabOpt = None):
    """Remove a running lab (namespaces, links, processes)."""
    from ..lab.veth.state import remove_lab

    backend = attach(lab)
    removed = remove_lab(backend.lab_id, backend.state)
    out.print(f"lab {backend.lab_id} removed ({len(removed)} items)", highlight=False)


@lab_app.command("ls")
def lab_ls(as_json: Annotated[bool, typer.Option("--json")] = False):
    """List labs on this machine."""
    from rich.table import Table

    from ..lab.veth.state import list_labs

    labs = list_labs()
    rows = [
        {
            "lab": s.lab_id,
            "scenario": s.scenario,
            "file": s.scenario_path,
            "status": s.status,
            "alive": s.alive(),
            "nodes": len(s.nodes),
            "links": len(s.links),
        }
        for s in labs
    ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"labs ({len(rows)})")
    for col in ("lab", "scenario", "status", "nodes", "links"):
        table.add_column(col)
    for r in rows:
        status = r["status"] if r["alive"] else f"{r['status']} (owner gone: `lab clean`)"
        table.add_row(r["lab"], r["scenario"], status, str(r["nodes"]), str(r["links"]))
    out.print(table)


@lab_app.command("clean")
def lab_clean(
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Also remove labs whose owner is alive or that were detached."
        ),
    ] = False,
):
    """Remove what crashed runs left (only ftsslab's own namespaces, links and processes)."""
    from ..lab.veth.state import clean

    removed = clean(force=force)
    for line in removed:
        out.print(f"removed {line}", highlight=False)
    out.print(f"{len(removed)} items removed", highlight=False)
