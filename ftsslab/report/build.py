"""A report's model from a capture, and from the run that wrote it when there is one.

Scapy dissects about 5k of these frames a second, so a large capture is not dissected whole.
A struct reader sorts every frame into its conversation (addresses, protocol, ports); within
the budget, each conversation is dissected by its first and last frames, as many for every
conversation alike, and the middle of a long one is counted, not dissected. So a download's
bulk is folded while the handoff that moved it, in a conversation of its own, is drawn. Within
an exchange, a long dialogue is drawn by its head and tail with a fold between.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from .. import catalog  # noqa: F401 -- Scapy's layers and ftsslab's, as inspect dissects
from ..lab.capture import EPOCH_NS
from ..pcapng import Capture, ReadPacket, read_capture
from ..view import layer_fields, layers_of
from .exchanges import Grouper, label
from .model import (
    DISSECT,
    Conversation,
    Exchange,
    Frame,
    Layer,
    LinkLine,
    Moment,
    NodeBox,
    Report,
    Topology,
)

HEAD, TAIL = 30, 10  # arrows drawn of a longer exchange: its first and last frames
DRAWN = 3000        # arrows drawn in all; later exchanges are listed, not drawn
BROADCAST = "ff:ff:ff:ff:ff:ff"

_FRAME_NOTE = re.compile(r"^(\S+) -> (\S+)(?: \[step (.*?)\])?(?: \[([^\]]*)\])?$")
_LINK_NOTE = re.compile(r"^link (\S+) <-> (\S+) \(mtu (\d+)\)$")
_SCENARIO_NOTE = re.compile(r"^ftsslab scenario (.+) \((.*)\) on (\w+)$")
_EVENT_NOTE = re.compile(r"^event t=([\d.]+)s (\S+) ([\w-]+): (.*)$")


@dataclass(frozen=True)
class _Seen:
    """A dissected frame: where it went and what the capture's comment says of it."""

    number: int
    pkt: Packet
    src: str
    dst: str
    where: str
    step: str
    note: str
    time: float
    data: bytes


def build_report(path: str | Path | bytes, result=None, *, dissect: int = DISSECT) -> Report:
    """The model of ``path``'s report (a capture file, or its bytes); ``result`` (a
    ``RunResult``) adds the scenario's topology, steps and verdicts."""
    cap, damage = read_capture(path)
    if damage is not None and not len(cap):
        raise damage  # not a capture, or nothing readable in it: nothing to draw
    ours = next(filter(None, map(_SCENARIO_NOTE.match, cap.notes)), None)  # ftsslab wrote it
    times = cap.times()
    origin = EPOCH_NS / 1e9 if ours else (times[0] if times else 0.0)
    keys = _keys(cap)
    chosen, quota = _chosen(keys, dissect)
    seen = _dissect(cap, times, origin, chosen)
    grouper = Grouper()
    for s in seen:
        grouper.feed(s.number, s.pkt, s.src, s.dst, s.step, s.data[12:], s.where)
    exchanges, frames = _draw(grouper, {s.number: s for s in seen})

    report = Report(
        title=ours[1] if ours else cap.source and Path(cap.source).name or "capture",
        source=cap.source or "(in memory)",
        topology=_topology(cap, seen, result),
        timeline=_timeline(result, cap.notes),
        exchanges=exchanges,
        frames=frames,
        undissected=_conversations(cap, keys, times, origin, set(chosen)),
        total_frames=len(cap),
        dissected_frames=len(chosen),
        backend=result.backend if result else ours[3] if ours else "",
        passed=result.passed if result is not None else None,
        damage=str(damage or ""),
    )
    report.folds = _folds(report, quota, dissect)
    return report


def _chosen(keys: list[tuple], budget: int) -> tuple[list[int], int]:
    """The frames to dissect, and how many of each conversation's (0: all of them): every
    frame when they fit the budget, else the first four fifths and the last fifth (``_head``)
    of the largest quota all conversations can have alike."""
    if len(keys) <= budget:
        return list(range(len(keys))), 0
    members: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    sizes = [len(m) for m in members.values()]
    low, high = 1, max(sizes)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in sizes) <= budget:
            low = mid
        else:
            high = mid - 1
    head = _head(low)
    chosen = []
    for m in members.values():
        chosen += m if len(m) <= low else m[:head] + m[len(m) - (low - head):]
    return sorted(chosen)[:budget], low  # (more conversations than the budget: the first)


def _head(quota: int) -> int:
    """Of a conversation's quota, how many of its first frames (the rest are its last)."""
    return quota - max(1, quota // 5) if quota > 1 else quota


def _keys(cap: Capture) -> list[tuple]:
    data, out = cap.data, []
    for i, (at, length) in enumerate(zip(cap.offsets, cap.lengths, strict=True)):
        linktype = cap.interfaces[cap.ifaces[i]].linktype
        out.append(_conversation(data, at, length) if linktype == 1
                   else ("link type", str(linktype)))
    return out


def _dissect(cap: Capture, times: list[float], origin: float, chosen: list[int]) -> list[_Seen]:
    out, macs = [], {}
    pkts, datas = [], []
    for i in chosen:
        at = cap.offsets[i]
        data = bytes(cap.data[at:at + cap.lengths[i]])
        pkt = ReadPacket(0.0, None, [], data, cap.interfaces[cap.ifaces[i]].linktype).pkt
        pkts.append(pkt)
        datas.append(data)
        if Ether in pkt:  # addresses to name a foreign capture's lanes by
            if IP in pkt:
                macs.setdefault(pkt[Ether].src, pkt[IP].src)
            elif ARP in pkt and pkt[ARP].op in (1, 2):
                macs.setdefault(pkt[Ether].src, pkt[ARP].psrc)
    for i, pkt, data in zip(chosen, pkts, datas, strict=True):
        iface = cap.interfaces[cap.ifaces[i]]
        where, step, note = iface.name or "", "", ""
        m = next(filter(None, map(_FRAME_NOTE.match, cap.comments.get(i, ()))), None)
        if m:
            src, dst = m[1].split(":")[0], m[2].split(":")[0]
            where, step, note = f"{m[1]} -> {m[2]}", m[3] or "", m[4] or ""
        else:
            src, dst = _lanes(pkt, macs)
        out.append(_Seen(i + 1, pkt, src, dst, where, step, note, times[i] - origin, data))
    return out


def _lanes(pkt: Packet, macs: dict[str, str]) -> tuple[str, str]:
    """A foreign frame's lanes: its IP addresses, else its MACs named by the IPs they carried."""
    for ip in (IP, IPv6):
        if ip in pkt:
            return pkt[ip].src, pkt[ip].dst
    if Ether in pkt:
        src, dst = pkt[Ether].src, pkt[Ether].dst
        return macs.get(src, src), "broadcast" if dst == BROADCAST else macs.get(dst, dst)
    return "?", "?"


def _draw(grouper: Grouper, seen: dict[int, _Seen]) -> tuple[list[Exchange], dict[int, Frame]]:
    exchanges, frames, budget = [], {}, DRAWN
    for g in grouper.groups:
        drawn = g.frames if len(g.frames) <= HEAD + TAIL else g.frames[:HEAD] + g.frames[-TAIL:]
        drawn = drawn[:budget]
        budget -= len(drawn)
        for n in drawn:
            frames[n] = _frame(seen[n])
        exchanges.append(Exchange(g.number, g.family, g.title, tuple(g.lanes), tuple(g.frames),
                                  tuple(drawn), tuple(g.steps)))
    return exchanges, frames


def _frame(s: _Seen) -> Frame:
    layers = []
    for layer in layers_of(s.pkt):
        if isinstance(layer, Raw):
            fields = (("load", f"{len(layer.load)} bytes"),)
        else:
            fields = tuple((name, shown) for name, _, shown in layer_fields(layer))
        layers.append(Layer(layer.name, fields))
    return Frame(s.number, s.time, s.src, s.dst, s.where, label(s.pkt), len(s.data), s.step,
                 s.note, tuple(layers), s.data)


def _topology(cap: Capture, seen: list[_Seen], result) -> Topology:
    """The scenario's nodes and links; else the links the capture's interfaces describe; else
    (a foreign capture) the address pairs that exchanged frames."""
    by_iface = Counter()
    octets = Counter()
    for k, length in zip(cap.ifaces, cap.lengths, strict=True):
        by_iface[k] += 1
        octets[k] += length
    counts = {cap.interfaces[k].name: (by_iface[k], octets[k]) for k in by_iface}
    if result is not None:
        sc = result.scenario
        nodes = tuple(NodeBox(n.name, n.kind) for n in sc.nodes)
        links = tuple(LinkLine(ln.a.name, ln.b.name, ln.mtu, _impairment(ln),
                               *counts.get(ln.a.name, (0, 0))) for ln in sc.links)
        return Topology(nodes, links, "scenario")
    described = [(i, _LINK_NOTE.match(i.description)) for i in cap.interfaces]
    if described and all(m for _, m in described):
        links = tuple(LinkLine(m[1], m[2], int(m[3]), "", *counts.get(i.name, (0, 0)))
                      for i, m in described)
        names = dict.fromkeys(e.split(":")[0] for ln in links for e in (ln.a, ln.b))
        return Topology(tuple(NodeBox(n) for n in names), links, "capture")
    pairs: Counter = Counter()
    sizes: Counter = Counter()
    for s in seen:
        key = tuple(sorted((s.src, s.dst)))
        pairs[key] += 1
        sizes[key] += len(s.data)
    names = dict.fromkeys(lane for s in seen for lane in (s.src, s.dst))
    links = tuple(LinkLine(a, b, None, "", pairs[(a, b)], sizes[(a, b)]) for a, b in pairs)
    return Topology(tuple(NodeBox(n) for n in names), links, "capture")


def _impairment(link) -> str:
    a, b = (i.summary() if i.active else "" for i in link.impair)
    parts = [f"{link.a.name}\u2192: {a}"] if a else []
    parts += [f"{link.b.name}\u2192: {b}"] if b else []
    return "; ".join(parts)


def _timeline(result, notes: list[str]) -> list[Moment]:
    if result is None:  # a capture's own record of events (ftsslab writes them in its header)
        events = [m for m in map(_EVENT_NOTE.match, notes) if m]
        return [Moment(float(m[1]), "event", m[3], m[4], m[2]) for m in events]
    moments = [Moment(t, "step", label_) for label_, t in result.step_times]
    moments += [Moment(e.time, "event", e.kind, e.detail, e.node) for e in result.events]
    at = dict(result.step_times)
    for o in result.outcomes:
        moments.append(Moment(at.get(o.at) if o.at != "end" else None, "verdict", o.what,
                              o.detail, "", o.passed))
    timed = sorted((m for m in moments if m.time is not None),
                   key=lambda m: (m.time, {"step": 0, "event": 1, "verdict": 2}[m.kind]))
    return timed + [m for m in moments if m.time is None]


_U16 = struct.Struct("!H").unpack_from


def _conversations(cap: Capture, keys: list[tuple], times: list[float], origin: float,
                   dissected: set[int]) -> list[Conversation]:
    """The frames not dissected, counted per conversation."""
    found: dict[tuple, list] = {}
    for i, key in enumerate(keys):
        if i in dissected:
            continue
        length, t = cap.lengths[i], times[i] - origin
        row = found.get(key)
        if row is None:
            found[key] = [1, length, t, t]
        else:
            row[0] += 1
            row[1] += length
            row[3] = t
    return [Conversation(" ".join(key), *row) for key, row in
            sorted(found.items(), key=lambda kv: -kv[1][0])]


_PROTOS = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6", 132: "SCTP"}


def _conversation(data, at: int, length: int) -> tuple[str, ...]:
    """("IPv4", "a <-> b", "UDP 4791") from an Ethernet frame's bytes, VLAN tags skipped."""
    if length < 14:
        return ("runt",)
    pos, etype = at + 12, _U16(data, at + 12)[0]
    while etype in (0x8100, 0x88A8) and pos + 6 <= at + length:
        pos += 4
        etype = _U16(data, pos)[0]
    pos += 2
    if etype == 0x0800 and pos + 20 <= at + length:
        ihl, proto = (data[pos] & 0xF) * 4, data[pos + 9]
        a, b = sorted((".".join(map(str, data[pos + 12:pos + 16])),
                       ".".join(map(str, data[pos + 16:pos + 20]))))
        return ("IPv4", f"{a} <-> {b}", _ports(data, pos + ihl, at + length, proto))
    if etype == 0x86DD and pos + 40 <= at + length:
        a, b = sorted((bytes(data[pos + 8:pos + 24]).hex(), bytes(data[pos + 24:pos + 40]).hex()))
        return ("IPv6", f"{a} <-> {b}", _ports(data, pos + 40, at + length, data[pos + 6]))
    macs = sorted((bytes(data[at:at + 6]).hex(":"), bytes(data[at + 6:at + 12]).hex(":")))
    return (f"ethertype {etype:#06x}", f"{macs[0]} <-> {macs[1]}")


def _ports(data, pos: int, end: int, proto: int) -> str:
    name = _PROTOS.get(proto, f"protocol {proto}")
    if proto in (6, 17, 132) and pos + 4 <= end:
        a, b = sorted((_U16(data, pos)[0], _U16(data, pos + 2)[0]))
        return f"{name} {a}/{b}"
    return name


def _folds(report: Report, quota: int, budget: int) -> list[str]:
    """What the report leaves out, in words."""
    out = []
    if report.damage:
        out.append(f"the capture is damaged after frame {report.total_frames}: {report.damage}")
    rest = report.total_frames - report.dissected_frames
    if rest:
        head = _head(quota)
        out.append(f"{rest:,} frames were counted per conversation, not dissected: the middle "
                   f"of {len(report.undissected):,} long conversations, each dissected by its "
                   f"first {head:,} and last {quota - head:,} frames (a budget of {budget:,}; "
                   f"ftsslab report --dissect raises it)")
    folded = [e for e in report.exchanges if e.drawn and e.folded]
    if folded:
        hidden = sum(e.folded for e in folded)
        out.append(f"{len(folded)} long exchanges are drawn by their first {HEAD} and last "
                   f"{TAIL} frames: {hidden:,} frames folded")
    undrawn = [e for e in report.exchanges if not e.drawn]
    if undrawn:
        out.append(f"{len(undrawn):,} exchanges ({sum(len(e.frames) for e in undrawn):,} "
                   f"frames) are listed but not drawn: the report draws {DRAWN:,} arrows")
    return out
