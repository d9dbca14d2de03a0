# SPDX-License-Identifier: GPL-2.0-or-later
"""XAP: the Extended Addressing Protocol of seed 002 (3Com, switched NAS access).

The seed calls it "EAP"; that name belongs to 802.1X in Scapy and Wireshark, so
ftsslab calls it XAP.  Seed 002: "An EAP message may have the following format.
Version 4, Operation 4, Nonce 24, Protocol 8, Source Port 16, Destination Port
16, Transaction ID 16, Cluster ID 32".  A message tells a switch (or other
controller) to update its forwarding table for one client connection.

Two forms of a message:

* :class:`XAP` -- the full 15-byte form;
* :class:`XAPShort` -- 11 bytes: "In some implementations, Cluster ID may be
  implicit and not separately expressed in the EAP message".

"For cascaded devices, multiple EAP message may be used.  The ordering of the
EAP messages may indicate the order in which messages pass through switches",
and "EAP messages may be attached to a communication flow as TCP options, IP
options, or in a data field".  Hence three carriers, each holding 1..n
messages in order (first message = first switch on the path):

* TCP option kind 253 (RFC 4727 experiment) in RFC 6994 shared-use form:
  kind, length, ExID ``0x5841``, messages.  ``TCP(options=[("XAP", [msgs])])``.
* :class:`IPOption_XAP`, IP option type 158 (copied, control, number 30).
* :class:`XAPUDP` on UDP port 5016: a 2-byte header (form, count), messages,
  then TLVs to the end of the datagram (:class:`XAPTLV`; decision D2.10: the
  message names neither the client nor the device a connection moves to, so
  :class:`XAPTLVClientIP` and :class:`XAPTLVTargetIP` do).

Inside one option the form is told by the body length (a multiple of 15 is
full, of 11 short; the options are too small for 165, the only ambiguous
length), so one option never mixes forms; building a mix raises ValueError.
Put full and short messages in separate options, or separate datagrams.
"""

import struct

from scapy.data import IP_PROTOS
from scapy.fields import (
    BitEnumField,
    BitField,
    ByteEnumField,
    ByteField,
    FieldLenField,
    IPField,
    PacketListField,
    ShortField,
    StrLenField,
    X3BytesField,
    XShortField,
)
from scapy.layers.inet import UDP, IPOption, _IPOption_HDR
from scapy.packet import Packet, Raw, bind_bottom_up, bind_layers

from ftsslab.fast.xap import (  # noqa: F401  (the wire numbers, importable from here too)
    XAP_FORM_FULL,
    XAP_FORM_SHORT,
    XAP_FORMS,
    XAP_FULL_LEN,
    XAP_IP_OPTION_NUMBER,
    XAP_IP_OPTION_TYPE,
    XAP_OP_ACK,
    XAP_OP_CHANGE_CONNECTION,
    XAP_OP_QUERY,
    XAP_OP_REDIRECT,
    XAP_OP_SET,
    XAP_OPERATIONS,
    XAP_SHORT_LEN,
    XAP_TCP_EXID,
    XAP_TCP_OPTION_KIND,
    XAP_TLV_CLIENT_IP,
    XAP_TLV_IP_LEN,
    XAP_TLV_TARGET_IP,
    XAP_TLV_TYPES,
    XAP_UDP_PORT,
    XAP_VERSION,
)

from . import _tcp_options

XAP_TCP_OPTION_NAME = "XAP"
"""The name ``TCP.options`` gives kind 253 with ftsslab's ExID."""


class XAPShort(Packet):
    """XAP message, short form: the Cluster ID is implicit (the receiving switch)."""

    name = "XAP short form (implicit Cluster ID)"
    fields_desc = [
        BitField("version", XAP_VERSION, 4),
        BitEnumField("operation", XAP_OP_QUERY, 4, XAP_OPERATIONS),
        X3BytesField("nonce", 0),
        ByteEnumField("proto", 6, IP_PROTOS),
        ShortField("sport", 0),
        ShortField("dport", 0),
        XShortField("xid", 0),
    ]

    wire_len = XAP_SHORT_LEN

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        """Bytes too short for a whole message dissect as Raw rather than raise."""
        if _pkt and len(_pkt) < cls.wire_len:
            return Raw
        return cls

    def extract_padding(self, s):
        """A message never has a payload: what follows is the next message."""
        return b"", s

    def hashret(self):
        return struct.pack("!HI", self.xid, self.nonce)

    def answers(self, other):
        """An ack answers a non-ack with the same transaction id and nonce."""
        return (
            isinstance(other, XAPShort)
            and self.operation == XAP_OP_ACK
            and other.operation != XAP_OP_ACK
            and self.xid == other.xid
            and self.nonce == other.nonce
        )

    def mysummary(self):
        return self.sprintf("XAP %operation% %proto% %sport%>%dport% xid=%xid%")


class XAP(XAPShort):
    """XAP message, full form: the short form plus the Cluster ID that names the
    switch (an IP address, or a NAT-assigned address for cascaded devices)."""

    name = "XAP (Extended Addressing Protocol)"
    fields_desc = XAPShort.fields_desc + [IPField("cluster_id", "0.0.0.0")]
    wire_len = XAP_FULL_LEN

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        """Redeclared because Scapy only calls a hook defined on the class itself."""
        return super().dispatch_hook(_pkt, *args, **kargs)

    def mysummary(self):
        return super().mysummary() + self.sprintf(" cluster=%cluster_id%")


def xap_message_class(body_len):
    """The message class told by a carrier body length, or None if it tells none."""
    if body_len % XAP_FULL_LEN == 0:
        return XAP
    if body_len % XAP_SHORT_LEN == 0:
        return XAPShort
    return None


def _messages_bytes(messages):
    """Bytes of an in-order message list; refuses a mix of forms (it would not dissect back)."""
    kinds = {type(m) for m in messages if isinstance(m, XAPShort)}
    if len(kinds) > 1:
        raise ValueError("one XAP carrier holds either full or short messages, not both")
    return b"".join(bytes(m) for m in messages)


def _split_messages(body):
    """In-order messages of an option body, or None when the length tells no form."""
    cls = xap_message_class(len(body))
    if cls is None:
        return None
    return [cls(body[i:i + cls.wire_len]) for i in range(0, len(body), cls.wire_len)]


def _ip_option_next_cls(pkt, lst, cur, remain):
    """next_cls_cb for :class:`IPOption_XAP`: the form told by the option length;
    Raw keeps a body whose length tells none."""
    if not remain:
        return None
    return xap_message_class(max(pkt.length - 2, 0)) or Raw


class IPOption_XAP(IPOption):
    """IP option 158 (RFC 4727 experiment, copied) holding 1..n XAP messages.

    Registering option number 30 makes Scapy dispatch types 30/94/158/222 here;
    a body whose length tells no form dissects as one Raw element.
    """

    name = "IP Option XAP (Extended Addressing Protocol)"
    copy_flag = 1
    option = XAP_IP_OPTION_NUMBER
    fields_desc = [
        _IPOption_HDR,
        FieldLenField("length", None, fmt="B", length_of="messages", adjust=lambda pkt, n: n + 2),
        PacketListField(
            "messages",
            [],
            XAP,
            length_from=lambda pkt: max(pkt.length - 2, 0),
            next_cls_cb=_ip_option_next_cls,
        ),
    ]

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        """Fewer than the type and length bytes dissect as Raw rather than raise."""
        if _pkt and len(_pkt) < 2:
            return Raw
        return cls

    def post_build(self, p, pay):
        _messages_bytes(self.messages)  # refuse a mix of forms
        return p + pay

    def mysummary(self):
        return f"IP option XAP x{len(self.messages)}"


def _udp_next_cls(pkt, lst, cur, remain):
    """next_cls_cb for :class:`XAPUDP`: ``count`` messages of the header's form."""
    if not remain or len(lst) + (cur is not None) >= pkt.count:
        return None
    return {XAP_FORM_FULL: XAP, XAP_FORM_SHORT: XAPShort}.get(pkt.form, Raw)


class XAPTLV(Packet):
    """A TLV after the messages of an XAP datagram: type, length (of the value), value.

    The generic form: an unknown type, or a known one of another length, keeps its
    value as bytes.  CLIENT_IP and TARGET_IP of 4 bytes dissect as their own classes.
    """

    name = "XAP TLV"
    fields_desc = [
        ByteEnumField("type", 0, XAP_TLV_TYPES),
        FieldLenField("length", None, fmt="B", length_of="value"),
        StrLenField("value", b"", length_from=lambda pkt: pkt.length),
    ]

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        """A TLV cut short dissects as Raw; CLIENT_IP/TARGET_IP of 4 bytes as theirs."""
        if not _pkt:
            return cls
        if len(_pkt) < 2 or 2 + _pkt[1] > len(_pkt):
            return Raw
        if _pkt[1] == XAP_TLV_IP_LEN:
            return {XAP_TLV_CLIENT_IP: XAPTLVClientIP,
                    XAP_TLV_TARGET_IP: XAPTLVTargetIP}.get(_pkt[0], cls)
        return cls

    def extract_padding(self, s):
        """A TLV has no payload: what follows is the next TLV."""
        return b"", s

    def mysummary(self):
        return self.sprintf("XAP TLV %type% len=%length%")


def _address_tlv_hook(cls, _pkt=None, *args, **kargs):
    """dispatch_hook of the address TLVs: fewer than their 6 bytes dissect as Raw.
    (Scapy calls only a hook in the class's own namespace, so each class binds it.)"""
    if _pkt and len(_pkt) < 2 + XAP_TLV_IP_LEN:
        return Raw
    return cls


class XAPTLVClientIP(XAPTLV):
    """CLIENT_IP: the client of the connection the datagram's messages are about."""

    name = "XAP TLV client IP"
    fields_desc = [
        ByteEnumField("type", XAP_TLV_CLIENT_IP, XAP_TLV_TYPES),
        ByteField("length", XAP_TLV_IP_LEN),
        IPField("client_ip", "0.0.0.0"),
    ]
    dispatch_hook = classmethod(_address_tlv_hook)

    def mysummary(self):
        return self.sprintf("XAP client=%client_ip%")


class XAPTLVTargetIP(XAPTLV):
    """TARGET_IP: the own address of the device the connection moves to; in an ack,
    the flow's owner once the switch has acted."""

    name = "XAP TLV target IP"
    fields_desc = [
        ByteEnumField("type", XAP_TLV_TARGET_IP, XAP_TLV_TYPES),
        ByteField("length", XAP_TLV_IP_LEN),
        IPField("target_ip", "0.0.0.0"),
    ]
    dispatch_hook = classmethod(_address_tlv_hook)

    def mysummary(self):
        return self.sprintf("XAP target=%target_ip%")


class XAPUDP(Packet):
    """XAP messages as UDP data: form (full/short) and count, the messages, then TLVs.

    The form byte resolves what a length cannot (165 bytes is 11 full or 15
    short messages); ``form`` and ``count`` are computed when left None.  The TLVs
    run to the end of the datagram (none: the original format); bytes that end
    inside a TLV become a Raw element of ``tlvs``.
    """

    name = "XAP over UDP"
    fields_desc = [
        ByteEnumField("form", None, XAP_FORMS),
        FieldLenField("count", None, fmt="B", count_of="messages"),
        PacketListField("messages", [], XAP, next_cls_cb=_udp_next_cls),
        PacketListField("tlvs", [], XAPTLV),
    ]

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        """Fewer than the 2 header bytes dissect as Raw rather than raise."""
        if _pkt and len(_pkt) < 2:
            return Raw
        return cls

    def post_build(self, p, pay):
        _messages_bytes(self.messages)  # refuse a mix of forms
        if self.form is None:
            short = self.messages and type(self.messages[0]) is XAPShort
            p = bytes([XAP_FORM_SHORT if short else XAP_FORM_FULL]) + p[1:]
        return p + pay

    def hashret(self):
        return b"".join(m.hashret() for m in self.messages if isinstance(m, XAPShort))

    def answers(self, other):
        """A datagram of acks answers the datagram whose messages they ack, in order."""
        return (
            isinstance(other, XAPUDP)
            and len(self.messages) == len(other.messages) > 0
            and all(
                isinstance(a, XAPShort) and a.answers(b)
                for a, b in zip(self.messages, other.messages, strict=True)
            )
        )

    def mysummary(self):
        return self.sprintf(f"XAP/UDP %form% x{len(self.messages)}")


# -- TCP option kind 253 ------------------------------------------------------
# Through ftsslab's TCP-option hook: an option with our ExID dissects as ("XAP", [msgs]);
# another experiment's kind 253 stays (253, bytes), as Scapy gives it.


def _tcp_option_bytes(value: Packet | list[Packet]) -> bytes:
    messages = [value] if isinstance(value, Packet) else list(value)
    return struct.pack("!H", XAP_TCP_EXID) + _messages_bytes(messages)


def _tcp_option(raw: bytes) -> tuple[str, list[Packet]] | None:
    messages = _split_messages(raw[2:]) if raw[:2] == struct.pack("!H", XAP_TCP_EXID) else None
    return None if messages is None else (XAP_TCP_OPTION_NAME, messages)


_tcp_options.register(XAP_TCP_OPTION_KIND, XAP_TCP_OPTION_NAME, _tcp_option_bytes, _tcp_option)

bind_bottom_up(UDP, XAPUDP, sport=XAP_UDP_PORT)
bind_bottom_up(UDP, XAPUDP, dport=XAP_UDP_PORT)
bind_layers(UDP, XAPUDP, sport=XAP_UDP_PORT, dport=XAP_UDP_PORT)
