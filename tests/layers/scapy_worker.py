"""Worker of test_scapy_untouched: builds and dissects packet descriptions with Scapy.

Run by path, ``python scapy_worker.py [--ftsslab]``, so nothing of the repository is on
``sys.path``: without ``--ftsslab`` the process is a stock Scapy session (``scapy.all`` and
``scapy.contrib.roce``); with it, ``ftsslab.layers`` is imported on top.  It first writes
one JSON line describing its Scapy tables, then answers each description read from stdin
(one JSON line) with one JSON result line on stdout.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable
from typing import Any

import scapy.all  # noqa: F401  (every layer a stock Scapy session has)
from scapy.config import conf
from scapy.contrib.roce import AETH, BTH, GRH, CNPPadding
from scapy.layers.inet import IP, TCP, UDP, IPOption, RandTCPOptions, TCPOptions
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

WITH_FTSSLAB = "--ftsslab" in sys.argv[1:]
if WITH_FTSSLAB:
    import ftsslab.layers  # noqa: F401

LAYERS = {c.__name__: c for c in (Ether, IP, IPv6, TCP, UDP, BTH, AETH, CNPPadding, GRH, Raw)}
IP_OPTIONS = {c.__name__: c for c in IPOption.registered_ip_options.values()}


def value(v: Any) -> Any:
    """JSON to Python: ``{"b": hex}`` is bytes, a list is a tuple."""
    if isinstance(v, dict):
        return bytes.fromhex(v["b"])
    if isinstance(v, list):
        return tuple(value(x) for x in v)
    return v


def field(layer: str, name: str, v: Any) -> Any:
    if layer == "TCP" and name == "options" and isinstance(v, dict):
        random.seed(v["random"])  # what fuzz(TCP()) draws: Scapy's RandTCPOptions
        return RandTCPOptions()._fix()
    if layer == "TCP" and name == "options":
        return [(key, value(val)) for key, val in v]
    if layer == "IP" and name == "options":
        return [IPOption(bytes.fromhex(o["raw"])) if "raw" in o else IP_OPTIONS[o["cls"]]()
                for o in v]
    return value(v)


def build(desc: list) -> Packet:
    pkt = None
    for name, fields in desc:
        layer = LAYERS[name](**{k: field(name, k, v) for k, v in fields.items()})
        pkt = layer if pkt is None else pkt / layer
    return pkt


def fields_of(pkt: Packet) -> list:
    """Every layer's class and ``fields``, values as repr."""
    return [[type(layer).__name__, {k: repr(v) for k, v in layer.fields.items()}]
            for layer in pkt.iterpayloads()]


def attempt(out: dict, key: str, func: Callable[[], Any]) -> Any:
    """``out[key]`` is the result, or the exception's type name; returns the result or None."""
    try:
        result = func()
    except Exception as exc:  # noqa: BLE001 - "both raise the same" is part of the comparison
        out[key] = f"raises {type(exc).__name__}"
        return None
    out[key] = result
    return result


def run(desc: list) -> dict:
    out: dict = {}
    pkt = attempt(out, "layers", lambda: build(desc))
    if pkt is None:
        return out
    out["layers"] = fields_of(pkt)
    attempt(out, "repr", lambda: repr(pkt))
    raw = attempt(out, "bytes", lambda: bytes(pkt))
    if raw is None:
        return out
    out["bytes"] = raw.hex()
    again = attempt(out, "dissected", lambda: type(pkt)(raw))
    if again is not None:
        out["dissected"] = fields_of(again)
        attempt(out, "summary", again.summary)
        attempt(out, "rebuilt", lambda: bytes(again).hex())
    return out


def tables() -> dict:
    """The Scapy tables the descriptions are drawn from, as this process has them."""
    return {
        "ftsslab": sorted(m for m in sys.modules if m.split(".")[0] == "ftsslab"),
        "tcp_options": {str(k): list(v) for k, v in TCPOptions[0].items()},
        "ip_options": {str(k): c.__name__ for k, c in IPOption.registered_ip_options.items()},
        "bth_opcodes": sorted(f["opcode"] for f, _ in BTH.payload_guess if "opcode" in f),
        "ether_types": sorted({f["type"] for f, _ in Ether.payload_guess if "type" in f}),
        "udp_ports": sorted({p for f, _ in UDP.payload_guess for p in f.values()}),
    }


def main() -> None:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever Scapy prints goes to stderr, not into the answers
    conf.neighbor.resolvers = {}  # an unset Ether.dst must never send ARP
    print(json.dumps(tables()), file=out, flush=True)
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line))), file=out, flush=True)


if __name__ == "__main__":
    main()
