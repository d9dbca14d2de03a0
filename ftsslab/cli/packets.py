"""Packet commands: ``layers``, ``craft``, ``inspect``, ``shell``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import UserError, app, err, out

MAX_COUNT = 1_000_000   # copies `craft` writes at most: about 3 s and 100 MB for a small frame
PROGRESS_FROM = 10_000  # fewer copies take well under a second: no progress bar


@app.command(rich_help_panel="Packets")
def layers(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List every ftsslab layer with its fields and bindings."""
    from ..catalog import bindings_of, family_of, fields_of, ftsslab_layers

    rows = [
        {
            "layer": cls.__name__,
            "name": cls._name,
            "family": family_of(cls),
            "fields": [{"name": n, "type": t} for n, t in fields_of(cls)],
            "bindings": [
                {"lower": b.lower, "upper": b.upper, "when": b.condition} for b in bindings_of(cls)
            ],
        }
        for cls in ftsslab_layers()
    ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"ftsslab layers ({len(rows)})", show_lines=True)
    for col in ("family", "layer", "fields", "bindings"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            row["family"],
            f"[bold]{row['layer']}[/bold]\n{row['name']}",
            ", ".join(f["name"] for f in row["fields"]),
            "\n".join(
                f"{b['lower']} → {b['upper']}" + (f" ({b['when']})" if b["when"] else "")
                for b in row["bindings"]
            )
            or "-",
        )
    out.print(table)


@app.command(rich_help_panel="Packets")
def craft(
    expr: Annotated[
        str, typer.Argument(help="Scapy '/' expression, e.g. 'Ether()/IP()/UDP()/b\"hi\"'.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="pcapng file to write.")],
    count: Annotated[
        int, typer.Option("--count", "-c", help=f"Copies to write, 1 to {MAX_COUNT:,}.")
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Build packets from a safe expression (literals and layer calls only) into a pcapng file.

    The expression is parsed, never evaluated: only layer constructors with literal
    arguments joined by '/' are accepted, at most 100 layers; addresses must be literal
    (nothing is resolved by DNS or ARP).
    """
    from scapy.config import conf

    from ..expr import ExprError, parse_packet
    from ..pcapng import LINKTYPE_ETHERNET, Interface, PcapNgWriter

    if not 1 <= count <= MAX_COUNT:
        raise UserError(f"--count must be from 1 to {MAX_COUNT:,} (got {count:,})")
    try:
        pkt = parse_packet(expr)
    except ExprError as exc:
        raise UserError(f"bad expression: {exc}") from None
    data = bytes(pkt)
    iface = Interface("craft", "ftsslab craft",
                      conf.l2types.layer2num.get(type(pkt), LINKTYPE_ETHERNET))
    stamp = time.time_ns()
    try:
        with output.open("wb") as fh, Progress(
            TextColumn(f"writing {output}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), console=err, transient=True,
            disable=as_json or count < PROGRESS_FROM,
        ) as progress:
            task = progress.add_task("", total=count)
            writer = PcapNgWriter(fh)
            for i in range(count):
                writer.packet(iface, data, stamp)
                if i % PROGRESS_FROM == 0:
                    progress.update(task, completed=i)
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror}") from None
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "output": str(output),
                    "count": count,
                    "length": len(data),
                    "summary": pkt.summary(),
                    "hex": data.hex(),
                }
            )
        )
    else:
        out.print(
            f"wrote {count} × {len(data)} bytes to [bold]{output}[/bold]: {pkt.summary()}",
            highlight=False,
        )


def _resolve_layer(name: str):
    from ..catalog import all_layers

    known = all_layers()
    if name in known:
        return known[name]
    for cls in known.values():
        if str(cls._name).lower() == name.lower() or cls.__name__.lower() == name.lower():
            return cls
    raise UserError(f"unknown layer {name!r} (see `ftsslab layers`)")


def read_capture(path: Path) -> Iterator:
    """Yield CapturedPacket for every packet of a pcap/pcapng file.

    UserError when the file cannot be read; pcapng.CaptureError after the good
    packets when it is damaged (or is not a capture).
    """
    from .. import catalog  # noqa: F401  (registers Scapy's and ftsslab's layers)
    from ..pcapng import read_packets
    from ..view import CapturedPacket

    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        for i, p in enumerate(read_packets(path), start=1):
            yield CapturedPacket(i, p.pkt, p.time, p.interface, p.comments)
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None


@contextmanager
def quiet_scapy() -> Iterator[None]:
    """No Scapy WARNING lines while dissecting: odd bytes are shown, the error line says why."""
    loggers = [logging.getLogger(n) for n in ("scapy", "scapy.runtime")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@app.command(rich_help_panel="Packets")
def inspect(
    file: Annotated[Path, typer.Argument(help="pcap or pcapng capture.")],
    layer: Annotated[
        str | None, typer.Option("--layer", "-l", help="Only packets with this layer.")
    ] = None,
    with_hex: Annotated[bool, typer.Option("--hex", help="Add a hex dump of each packet.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document for all packets.")
    ] = False,
) -> None:
    """Show every packet of a capture as a tree of layers and fields, with comments and
    interface names.

    A damaged capture: the packets before the damage, then one line saying at which
    byte, in which record or block, and what is wrong; exit status 2.
    """
    from ..pcapng import CaptureError
    from ..view import packet_json, packet_tree

    wanted = _resolve_layer(layer) if layer else None
    shown = []
    damage = None
    with quiet_scapy():
        try:
            for cp in read_capture(file):
                if wanted is not None and not cp.pkt.haslayer(wanted):
                    continue
                shown.append(cp)
                if not as_json:
                    out.print(packet_tree(cp, with_hex=with_hex))
        except CaptureError as exc:
            damage = exc
        if as_json:
            out.print_json(json.dumps([packet_json(cp) for cp in shown]))
    if damage is not None:
        good = f"; {damage.packets} good packets before it" if damage.packets else ""
        raise UserError(f"{damage}{good}")
    if not as_json and not shown:
        out.print("no packets" + (f" with layer {wanted.__name__}" if wanted else ""))


def shell_banner(names: list[str]) -> str:
    from .. import __version__

    return (
        f"ftsslab {__version__} shell: Scapy with every ftsslab layer loaded.\n"
        f"ftsslab layers: {', '.join(names)}\n"
        "Try: ls(FTSS), explore('ftsslab.layers'), rdpcap('pcaps/reference/ftss.pcapng')"
    )


@app.command(rich_help_panel="Packets")
def shell() -> None:
    """Scapy's interactive shell with every ftsslab layer and craft helper loaded."""
    from scapy.main import interact

    from ..catalog import ftsslab_layers
    from ..expr import default_namespace

    names = [cls.__name__ for cls in ftsslab_layers()]
    # Scapy 2.8 drops `mybanner` in its plain-Python shell, so say it ourselves.
    out.print(shell_banner(names), highlight=False)
    interact(mydict=default_namespace(), argv=[])
