"""The syntax of names the file defines: nodes and interfaces, and ``node:interface``.

They become namespace and Linux interface names on the veth backend, so what it
would refuse at lab-up is refused here.
"""

from __future__ import annotations

import re

from yaml.nodes import Node

from .errors import Collector

NODE_RE = re.compile(r"[a-z][a-z0-9]*")
NODE_MAX = 10
IFACE_RE = re.compile(r"[a-z][a-z0-9_-]*")
IFACE_MAX = 15
# Words `ip link` takes as its own keywords, exactly or (IP_ABBREVIATED) abbreviated:
# `a` is `address`, `b` `broadcast`. The veth backend names interfaces where a keyword
# may stand, so such a name fails at lab-up; `all` and `default` the kernel refuses.
IP_KEYWORDS = frozenset({
    "up", "down", "name", "index", "brd", "qlen", "mtu", "xdp", "xdpgeneric", "xdpdrv",
    "xdpoffload", "netns", "multicast", "allmulticast", "promisc", "trailers", "arp",
    "carrier", "vf", "vrf", "group", "mode", "state", "protodown", "dev", "parentdev",
    "gso_max_size", "gso_max_segs", "gro_max_size", "gso_ipv4_max_size", "gro_ipv4_max_size",
    "all", "default"})
IP_ABBREVIATED = ("link", "address", "broadcast", "txqueuelen", "txqlen", "master", "nomaster",
                  "dynamic", "type", "alias", "numtxqueues", "numrxqueues", "addrgenmode",
                  "link-netnsid", "help")


def node_name(c: Collector, name: str, node: Node, path: str) -> str | None:
    """A new node's name (a reference to a defined one is ``refs.node_ref``)."""
    if not NODE_RE.fullmatch(name) or len(name) > NODE_MAX:
        c.err(path, node, f"bad node name {name!r}",
              f"a lower-case letter, then letters/digits, at most {NODE_MAX} characters "
              "(it names namespaces and interfaces)")
        return None
    return name


def iface_name(c: Collector, name: str, node: Node, path: str) -> bool:
    if len(name) > IFACE_MAX or not IFACE_RE.fullmatch(name):
        c.err(path, node, f"bad interface name {name!r}",
              f"a lower-case letter, then letters/digits/'_'/'-', at most {IFACE_MAX} "
              "characters (Linux interface names)")
        return False
    word = name if name in IP_KEYWORDS else next(
        (k for k in IP_ABBREVIATED if k.startswith(name)), None)
    if word is not None:
        c.err(path, node, f"interface name {name!r} reads as the `ip link` keyword "
              f"{word!r}", f"the veth backend cannot create it; e.g. {name}0")
        return False
    return True


def endpoint_text(c: Collector, text: str, node: Node, path: str) -> tuple[str, str] | None:
    """"h1:eth0" -> ("h1", "eth0") (syntax only)."""
    parts = text.strip().split(":")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        c.err(path, node, f"bad endpoint {text!r}", 'write "node:interface", e.g. h1:eth0')
        return None
    name, iface = parts
    ok_n = node_name(c, name, node, path) is not None
    ok_i = iface_name(c, iface, node, path)
    return (name, iface) if ok_n and ok_i else None
