"""Forwarding-table entries, as ``table`` steps and ``table`` expectations write them."""

from __future__ import annotations

from typing import Any

from yaml.nodes import Node, ScalarNode

from ..kinds import did_you_mean
from ..model import ForwardingEntry
from .context import Context
from .safe_yaml import INT
from .values import Items, integer, ipv4_addr, mac, mapping, text

ENTRY_KEYS = ("vip", "port", "client_ip", "proto", "client_port", "vport", "dst_mac")
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1}
PORT_PROTOCOLS = (6, 17)


def proto(ctx: Context, node: Node, path: str) -> int | None:
    """``tcp``, ``udp``, ``icmp`` or a protocol number, as the number."""
    if isinstance(node, ScalarNode) and node.tag == INT:
        return integer(ctx, node, path, 0, 255, "tcp, udp, icmp or an IP protocol number")
    got = text(ctx, node, path, "a protocol")
    if got is None:
        return None
    if got.lower() in PROTOCOLS:
        return PROTOCOLS[got.lower()]
    ctx.err(path, node, f"unknown protocol {got!r}",
            did_you_mean(got.lower(), tuple(PROTOCOLS)) + " (or a number 0..255)")
    return None


def _port(ctx: Context, node: Node, path: str) -> int | None:
    return integer(ctx, node, path, 0, 65535, "a port from 0 to 65535")


def _any_mac(ctx: Context, node: Node, path: str) -> str | None:
    return mac(ctx, node, path, unicast=False)


# read in this order, so their errors come in this order
_FIELDS = {"vip": ipv4_addr, "client_ip": ipv4_addr, "dst_mac": _any_mac,
           "client_port": _port, "vport": _port, "proto": proto}


def entry(ctx: Context, node: Node, path: str, switch: str | None) -> ForwardingEntry | None:
    """An entry whose ``port`` is an interface of ``switch`` (when the switch is known)."""
    m = mapping(ctx, node, path, ENTRY_KEYS, required=("vip", "port"), what="a forwarding entry")
    if m is None:
        return None
    vals: dict[str, Any] = {key: fn(ctx, m[key][1], f"{path}.{key}")
                            for key, fn in _FIELDS.items() if key in m}
    ok = None not in vals.values()
    if "port" in m:
        vals["port"] = _out_port(ctx, m["port"][1], f"{path}.port", switch)
        ok = ok and vals["port"] is not None
    if not _ports_fit_proto(ctx, m, path, vals.get("proto")):
        ok = False
    if not ok or "vip" not in m or "port" not in m:
        return None
    return ForwardingEntry(vip=vals["vip"], out_port=vals["port"],
                           client_ip=vals.get("client_ip"), proto=vals.get("proto"),
                           client_port=vals.get("client_port"), vport=vals.get("vport"),
                           dst_mac=vals.get("dst_mac"))


def _out_port(ctx: Context, node: Node, path: str, switch: str | None) -> str | None:
    got = text(ctx, node, path, "a switch interface")
    if got is None or switch is None or got in ctx.ifaces.get(switch, []):
        return got
    have = ctx.ifaces.get(switch, [])
    ctx.err(path, node, f"{switch} has no port {got!r}",
            did_you_mean(got, have) if have else f"{switch} has no links")
    return None


def _ports_fit_proto(ctx: Context, m: Items, path: str, number: int | None) -> bool:
    """Transport ports only go with tcp, udp or no protocol."""
    if number is None or number in PORT_PROTOCOLS:
        return True
    given = [key for key in ("client_port", "vport") if key in m]
    for key in given:
        ctx.err(f"{path}.{key}", m[key][1], f"protocol {number} has no ports",
                "ports match with proto tcp or udp (or no proto)")
    return not given
