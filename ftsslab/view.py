"""Packets as rich trees and JSON: what ``ftsslab inspect`` shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.tree import Tree
from scapy.packet import NoPayload, Packet, Raw
from scapy.utils import hexdump


@dataclass
class CapturedPacket:
    index: int
    pkt: Packet
    time: float
    interface: str | None
    comments: list[str] = field(default_factory=list)


def layers_of(pkt: Packet) -> list[Packet]:
    out = []
    layer = pkt
    while layer is not None and not isinstance(layer, NoPayload):
        out.append(layer)
        layer = layer.payload
    return out


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Packet):
        return [layer_json(layer) for layer in layers_of(value)]
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def layer_fields(layer: Packet) -> list[tuple[str, Any, str]]:
    """(name, machine value, display text) for each present field of one layer."""
    out = []
    for fld in layer.fields_desc:
        if hasattr(fld, "_find_fld_pkt"):  # conditional / multiple-type fields
            fld = fld._find_fld_pkt(layer)
        cond = getattr(fld, "cond", None)
        if cond is not None and not cond(layer):
            continue
        value = layer.getfieldval(fld.name)
        try:
            shown = fld.i2repr(layer, value)
        except Exception:
            shown = repr(value)
        out.append((fld.name, value, str(shown)))
    return out


def layer_json(layer: Packet) -> dict[str, Any]:
    return {
        "layer": type(layer).__name__,
        "name": layer.name,
        "fields": {name: _json_value(value) for name, value, _ in layer_fields(layer)},
    }


def packet_json(cp: CapturedPacket) -> dict[str, Any]:
    return {
        "index": cp.index,
        "time": float(cp.time),
        "interface": cp.interface,
        "comments": cp.comments,
        "length": len(cp.pkt),
        "summary": cp.pkt.summary(),
        "layers": [layer_json(layer) for layer in layers_of(cp.pkt)],
        "hex": bytes(cp.pkt).hex(),
    }


def packet_tree(cp: CapturedPacket, with_hex: bool = False) -> Tree:
    head = f"[bold]#{cp.index}[/bold] {float(cp.time):.6f}"
    if cp.interface:
        head += f" [cyan]{cp.interface}[/cyan]"
    head += f" {len(cp.pkt)} bytes  [green]{_escape(cp.pkt.summary())}[/green]"
    tree = Tree(head)
    for comment in cp.comments:
        tree.add(f"[italic yellow]# {_escape(comment)}[/italic yellow]")
    for layer in layers_of(cp.pkt):
        branch = tree.add(f"[bold magenta]{_escape(layer.name)}[/bold magenta]")
        if isinstance(layer, Raw):
            branch.add(
                f"load = {_escape(repr(layer.load[:64]))}{'…' if len(layer.load) > 64 else ''}"
            )
            continue
        for name, _, shown in layer_fields(layer):
            branch.add(f"{name} = {_escape(shown)}")
    if with_hex:
        tree.add(_escape(hexdump(cp.pkt, dump=True)))
    return tree


def _escape(text: str) -> str:
    return text.replace("[", r"\[")
