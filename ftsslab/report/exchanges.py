"""Which frames make one exchange: the layers' own ``answers()``/``hashret()``, and one small
rule per family where a request and its answer are not the whole dialogue.

Sans-IO: a ``Grouper`` is fed dissected frames in capture order and keeps the exchanges; it
reads no file and knows no clock. A family says which keys a frame is found by (``keys``) and
which keys it looks for (``wanted``); a frame that finds none is paired by ``hashret()``
and ``answers()``, or starts an exchange of its own. So an FTSS message's four legs (PKT,
STORED, the delivery, DELIVERED) share the key of its message id, a TCH handoff its session,
a TCP connection its addresses, and an RDMA message's packets the QP they go to, while an ARP
reply or an ACK finds its request as Scapy would pair them. A frame is in one exchange, but
an FTSS range ACK, which answers several messages at once (``joins``), is in each of theirs.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from scapy.contrib.roce import BTH
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet

from ..fast.roce import OPS
from ..layers.ftss import FTSS, FTSSAck, FTSSPacket
from ..layers.i2o import MSG_REPLY, I2OMessage
from ..layers.roce import RETH, read_psn_span, roce_answers
from ..layers.tch import TCHMessage, tch_flags
from ..layers.xap import XAPUDP
from ..view import layers_of

_PENDING = 8        # requests of one hashret kept for answers() (newest first)
_RECENT = 4096      # frames remembered to know one seen again on the next link
_RANGE = 1024       # messages of one FTSS range ACK drawn with it
# RoCE opcodes (low 5 bits): what a FIRST opens, what continues it, and every request
_FIRSTS = {OPS["SEND_FIRST"], OPS["RDMA_WRITE_FIRST"]}
_CONTINUES = {OPS[f"{kind}_{part}"] for kind in ("SEND", "RDMA_WRITE")
              for part in ("MIDDLE", "LAST", "LAST_WITH_IMMEDIATE")}
_REQUESTS = {op for name, op in OPS.items() if name.startswith(("SEND_", "RDMA_WRITE_"))} | {
    OPS["RDMA_READ_REQUEST"], OPS["COMPARE_SWAP"], OPS["FETCH_ADD"]}


@dataclass
class Group:
    """An exchange being built."""

    number: int
    family: str
    title: str
    frames: list[int] = field(default_factory=list)
    lanes: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    answered: bool = False  # some frame joined it as an answer or by a family key

    def add(self, number: int, src: str, dst: str, step: str) -> None:
        self.frames.append(number)
        for lane in (src, dst):
            if lane not in self.lanes:
                self.lanes.append(lane)
        if step and step not in self.steps:
            self.steps.append(step)


def _ends(pkt: Packet) -> tuple[str, str] | None:
    for ip in (IP, IPv6):
        if ip in pkt:
            return pkt[ip].src, pkt[ip].dst
    return None


class Family:
    """The fallback: pair by ``hashret()``/``answers()``, else group one-way frames of the same
    lanes and top layer (a burst, a heartbeat) into one exchange."""

    name = ""
    flows = True  # one-way frames of the same lanes and top layer share an exchange

    def claims(self, pkt: Packet) -> bool:
        return True

    def keys(self, pkt: Packet) -> list[Hashable]:
        return []

    def wanted(self, pkt: Packet) -> list[Hashable]:
        return []

    def joins(self, pkt: Packet) -> list[Hashable]:
        """Keys of further exchanges the frame answers as well as the one it is placed in."""
        return []

    def opens(self, pkt: Packet) -> bool:
        """Whether the frame starts a new exchange although a key it wants is open."""
        return False

    def answers(self, pkt: Packet, request: Packet) -> bool:
        """Whether ``pkt`` answers the ``request`` found by a wanted key (family keys: yes)."""
        return True

    def title(self, pkt: Packet) -> str:
        return label(pkt)

    def family_of(self, pkt: Packet) -> str:
        """The family an exchange this frame opens belongs to: the rule's, else the top layer's."""
        if self.name:
            return self.name
        top = pkt.lastlayer()
        while top.underlayer is not None and top.name in ("Raw", "Padding"):
            top = top.underlayer
        return top.name.split(" (")[0].lower()


class Ftss(Family):
    """PKT, its STORED ack, the delivery and DELIVERED: one message id (seed 004)."""

    name = "ftss"
    flows = False  # each message is its own exchange, however many are in flight at once

    def claims(self, pkt):
        return FTSS in pkt

    def keys(self, pkt):
        for cls in (FTSSPacket, FTSSAck):
            if cls in pkt:
                return [("ftss", pkt[cls].msg_id)]
        return []

    wanted = keys

    def joins(self, pkt):
        """A range ACK answers the messages after its first too: it is drawn in each one's
        exchange, up to ``_RANGE`` of them (a group commit merges tens; the bound keeps a
        damaged or hostile ACK from costing the report 65,536 lookups)."""
        if FTSSAck not in pkt:
            return []
        ack = pkt[FTSSAck]
        return [("ftss", ack.msg_id + i) for i in range(1, min(ack.more, _RANGE) + 1)]

    def title(self, pkt):
        if FTSSPacket in pkt:
            return f"FTSS message {pkt[FTSSPacket].msg_id:#x}: stored, then delivered"
        return label(pkt)


class Tch(Family):
    """Every message of one TCH session: Open, its response, the handoff's messages, End."""

    name = "tch"

    def claims(self, pkt):
        return TCHMessage in pkt

    def keys(self, pkt):
        return [("tch", pkt[TCHMessage].session_id)]

    wanted = keys

    def title(self, pkt):
        return f"TCH session {pkt[TCHMessage].session_id}"


class Xap(Family):
    name = "xap"

    def claims(self, pkt):
        return XAPUDP in pkt  # an XAP IP option rides its TCP connection


class Conversation(Family):
    """A TCP connection (a new one at each SYN) or a UDP conversation: one address pair."""

    def __init__(self, name: str, cls: type[Packet]):
        self.name, self.cls = name, cls

    def claims(self, pkt):
        return self.cls in pkt and _ends(pkt) is not None

    def keys(self, pkt):
        (a, b), seg = _ends(pkt), pkt[self.cls]
        return [(self.name, frozenset(((a, seg.sport), (b, seg.dport))))]

    wanted = keys

    def opens(self, pkt):
        return self.cls is TCP and pkt[TCP].flags.S and not pkt[TCP].flags.A

    def _handoff(self, pkt) -> bool:
        """A TCP connection that opens with TCH flags is a handoff (seed 002, Fig. 4)."""
        return self.cls is TCP and bool(tch_flags(pkt))

    def family_of(self, pkt):
        return "tch" if self._handoff(pkt) else self.name

    def title(self, pkt):
        (a, b), seg = _ends(pkt), pkt[self.cls]
        flags = "/".join(sorted(tch_flags(pkt))) if self._handoff(pkt) else ""
        what = f"TCH handoff ({flags}) over TCP" if flags else self.name.upper()
        return f"{what} {a}:{seg.sport} \u21c4 {b}:{seg.dport}"


class Roce(Family):
    """An RDMA message (FIRST opens it, MIDDLE/LAST go to the same QP) and what answers it:
    its ACK or NAK, READ RESPONSEs, an ATOMIC ACKNOWLEDGE (``roce_answers``)."""

    name = "roce"
    flows = False  # every request is an exchange of its own

    def claims(self, pkt):
        return BTH in pkt

    def keys(self, pkt):
        if BTH not in pkt:  # I2O over plain UDP
            return []
        ends, bth = _ends(pkt), pkt[BTH]
        op = bth.opcode & 0x1F
        if ends is None or op not in _REQUESTS:
            return []
        src, dst = ends
        psns = [bth.psn]
        if op == OPS["RDMA_READ_REQUEST"] and RETH in pkt:
            psns = [(bth.psn + k) % (1 << 24) for k in range(min(read_psn_span(pkt), 4096))]
        out: list[Hashable] = [("roce-psn", src, dst, p) for p in psns]
        if op in _FIRSTS:
            out.append(("roce-msg", src, dst, bth.dqpn))
        return out

    def wanted(self, pkt):
        if BTH not in pkt:
            return []
        ends, bth = _ends(pkt), pkt[BTH]
        if ends is None:
            return []
        op = bth.opcode & 0x1F
        if op in _CONTINUES:
            return [("roce-msg", *ends, bth.dqpn)]
        if op in _REQUESTS:
            return []
        return [("roce-psn", ends[1], ends[0], bth.psn)]

    def answers(self, pkt, request):
        return BTH in pkt and ((pkt[BTH].opcode & 0x1F) in _CONTINUES
                               or roce_answers(request, pkt))

    def title(self, pkt):
        return f"RDMA {label(pkt)}"


class I2o(Roce):
    """I2O frames ride RoCE SENDs: the RoCE keys find their ACKs, the I2O header's
    ``hashret()`` and ``answers()`` (the context fields, seed 001) their replies."""

    name = "i2o"

    def claims(self, pkt):
        return I2OMessage in pkt

    def _key(self, pkt) -> Hashable:
        return ("i2o", frozenset(_ends(pkt) or ()), pkt[I2OMessage].hashret())

    def keys(self, pkt):
        mine = [] if pkt[I2OMessage].msg_flags & MSG_REPLY else [self._key(pkt)]
        return mine + super().keys(pkt)

    def wanted(self, pkt):
        mine = [self._key(pkt)] if pkt[I2OMessage].msg_flags & MSG_REPLY else []
        return mine + super().wanted(pkt)

    def answers(self, pkt, request):
        if I2OMessage in request:
            return bool(pkt[I2OMessage].answers(request[I2OMessage]))
        return super().answers(pkt, request)

    def title(self, pkt):
        return pkt[I2OMessage].mysummary()


FAMILIES: tuple[Family, ...] = (
    Ftss(), Tch(), Xap(), I2o(), Roce(), Conversation("tcp", TCP), Conversation("udp", UDP),
)
FALLBACK = Family()


def label(pkt: Packet) -> str:
    """The frame's arrow label: its deepest layer's own ``mysummary()`` (what that layer says
    about itself), after the RoCE header's opcode and PSN, which Scapy's BTH does not say. An
    FTSS PKT's payload is a carried frame, not a deeper layer of this one: it stops there."""
    parts = []
    if BTH in pkt:
        parts.append(pkt[BTH].sprintf("%BTH.opcode% qp=%BTH.dqpn% psn=%BTH.psn%"))
    own = None
    for layer in layers_of(pkt[BTH].payload if BTH in pkt else pkt):
        if layer.name not in ("Raw", "Padding") and "mysummary" in type(layer).__dict__:
            own = layer
        if isinstance(layer, FTSSPacket):
            break
    if own is not None:
        try:
            text = own.mysummary()
        except Exception:  # a layer's summary must not cost the report
            text = own.name
        parts.append(text[0] if isinstance(text, tuple) else text)
    return " \u00b7 ".join(p for p in parts if p) or pkt.summary()


class Grouper:
    """The exchanges of the frames fed so far, in the order each was opened."""

    def __init__(self, families: tuple[Family, ...] = FAMILIES):
        self.families = families
        self.groups: list[Group] = []
        self.index: dict[Hashable, tuple[Group, Packet]] = {}
        self.pending: dict[bytes, list[tuple[Group, Packet]]] = {}
        self.flows: dict[Hashable, Group] = {}
        self.recent: dict[bytes, tuple[Group, str]] = {}  # frame -> its exchange, where seen

    def feed(self, number: int, pkt: Packet, src: str, dst: str, step: str = "",
             data: bytes = b"", where: str = "") -> Group:
        """Place one frame. ``data`` is its bytes after the MAC addresses and ``where`` the link
        it was seen on: the same bytes on another link are the frame forwarded or flooded (a
        switch may rewrite its MACs) and join where it was; on the same link, it was sent
        again."""
        fam = next((f for f in self.families if _safely(f.claims, pkt)), FALLBACK)
        link = where or src
        group, seen_on = self.recent.get(data, (None, link))
        if seen_on == link:
            group = None
        if group is None and not _safely(fam.opens, pkt):
            group = self._find(fam, pkt)
        hashed = _safely(pkt.hashret)
        if group is None and hashed is not None:
            group = self._answered(pkt, hashed)
        flow = ("flow", fam.family_of(pkt), src, dst)
        if group is None and fam.flows:
            group = self.flows.get(flow)
            if group is not None and group.answered:
                group = None
        if group is None:
            title = _safely(fam.title, pkt) or label(pkt)
            group = Group(len(self.groups) + 1, fam.family_of(pkt), title)
            self.groups.append(group)
            self.flows[flow] = group
        group.add(number, src, dst, step)
        for other in self._joined(fam, pkt, group):
            other.add(number, src, dst, step)
        if data:
            self.recent.pop(data, None)
            self.recent[data] = group, link
            if len(self.recent) > _RECENT:
                del self.recent[next(iter(self.recent))]
        for key in _safely(fam.keys, pkt) or ():
            self.index[key] = (group, pkt)
        if hashed is not None:
            queue = self.pending.setdefault(hashed, [])
            queue.append((group, pkt))
            del queue[:-_PENDING]
        return group

    def _find(self, fam: Family, pkt: Packet) -> Group | None:
        for key in _safely(fam.wanted, pkt) or ():
            found = self.index.get(key)
            if found is not None and _safely(fam.answers, pkt, found[1]):
                found[0].answered = True
                return found[0]
        return None

    def _joined(self, fam: Family, pkt: Packet, group: Group) -> list[Group]:
        out, placed = [], {id(group)}
        for key in _safely(fam.joins, pkt) or ():
            found = self.index.get(key)
            if (found is not None and id(found[0]) not in placed
                    and _safely(fam.answers, pkt, found[1])):
                found[0].answered = True
                placed.add(id(found[0]))
                out.append(found[0])
        return out

    def _answered(self, pkt: Packet, hashed: bytes) -> Group | None:
        for group, request in reversed(self.pending.get(hashed, ())):
            if _safely(pkt.answers, request):
                group.answered = True
                return group
        return None


def _safely(call, *args):
    """A layer's answer about a malformed frame: an exception is no (the frame is still drawn,
    in an exchange of its own)."""
    try:
        return call(*args)
    except Exception:
        return None
