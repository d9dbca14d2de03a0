"""What the scenario says a `sanic` node is: its port, memory, processes, QPs and its peers --
a ``SanicConfig`` built from the node's options (``config``), for both backends.

QPs are numbered from ``FIRST_QPN`` in the order they are declared, and RD's EE contexts by
the other nodes' names, so each end knows the other's numbers from the scenario alone (a
subnet manager's job, which the seed leaves out).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

FIRST_QPN = 0x11  # Context numbers QPs from here, in the order they are opened


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    pid: int
    kernel: bool
    segments: tuple[tuple[int, int, int], ...]  # (ESID, pages, of them mapped from the first)


@dataclass(frozen=True)
class QpSpec:
    name: str
    qpn: int
    process: str
    type: str  # "rc" or "ud"
    peer: str | None  # the remote node (RC)
    remote: str | None  # its QP's name (RC)
    max_outstanding: int
    timeout: float
    retry_cnt: int
    rnr_retry: int
    qkey: int  # UD, RD
    recv_buffer: int | None  # EA of a ring of receives kept posted
    recv_size: int
    receives: int
    rdma: bool = True  # RD: takes RDMA from any node holding a key (B3.27)


@dataclass(frozen=True)
class SanicConfig:
    name: str
    iface: str
    mac: str
    ip: str
    frames: int
    mtu: int
    rdma: bool
    fault_handler: str  # "map": MapLocalPage; "refuse": every fault is unresolvable
    processes: tuple[ProcessSpec, ...]
    qps: tuple[QpSpec, ...]
    peers: Mapping[str, Peer]
    # RD: the EE context to each node with RD QPs, and the number that node's EE context to
    # this one has -- both from one rule (sorted names), so each side knows the other's
    eecs: tuple[tuple[str, int], ...] = ()
    management: tuple[str, int] | None = None  # the GSI agent's (process, buffer EA)


class Peer(NamedTuple):
    ip: str
    mac: str
    qpns: Mapping[str, int]  # its QPs' numbers
    qkeys: Mapping[str, int]  # its datagram QPs' Q_Keys


def _has_rd(options: Mapping[str, Any]) -> bool:
    return any(q.get("type") == "rd" for q in options.get("qps", {}).values())


def eec_numbers(node: str, rd_nodes: list[str]) -> dict[str, int]:
    """The EE context numbers ``node`` opens, one per other node with RD QPs, in name order."""
    return {n: i for i, n in enumerate((n for n in sorted(rd_nodes) if n != node), start=1)}


def guid_of(mac: bytes) -> int:
    """A SANIC's GUID from its port's MAC, as EUI-64 makes one (FF FE in the middle)."""
    return int.from_bytes(mac[:3] + b"\xff\xfe" + mac[3:], "big")


def qp_numbers(options: Mapping[str, Any]) -> dict[str, int]:
    """The QPN each of a node's QPs gets: in the order they are declared."""
    return {name: FIRST_QPN + i for i, name in enumerate(options.get("qps", {}))}


def esid_of(key: Any) -> int | None:
    """A segment's ESID from its key (YAML mapping keys arrive as text: "1", "0x10")."""
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    try:
        return int(str(key), 0)
    except ValueError:
        return None


def parse_seconds(value: Any) -> float:
    """``50ms``, ``1s``, ``0.05``: seconds (options are checked before this runs)."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    for unit, scale in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


def config(name: str, options: Mapping[str, Any], ports: list[tuple[str, str, str | None]],
           peers: Mapping[str, tuple[str, str, Mapping[str, Any]]]) -> SanicConfig:
    """A node's config from its options, its ports (iface, mac, ipv4/len) and the other sanic
    nodes' (ip, mac, options)."""
    iface, mac, ipv4 = next(p for p in ports if p[2])
    procs = []
    for pid, (pname, p) in enumerate(options["processes"].items(), start=1):
        segs = []
        for esid, seg in p.get("segments", {}).items():
            pages = seg if isinstance(seg, int) else seg["pages"]
            mapped = pages if isinstance(seg, int) else seg.get("mapped", pages)
            segs.append((esid_of(esid), pages, mapped))
        procs.append(ProcessSpec(pname, pid, bool(p.get("kernel", False)), tuple(segs)))
    qpns = qp_numbers(options)
    qps = []
    for qname, q in options.get("qps", {}).items():
        peer, remote = None, None
        if q.get("type", "rc") == "rc":
            peer, _, remote = str(q["peer"]).partition(".")
            remote = remote or qname
        qps.append(QpSpec(
            qname, qpns[qname], q["process"], q.get("type", "rc"), peer, remote,
            q.get("max_outstanding", 16), parse_seconds(q.get("timeout", 0.05)),
            q.get("retry_cnt", 7), q.get("rnr_retry", 7), q.get("qkey", 0),
            q.get("recv_buffer"), q.get("recv_size", 4096), q.get("receives", 0),
            q.get("rdma", True)))
    peer_table = {n: Peer(ip, pmac, qp_numbers(popts),
                          {q: o.get("qkey", 0) for q, o in popts.get("qps", {}).items()})
                  for n, (ip, pmac, popts) in peers.items()}
    eecs: tuple[tuple[str, int], ...] = ()
    if _has_rd(options):
        rd_nodes = [name, *(n for n, (_, _, o) in peers.items() if _has_rd(o))]
        mine = eec_numbers(name, rd_nodes)
        eecs = tuple((n, eec_numbers(n, rd_nodes)[name]) for n in mine)
    mgmt = options.get("management")
    return SanicConfig(name, iface, mac, ipv4.split("/")[0], options.get("frames", 256),
                       options.get("mtu", 1024), options.get("rdma", True),
                       options.get("fault_handler", "map"), tuple(procs), tuple(qps),
                       peer_table, eecs,
                       (mgmt["process"], mgmt["buffer"]) if mgmt is not None else None)
