# SPDX-License-Identifier: GPL-2.0-or-later
"""TCP handoff (TCH) of seed 002 (3Com, transparent switched access to NAS).

Two embodiments are realized here.

First embodiment (seed 002, Figs. 4A/4B): a TCH session is an ordinary TCP
connection between the first and the second device, extended by

* three logical indicators "HND, to indicate that this message is part of a
  TCH session; SET, to force a handoff; and END, to indicate completion of the
  handoff".  TCP has no free bits in ``TCP.flags``, so they live in the three
  reserved bits of the TCP header (``TCP.reserved``): HND = 0x4 (the bit next
  to the data offset), SET = 0x2, END = 0x1 -- the order the seed names them;
* the "TCH endpoint" option, kind 255, length 8 (client port 16, client IPv4
  address 32) and the "update" option, kind 254, length 10 (sequence 32,
  acknowledgment 32): "The option kind values 255 and 254 ... are temporary
  option numbers".  ``("TCHEndpoint", (port, "10.0.0.1"))`` and
  ``("TCHUpdate", (seq, ack))`` build them and they dissect to the named tuples
  :class:`TCHEndpoint` and :class:`TCHUpdate`, through ftsslab's TCP-option hook
  (``_tcp_options``, which leaves options of other kinds to Scapy).
  :func:`tch_options` refuses a list longer than the 40 bytes a TCP header holds.

Second embodiment (seed 002, Fig. 9): "Three kinds of packets are included in
the TCH protocol. They are an Open packet, an Open Response packet and a
Message packet"; messages are Update, Fail, Done, Handoff, Complete and Ack
(acknowledgment), the handoff type is full, half (client direction, Fig. 7),
half (cluster-to-client path, Fig. 8) or predictive.  :class:`TCHMessage` is
one 32-bit aligned format carried over UDP port :data:`TCH_UDP_PORT`; Open,
Update and Handoff carry the TCP state block (addresses, ports, sequence and
acknowledgment numbers, windows, window scales, MSS, congestion state and
timers), every kind may carry application state.  The whole IP packet fits the
"1500-byte Ethernet payload" the seed names; building a larger one raises.
"""

from __future__ import annotations

import functools
import socket
import struct
from typing import NamedTuple

from scapy.fields import (
    BitEnumField,
    BitField,
    ByteEnumField,
    ByteField,
    ConditionalField,
    FieldLenField,
    IntField,
    IPField,
    PadField,
    ShortField,
    StrLenField,
    XIntField,
)
from scapy.layers.inet import TCP, UDP
from scapy.packet import Packet, bind_bottom_up, bind_layers

from ftsslab.fast.tch import (  # noqa: F401  (the wire numbers, importable from here too)
    TCH_END,
    TCH_ENDPOINT_KIND,
    TCH_ENDPOINT_LEN,
    TCH_FLAGS,
    TCH_FULL,
    TCH_HALF_CLIENT,
    TCH_HALF_CLUSTER,
    TCH_HANDOFF_TYPES,
    TCH_HEADER_LEN,
    TCH_HND,
    TCH_INITIATOR_FIRST,
    TCH_INITIATOR_OTHER,
    TCH_INITIATOR_SECOND,
    TCH_INITIATORS,
    TCH_MAX_APP_STATE,
    TCH_MAX_MESSAGE,
    TCH_MESSAGE,
    TCH_MESSAGE_TYPES,
    TCH_MSG_ACK,
    TCH_MSG_COMPLETE,
    TCH_MSG_DONE,
    TCH_MSG_FAIL,
    TCH_MSG_HANDOFF,
    TCH_MSG_NONE,
    TCH_MSG_UPDATE,
    TCH_OPEN,
    TCH_OPEN_RESPONSE,
    TCH_PACKET_TYPES,
    TCH_PREDICTIVE,
    TCH_SET,
    TCH_STATE_LEN,
    TCH_STATUS_CLIENT_CLOSED,
    TCH_STATUS_DENIED,
    TCH_STATUS_OK,
    TCH_STATUS_SUPERSEDED,
    TCH_STATUS_TIMEOUT,
    TCH_STATUSES,
    TCH_UDP_PORT,
    TCH_UPDATE_KIND,
    TCH_UPDATE_LEN,
    TCH_VERSION,
)

from . import _tcp_options

# --- first embodiment: flags in TCP.reserved and TCP options ------------------


class TCHEndpoint(NamedTuple):
    """Value of the endpoint option: the client's port and IPv4 address."""

    port: int
    ip: str


class TCHUpdate(NamedTuple):
    """Value of the update option: sequence and acknowledgment to morph with."""

    seq: int
    ack: int


def _endpoint_bytes(value: tuple[int, str | int]) -> bytes:
    port, ip = value
    if isinstance(ip, str):
        return struct.pack("!H4s", port, socket.inet_aton(ip))
    return struct.pack("!HI", port, ip)


def _endpoint(raw: bytes) -> tuple[str, TCHEndpoint] | None:
    if len(raw) != TCH_ENDPOINT_LEN - 2:
        return None
    port, ip = struct.unpack("!H4s", raw)
    return "TCHEndpoint", TCHEndpoint(port, socket.inet_ntoa(ip))


def _update(raw: bytes) -> tuple[str, TCHUpdate] | None:
    if len(raw) != TCH_UPDATE_LEN - 2:
        return None
    return "TCHUpdate", TCHUpdate(*struct.unpack("!II", raw))


_tcp_options.register(TCH_ENDPOINT_KIND, "TCHEndpoint", _endpoint_bytes, _endpoint)
_tcp_options.register(TCH_UPDATE_KIND, "TCHUpdate", lambda v: struct.pack("!II", *v), _update)


def tch(*names: str) -> int:
    """The ``TCP.reserved`` value for the named flags: ``TCP(reserved=tch("HND", "SET"))``."""
    try:
        return functools.reduce(int.__or__, (TCH_FLAGS[n] for n in names), 0)
    except KeyError as exc:
        raise ValueError(f"unknown TCH flag {exc}; known: HND, SET, END") from None


def tch_flags(pkt: Packet) -> set[str]:
    """The TCH flags set in the (first) TCP header of ``pkt``."""
    reserved = pkt[TCP].reserved
    return {name for name, bit in TCH_FLAGS.items() if reserved & bit}


def set_tch_flags(pkt: Packet, *names: str) -> Packet:
    """Make exactly ``names`` the TCH flags of ``pkt``'s TCP header; returns ``pkt``."""
    pkt[TCP].reserved = tch(*names)
    return pkt


def tch_options(
    endpoint: tuple[int, str] | None = None,
    update: tuple[int, int] | None = None,
    others: list[tuple] | tuple = (),
) -> list[tuple]:
    """A TCP option list laid out as Fig. 4B asks.

    ``others`` (e.g. MSS) come first, then the endpoint option, then two NOPs
    so that the update option's numbers are 32-bit aligned, and an EOL ends
    the list ("TCP options are to be terminated with an option of type 0").
    ValueError when the list does not fit the 40 bytes of a TCP header.
    """
    opts = list(others)
    if endpoint is not None:
        opts.append(("TCHEndpoint", TCHEndpoint(*endpoint)))
    if update is not None:
        opts += [("NOP", None), ("NOP", None), ("TCHUpdate", TCHUpdate(*update))]
    opts.append(("EOL", None))
    _tcp_options.check_options(opts)
    return opts


# --- second embodiment: Open / Open Response / Message over UDP -------------


class _Kind(NamedTuple):
    ptype: int
    mtype: int


def _carries_state(pkt: Packet | _Kind) -> bool:
    """Open, Update and Handoff transfer the TCP state block; the others do not."""
    return pkt.ptype == TCH_OPEN or (
        pkt.ptype == TCH_MESSAGE and pkt.mtype in (TCH_MSG_UPDATE, TCH_MSG_HANDOFF)
    )


_STATE_FIELDS = [
    IPField("client_ip", "0.0.0.0"),
    IPField("cluster_ip", "0.0.0.0"),
    ShortField("client_port", 0),
    ShortField("cluster_port", 0),
    IntField("seq", 0),  # SND.NXT of the cluster side
    IntField("ack", 0),  # RCV.NXT: next byte expected from the client
    IntField("snd_una", 0),
    IntField("snd_wnd", 0),  # bytes, already scaled
    IntField("rcv_wnd", 0),
    ByteField("snd_wscale", 0),
    ByteField("rcv_wscale", 0),
    ShortField("mss", 1460),
    IntField("cwnd", 0),  # bytes
    IntField("ssthresh", 0xFFFFFFFF),
    IntField("srtt", 0),  # microseconds
    IntField("rttvar", 0),  # microseconds
    IntField("rto", 1000),  # milliseconds left on each timer
    IntField("keepalive", 0),
    IntField("persist", 0),
    IntField("delack", 0),
]


class TCHMessage(Packet):
    """One second-embodiment TCH packet (Open, Open Response or Message)."""

    name = "TCP Handoff (TCH) Message"
    fields_desc = [
        BitField("version", TCH_VERSION, 4),
        BitEnumField("ptype", TCH_OPEN, 4, TCH_PACKET_TYPES),
        ByteEnumField("mtype", TCH_MSG_NONE, TCH_MESSAGE_TYPES),
        ByteEnumField("htype", TCH_FULL, TCH_HANDOFF_TYPES),
        ByteEnumField("status", TCH_STATUS_OK, TCH_STATUSES),
        XIntField("session_id", 0),
        IntField("xid", 0),
        ByteEnumField("initiator", TCH_INITIATOR_FIRST, TCH_INITIATORS),
        ByteField("reserved", 0),
        FieldLenField("app_len", None, length_of="app_state", fmt="!H"),
        *(ConditionalField(f, _carries_state) for f in _STATE_FIELDS),
        PadField(StrLenField("app_state", b"", length_from=lambda pkt: pkt.app_len), 4),
    ]

    def do_dissect(self, s: bytes) -> bytes:
        """A message too short for its fixed part is left undissected (it ends
        up as padding) instead of raising, so any bytes dissect."""
        need = TCH_HEADER_LEN
        if len(s) >= 2 and _carries_state(_Kind(s[0] & 0xF, s[1])):
            need += TCH_STATE_LEN
        if len(s) < need:
            return s
        return super().do_dissect(s)

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        if len(p) > TCH_MAX_MESSAGE:
            raise ValueError(
                f"TCH message is {len(p)} bytes; a 1500-byte IP packet over UDP carries "
                f"at most {TCH_MAX_MESSAGE}"
            )
        return p + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s

    def hashret(self) -> bytes:
        return struct.pack("!II", self.session_id, self.xid)

    def answers(self, other: Packet) -> int:
        """Open Response answers Open; Ack answers a Message; Fail answers any request (an Open
        or a Message but an Ack) negatively, as ``ftsslab.nas.tch_messages`` uses it."""
        if not isinstance(other, TCHMessage):
            return 0
        if (self.session_id, self.xid) != (other.session_id, other.xid):
            return 0
        if self.ptype == TCH_OPEN_RESPONSE:
            return int(other.ptype == TCH_OPEN)
        request = other.ptype == TCH_OPEN or (other.ptype == TCH_MESSAGE
                                             and other.mtype != TCH_MSG_ACK)
        if self.ptype != TCH_MESSAGE or not request:
            return 0
        if self.mtype == TCH_MSG_ACK:
            return int(other.ptype == TCH_MESSAGE)
        return int(self.mtype == TCH_MSG_FAIL)

    def mysummary(self) -> str:
        kind = "%TCHMessage.ptype%"
        if self.ptype == TCH_MESSAGE:
            kind = "%TCHMessage.mtype%"
        return self.sprintf(
            f"TCH {kind} %TCHMessage.htype% session=%TCHMessage.session_id% "
            "xid=%TCHMessage.xid% %TCHMessage.status%"
        )


bind_layers(UDP, TCHMessage, sport=TCH_UDP_PORT, dport=TCH_UDP_PORT)
bind_bottom_up(UDP, TCHMessage, sport=TCH_UDP_PORT)
bind_bottom_up(UDP, TCHMessage, dport=TCH_UDP_PORT)

CRAFT_HELPERS = (tch, tch_options)  # callable from `ftsslab craft` expressions
