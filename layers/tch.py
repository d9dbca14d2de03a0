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
  option numbers".  Both are registered in Scapy's ``TCPOptions`` and dissect
  to the named tuples :class:`TCHEndpoint` and :class:`TCHUpdate`.

Importing this module also makes Scapy refuse TCP option lists longer than the
40 bytes the 4-bit data offset can describe (stock Scapy 2.8 silently wraps the
data offset and emits a corrupt header): ``TCPOptionsField.i2m`` is wrapped once.

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
from scapy.layers.inet import TCP, UDP, TCPOptions, TCPOptionsField
from scapy.packet import Packet, bind_bottom_up, bind_layers

# --- first embodiment: flags in TCP.reserved -------------------------------

TCH_HND = 0x4
"""Reserved bit 0x4: "this message is part of a TCH session"."""
TCH_SET = 0x2
"""Reserved bit 0x2: "to force a handoff"."""
TCH_END = 0x1
"""Reserved bit 0x1: "to indicate completion of the handoff"."""
TCH_FLAGS = {"HND": TCH_HND, "SET": TCH_SET, "END": TCH_END}

# --- first embodiment: TCP options -----------------------------------------

TCH_ENDPOINT_KIND = 255
"""Endpoint option kind: the seed's temporary number (field 471)."""
TCH_UPDATE_KIND = 254
"""Update option kind: the seed's temporary number (field 481)."""
TCH_ENDPOINT_LEN = 8
TCH_UPDATE_LEN = 10
TCP_MAX_OPTIONS_LEN = 40
"""A 4-bit data offset counts at most 15 words: 60 - 20 header bytes."""


class TCHEndpoint(NamedTuple):
    """Value of the endpoint option: the client's port and IPv4 address."""

    port: int
    ip: str


class TCHUpdate(NamedTuple):
    """Value of the update option: sequence and acknowledgment to morph with."""

    seq: int
    ack: int


TCPOptions[0][TCH_ENDPOINT_KIND] = ("TCHEndpoint", "!HI")
TCPOptions[0][TCH_UPDATE_KIND] = ("TCHUpdate", "!II")
TCPOptions[1]["TCHEndpoint"] = TCH_ENDPOINT_KIND
TCPOptions[1]["TCHUpdate"] = TCH_UPDATE_KIND


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
    """
    opts = list(others)
    if endpoint is not None:
        opts.append(("TCHEndpoint", TCHEndpoint(*endpoint)))
    if update is not None:
        opts += [("NOP", None), ("NOP", None), ("TCHUpdate", TCHUpdate(*update))]
    opts.append(("EOL", None))
    return opts


def _ipv4_to_int(ip: str) -> int:
    return struct.unpack("!I", socket.inet_aton(ip))[0]


def _tch_i2m(i2m):
    """Wrap ``TCPOptionsField.i2m``: dotted endpoint addresses, 40-byte limit."""

    @functools.wraps(i2m)
    def wrapper(self, pkt, x):
        if x:
            x = [
                (name, (val[0], _ipv4_to_int(val[1])))
                if name == "TCHEndpoint" and isinstance(val, tuple) and len(val) == 2
                and isinstance(val[1], str)
                else (name, val)
                for name, val in x
            ]
        raw = i2m(self, pkt, x)
        if len(raw) > TCP_MAX_OPTIONS_LEN:
            raise ValueError(
                f"TCP options are {len(raw)} bytes; the TCP header allows at most "
                f"{TCP_MAX_OPTIONS_LEN}"
            )
        return raw

    wrapper.ftsslab_tch = wrapper
    return wrapper


def _tch_m2i(m2i):
    """Wrap ``TCPOptionsField.m2i``: well-formed TCH options become named tuples."""

    @functools.wraps(m2i)
    def wrapper(self, pkt, x):
        return [
            (name, _TCH_DECODERS[name](*val))
            if name in _TCH_DECODERS and isinstance(val, tuple)
            else (name, val)
            for name, val in m2i(self, pkt, x)
        ]

    wrapper.ftsslab_tch = wrapper
    return wrapper


_TCH_DECODERS = {
    "TCHEndpoint": lambda port, ip: TCHEndpoint(port, socket.inet_ntoa(struct.pack("!I", ip))),
    "TCHUpdate": TCHUpdate,
}


def _wrapped_by_tch(func) -> bool:
    """True when ``func`` or anything it wraps is one of our wrappers.

    The marker points at the wrapper itself: ``functools.wraps`` copies it onto
    whoever wraps us, and there it must not count.
    """
    while func is not None:
        if getattr(func, "ftsslab_tch", None) is func:
            return True
        func = getattr(func, "__wrapped__", None)
    return False


# Wrap once, even if this module is reloaded or other helpers wrap too (each
# wrapper calls the one it replaced, so the chain stays intact).
if not _wrapped_by_tch(TCPOptionsField.i2m):
    TCPOptionsField.i2m = _tch_i2m(TCPOptionsField.i2m)
if not _wrapped_by_tch(TCPOptionsField.m2i):
    TCPOptionsField.m2i = _tch_m2i(TCPOptionsField.m2i)

# --- second embodiment: Open / Open Response / Message over UDP -------------

TCH_UDP_PORT = 4494
"""UDP port of TCH messages: IANA-unassigned (4489-4499 is a gap in the
registered range) and not claimed by any tshark dissector."""
TCH_VERSION = 1

TCH_OPEN = 1
TCH_OPEN_RESPONSE = 2
TCH_MESSAGE = 3
TCH_PACKET_TYPES = {TCH_OPEN: "Open", TCH_OPEN_RESPONSE: "OpenResponse", TCH_MESSAGE: "Message"}

TCH_MSG_NONE = 0
TCH_MSG_UPDATE = 1
TCH_MSG_FAIL = 2
TCH_MSG_DONE = 3
TCH_MSG_HANDOFF = 4
TCH_MSG_COMPLETE = 5
TCH_MSG_ACK = 6
TCH_MESSAGE_TYPES = {
    TCH_MSG_NONE: "none",
    TCH_MSG_UPDATE: "Update",
    TCH_MSG_FAIL: "Fail",
    TCH_MSG_DONE: "Done",
    TCH_MSG_HANDOFF: "Handoff",
    TCH_MSG_COMPLETE: "Complete",
    TCH_MSG_ACK: "Ack",
}

TCH_FULL = 1
TCH_HALF_CLIENT = 2
TCH_HALF_CLUSTER = 3
TCH_PREDICTIVE = 4
TCH_HANDOFF_TYPES = {
    TCH_FULL: "full",
    TCH_HALF_CLIENT: "half-client",
    TCH_HALF_CLUSTER: "half-cluster",
    TCH_PREDICTIVE: "predictive",
}

TCH_STATUS_OK = 0
TCH_STATUS_TIMEOUT = 1
TCH_STATUS_DENIED = 2
TCH_STATUS_CLIENT_CLOSED = 3
TCH_STATUS_SUPERSEDED = 4
TCH_STATUSES = {
    TCH_STATUS_OK: "ok",
    TCH_STATUS_TIMEOUT: "timeout",
    TCH_STATUS_DENIED: "denied",
    TCH_STATUS_CLIENT_CLOSED: "client-closed",
    TCH_STATUS_SUPERSEDED: "superseded",
}

TCH_INITIATOR_FIRST = 1
TCH_INITIATOR_SECOND = 2
TCH_INITIATOR_OTHER = 3
TCH_INITIATORS = {
    TCH_INITIATOR_FIRST: "first",
    TCH_INITIATOR_SECOND: "second",
    TCH_INITIATOR_OTHER: "other",
}

TCH_HEADER_LEN = 16
TCH_STATE_LEN = 68
TCH_MAX_IP_PACKET = 1500
"""The seed's "1500-byte Ethernet payload": the whole IP packet must fit it."""
TCH_MAX_MESSAGE = TCH_MAX_IP_PACKET - 20 - 8
"""Bytes left for a TCH message after a 20-byte IPv4 and an 8-byte UDP header."""
TCH_MAX_APP_STATE = TCH_MAX_MESSAGE - TCH_HEADER_LEN - TCH_STATE_LEN
"""Application state that fits next to the TCP state block (1388 bytes)."""


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
        """Open Response answers Open; Ack answers a Message; Fail answers Complete."""
        if not isinstance(other, TCHMessage):
            return 0
        if (self.session_id, self.xid) != (other.session_id, other.xid):
            return 0
        if self.ptype == TCH_OPEN_RESPONSE:
            return int(other.ptype == TCH_OPEN)
        if self.ptype != TCH_MESSAGE or other.ptype != TCH_MESSAGE:
            return 0
        if self.mtype == TCH_MSG_ACK:
            return int(other.mtype != TCH_MSG_ACK)
        return int(self.mtype == TCH_MSG_FAIL and other.mtype == TCH_MSG_COMPLETE)

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
