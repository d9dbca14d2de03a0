"""Packet expressions (``send.packet``) and match patterns, parsed by ``ftsslab.expr``."""

from __future__ import annotations

import functools
import re
from typing import Any

from yaml.nodes import Node

from ..model import max_frame
from .context import Context
from .values import Items, text

_PACKET_EXAMPLE = 'Ether(dst="02:00:00:00:02:01")/IP(dst="10.0.0.2")/UDP(dport=7)/b"x"'


def packet_expr(ctx: Context, node: Node, path: str, pattern: bool) -> tuple[str, Any] | None:
    """Check a packet expression (``pattern``: a match pattern); (text, parsed) or None."""
    got = text(ctx, node, path, "a packet pattern" if pattern else "a packet expression")
    if got is None:
        return None
    if "\n" in got.strip():  # a block scalar: one expression over several lines
        got = " ".join(part.strip() for part in got.splitlines() if part.strip())
    got = got.strip()
    ok, result = _parse_expr(got, pattern)
    if ok:
        return got, result
    msg, hint = result
    example = 'UDP(dport=7)' if pattern else _PACKET_EXAMPLE
    ctx.err(path, node, msg, hint or f"e.g. {example}")
    return None


def match(ctx: Context, m: Items, kpath: str) -> str | None:
    """The ``match:`` pattern of an expectation, as text."""
    if "match" not in m:
        return None
    got = packet_expr(ctx, m["match"][1], f"{kpath}.match", pattern=True)
    return got[0] if got is not None else None


def check_frame(ctx: Context, pkt: Any, endpoint: str | None, node: Node, path: str) -> None:
    """A frame to send is Ethernet and fits the MTU of the link it leaves on."""
    from scapy.layers.l2 import Dot3, Ether

    if not isinstance(pkt, Ether | Dot3):
        ctx.err(path, node, f"the frame starts with {type(pkt).__name__}, not Ether",
                'frames go on Ethernet links: start with Ether(dst="...")/...')
        return
    data = bytes(pkt)
    mtu = ctx.mtu.get(endpoint or "", 1500)
    if len(data) > max_frame(data, mtu):
        ctx.err(path, node, f"the frame is {len(data)} bytes, more than the link MTU {mtu} "
                f"+ {max_frame(data, mtu) - mtu} header bytes",
                "make it smaller or raise the link's mtu:")


@functools.lru_cache(maxsize=512)
def _parse_expr(text: str, pattern: bool) -> tuple[bool, Any]:
    """(True, packet or pattern) or (False, (message, hint)); cached: files repeat expressions."""
    from ftsslab.expr import ExprError, parse_packet, parse_pattern

    try:
        return True, (parse_pattern(text) if pattern else parse_packet(text))
    except ExprError as exc:
        return False, _split_hint(str(exc))
    except Exception as exc:  # anything else Scapy or ast may raise on odd input
        return False, (f"cannot parse: {type(exc).__name__}: {exc}"[:200],
                       "see docs/scenarios.md (packets and patterns)")


def _split_hint(message: str) -> tuple[str, str]:
    """Move ftsslab.expr's "(see `ftsslab layers`)" into the hint."""
    m = re.search(r"\s*\((see [^)]*)\)", message)
    if not m:
        return message, ""
    return (message[: m.start()] + message[m.end():]).strip(), m.group(1)
