"""Typed reads of YAML nodes: each returns the value, or None after reporting why not.

Scalars are read from their text and resolved tag, never constructed from a tag the
file chose, so ``02:00:..`` or ``1`` stay text where text is expected.
"""

from __future__ import annotations

import ipaddress
import math
import re

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..kinds import did_you_mean
from .errors import Collector, line
from .safe_yaml import BOOL, CONSTRUCTOR, FLOAT, INT, NULL, STR, describe

MAX_DURATION = 3600.0        # seconds, for wait/interval/timeout
MAX_COUNT = 1_000_000
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_NUMBER = r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*"
DURATION_RE = re.compile(_NUMBER + r"(us|ms|s)\s*")
_DURATION_HINT = "seconds: a number like 0.5, or text like \"200ms\" or \"2s\""
_PER_SECOND = {"us": 1e6, "ms": 1e3, "s": 1.0}
PERCENT_RE = re.compile(_NUMBER + r"%\s*")
_PERCENT_HINT = "a percentage 0..100: \"1%\", \"0.5%\" or a plain number of percent"
RATE_RE = re.compile(_NUMBER + r"(bit|kbit|mbit|gbit)\s*")
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}

Items = dict[str, tuple[Node, Node]]  # key -> (key node, value node)


def mapping(c: Collector, node: Node | None, path: str, allowed: tuple[str, ...],
            required: tuple[str, ...] = (), what: str = "a mapping") -> Items | None:
    """The allowed keys of a mapping; unknown, duplicate and missing keys are errors."""
    if node is None:
        return None
    if not isinstance(node, MappingNode):
        c.err(path, node, f"expected {what}, got {describe(node)}", "keys: " + ", ".join(allowed))
        return None
    out: Items = {}
    for knode, vnode in node.value:
        key = _key(c, knode, path, allowed, out)
        if key is not None:
            out[key] = (knode, vnode)
    for key in required:
        if key not in out:
            c.err(path, node, f"missing required key {key!r}",
                  f"add `{key}:`" if path else f"add `{key}:` at the top level")
    return out


def _key(c: Collector, knode: Node, path: str, allowed: tuple[str, ...], seen: Items,
         ) -> str | None:
    if not isinstance(knode, ScalarNode) or knode.tag == NULL:
        c.err(path, knode, f"a key must be a plain word, got {describe(knode)}",
              "keys: " + ", ".join(allowed))
        return None
    key = knode.value
    kpath = f"{path}.{key}" if path else key
    if key in seen:
        c.err(kpath, knode, f"duplicate key {key!r}",
              f"{key!r} is already given on line {line(seen[key][0])}")
        return None
    if key not in allowed:
        c.err(kpath, knode, f"unknown key {key!r}", did_you_mean(key, allowed))
        return None
    return key


def sequence(c: Collector, node: Node | None, path: str, what: str) -> list[Node]:
    """A list's items; a missing or null list is empty."""
    if node is None:
        return []
    if isinstance(node, ScalarNode) and node.tag == NULL:
        return []
    if not isinstance(node, SequenceNode):
        c.err(path, node, f"expected a list of {what}, got {describe(node)}",
              f"write `- ...` items, one per {what.rstrip('s')}")
        return []
    return list(node.value)


def text(c: Collector, node: Node, path: str, what: str = "a string") -> str | None:
    """Any non-null scalar, as written (so 02:00:.. or 1 stay text)."""
    if isinstance(node, ScalarNode) and node.tag != NULL:
        return node.value
    c.err(path, node, f"expected {what}, got {describe(node)}", f"write {what} here")
    return None


def integer(c: Collector, node: Node, path: str, lo: int, hi: int, what: str = "",
            ) -> int | None:
    hint = what or f"an integer from {lo} to {hi}"
    if not (isinstance(node, ScalarNode) and node.tag == INT):
        c.err(path, node, f"expected an integer, got {describe(node)}", hint)
        return None
    try:
        value = CONSTRUCTOR.construct_yaml_int(node)
    except (ValueError, TypeError):
        c.err(path, node, f"not an integer: {node.value!r}", hint)
        return None
    if not lo <= value <= hi:
        c.err(path, node, f"{value} is out of range ({lo}..{hi})", hint)
        return None
    return value


def boolean(c: Collector, node: Node, path: str) -> bool | None:
    if isinstance(node, ScalarNode) and node.tag == BOOL:
        return bool(CONSTRUCTOR.construct_yaml_bool(node))
    c.err(path, node, f"expected true or false, got {describe(node)}", "true or false")
    return None


def duration(c: Collector, node: Node, path: str, lo: float = 0.0, positive: bool = False,
             ) -> float | None:
    """Seconds, from a number or text with a unit (``"200ms"``); at most ``MAX_DURATION``."""
    value = _seconds(node)
    if value is None:
        c.err(path, node, f"expected a duration, got {describe(node)}", _DURATION_HINT)
        return None
    if value < lo or (positive and value <= 0):
        c.err(path, node, f"duration must be {'> 0' if positive else '>= 0'}, got "
              f"{node.value}", _DURATION_HINT)
        return None
    if value > MAX_DURATION:
        c.err(path, node, f"duration {node.value} is longer than an hour",
              "durations are in seconds; write \"200ms\" for milliseconds")
        return None
    return value


def _seconds(node: Node) -> float | None:
    value = _plain_number(node)
    if value is None and isinstance(node, ScalarNode) and node.tag == STR:
        m = DURATION_RE.fullmatch(node.value)
        if m:
            return float(m.group(1)) / _PER_SECOND[m.group(2)]
    return value


def _plain_number(node: Node) -> float | None:
    """An int or float scalar's value (a bool, text or NaN is None)."""
    if isinstance(node, ScalarNode) and node.tag in (INT, FLOAT):
        try:
            value = float(CONSTRUCTOR.construct_yaml_float(node) if node.tag == FLOAT
                          else CONSTRUCTOR.construct_yaml_int(node))
        except (ValueError, TypeError, OverflowError):
            return None
        return None if math.isnan(value) else value
    return None


def percent(c: Collector, node: Node, path: str) -> float | None:
    """A probability 0..1, written as a percentage: ``"1%"``, ``"0.5%"`` or plain ``1``."""
    value = _plain_number(node)
    if value is None and isinstance(node, ScalarNode) and node.tag == STR:
        m = PERCENT_RE.fullmatch(node.value)
        value = float(m.group(1)) if m else None
    if value is None:
        c.err(path, node, f"expected a percentage, got {describe(node)}", _PERCENT_HINT)
        return None
    if not 0 <= value <= 100:
        c.err(path, node, f"{node.value} is out of range (0..100%)", _PERCENT_HINT)
        return None
    return value / 100


def bitrate(c: Collector, node: Node, path: str, lo: int, hi: int) -> int | None:
    """Bits per second from text with its unit: ``"10mbit"``, ``"512kbit"``, ``"1gbit"``."""
    hint = f"a rate with its unit, {lo // 1000}kbit..{hi // 10**9}gbit: \"10mbit\", \"512kbit\""
    m = RATE_RE.fullmatch(node.value.lower()) if isinstance(node, ScalarNode) and \
        node.tag == STR else None
    if m is None:
        why = ""
        if _plain_number(node) is not None:
            why = ": a rate needs its unit"
        elif isinstance(node, ScalarNode) and node.value.strip().lower().endswith("bps"):
            why = ": tc's bps means bytes per second; write bits (kbit, mbit, gbit)"
        c.err(path, node, f"expected a rate, got {describe(node)}{why}", hint)
        return None
    value = round(float(m.group(1)) * _RATE_UNITS[m.group(2)])
    if not lo <= value <= hi:
        c.err(path, node, f"rate {node.value} is out of range", hint)
        return None
    return value


def mac(c: Collector, node: Node, path: str, unicast: bool = True) -> str | None:
    """A MAC address, lower case with colons (``unicast``: an interface's own address)."""
    got = text(c, node, path, "a MAC address")
    if got is None:
        return None
    value = got.strip().lower().replace("-", ":")
    if not MAC_RE.fullmatch(value):
        c.err(path, node, f"not a MAC address: {got!r}",
              'six hex bytes like "02:00:00:00:00:01" (quote it)')
        return None
    if unicast and int(value[:2], 16) & 1:
        c.err(path, node, f"{value} is a multicast address", "interface MACs are unicast; "
              "use a locally administered one like 02:..")
        return None
    if unicast and value == "00:00:00:00:00:00":
        c.err(path, node, "the all-zero MAC is not allowed", 'e.g. "02:00:00:00:00:01"')
        return None
    return value


def ipv4_addr(c: Collector, node: Node, path: str) -> str | None:
    got = text(c, node, path, "an IPv4 address")
    if got is None:
        return None
    try:
        return str(ipaddress.IPv4Address(got.strip()))
    except ValueError:
        hint = "no prefix here" if "/" in got else "dotted quad like 10.0.0.100"
        c.err(path, node, f"not an IPv4 address: {got!r}", hint)
        return None


def ipv4_iface(c: Collector, node: Node, path: str) -> str | None:
    """``address/prefix`` of a host interface: not the network, broadcast or a special one."""
    got = text(c, node, path, "an IPv4 address with prefix")
    if got is None:
        return None
    got = got.strip()
    if "/" not in got:
        c.err(path, node, f"{got!r} has no prefix length", f"write {got}/24 or similar")
        return None
    try:
        iface = ipaddress.IPv4Interface(got)
    except ValueError:
        c.err(path, node, f"not an IPv4 address/prefix: {got!r}", "like 10.0.0.1/24")
        return None
    net = iface.network
    if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        c.err(path, node, f"{got} is the network or broadcast address of {net}",
              "pick a host address inside the subnet")
        return None
    if iface.ip.is_loopback or iface.ip.is_multicast or iface.ip.is_unspecified:
        c.err(path, node, f"{iface.ip} cannot be an interface address",
              "use a private unicast address like 10.0.0.1/24")
        return None
    return str(iface)
