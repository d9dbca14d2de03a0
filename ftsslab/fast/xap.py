# SPDX-License-Identifier: GPL-2.0-or-later
"""Fast XAP parsers and builders (no Scapy): messages, their three carriers, the UDP TLVs.

Each ``parse_*`` returns a dict keyed by the Scapy field names of
``ftsslab.layers.xap`` (messages as a list of such dicts) or None for anything
short or malformed; it never raises.  ``build_*`` give the exact bytes Scapy
builds.
"""

import socket
import struct
from collections.abc import Iterable, Mapping

# The wire numbers of XAP, defined here only (ftsslab.layers.xap and xap.lua use them).
XAP_VERSION = 1
"""The only version: the seed defines one format."""

XAP_OP_QUERY = 1
XAP_OP_CHANGE_CONNECTION = 2
XAP_OP_SET = 3
XAP_OP_REDIRECT = 4
XAP_OP_ACK = 8
"""Seed order for the four seed operations; 0 stays reserved so an all-zero
message is invalid.  The ack is ours (the seed asks data-carried XAP for "a
suitable protocol ... to assure and acknowledge receipt"); its code has the
top bit set so the bit reads as "reply"."""

XAP_OPERATIONS = {
    XAP_OP_QUERY: "query",
    XAP_OP_CHANGE_CONNECTION: "change_connection",
    XAP_OP_SET: "set",
    XAP_OP_REDIRECT: "redirect",
    XAP_OP_ACK: "ack",
}

XAP_FULL_LEN = 15
XAP_SHORT_LEN = 11

XAP_TCP_OPTION_KIND = 253
"""RFC 4727 experimental TCP option 1 (254 is TCH's in the seed)."""
XAP_TCP_EXID = 0x5841
"""RFC 6994 16-bit ExID: ASCII "XA"; not IANA-registered, unknown to Wireshark."""

XAP_IP_OPTION_NUMBER = 30
XAP_IP_OPTION_TYPE = 0x80 | XAP_IP_OPTION_NUMBER  # 158: copied, class 0 (control)
"""Copied into every fragment: non-first fragments lack the transport ports
that a switch steers by, and the messages carry them."""

XAP_UDP_PORT = 5016
"""IANA-unassigned registered port (5016-5019 are free, between fmwp and zenginkyo-1)."""

XAP_FORM_SHORT = 0
XAP_FORM_FULL = 1
XAP_FORMS = {XAP_FORM_SHORT: "short", XAP_FORM_FULL: "full"}

XAP_TLV_CLIENT_IP = 1
XAP_TLV_TARGET_IP = 2
"""TLVs after the messages of a UDP datagram (decision D2.10: the 15 bytes name neither):
CLIENT_IP, the client of the connection the messages are about; TARGET_IP, the own
address of the device the connection moves to (change_connection, redirect), or in an
ack the flow's owner once the switch has acted.  0 stays reserved; other types are
skipped by receivers (kept as raw bytes)."""
XAP_TLV_TYPES = {XAP_TLV_CLIENT_IP: "client_ip", XAP_TLV_TARGET_IP: "target_ip"}
XAP_TLV_IP_LEN = 4
"""The value length of CLIENT_IP and TARGET_IP (IPv4); another length is kept raw."""

_SHORT = struct.Struct("!IBHHH")  # version|operation|nonce, proto, sport, dport, xid
_FULL = struct.Struct("!IBHHH4s")  # ... cluster_id
_TCP_HDR = struct.Struct("!BBH")  # kind, length, ExID
_IP_HDR = struct.Struct("!BB")  # type, length
_UDP_HDR = struct.Struct("!BB")  # form, count
_TLV_HDR = struct.Struct("!BB")  # type, length (of the value)
_FORM_SIZE = {XAP_FORM_FULL: XAP_FULL_LEN, XAP_FORM_SHORT: XAP_SHORT_LEN}


def _fields(word, proto, sport, dport, xid):
    return {
        "version": word >> 28,
        "operation": (word >> 24) & 0xF,
        "nonce": word & 0xFFFFFF,
        "proto": proto,
        "sport": sport,
        "dport": dport,
        "xid": xid,
    }


def parse_xap(buf: bytes | memoryview) -> dict | None:
    """The full (15-byte) message at the start of ``buf``."""
    if len(buf) < XAP_FULL_LEN:
        return None
    *head, cluster = _FULL.unpack_from(buf)
    msg = _fields(*head)
    msg["cluster_id"] = socket.inet_ntoa(cluster)
    return msg


def parse_xap_short(buf: bytes | memoryview) -> dict | None:
    """The short (11-byte, implicit Cluster ID) message at the start of ``buf``."""
    if len(buf) < XAP_SHORT_LEN:
        return None
    return _fields(*_SHORT.unpack_from(buf))


def _parse_form(buf, form, count):
    size = _FORM_SIZE[form]
    parse = parse_xap if form == XAP_FORM_FULL else parse_xap_short
    return [parse(buf[i * size:(i + 1) * size]) for i in range(count)]


def parse_xap_messages(buf: bytes | memoryview) -> list[dict] | None:
    """An option body: all full (length a multiple of 15) or all short (of 11)."""
    n = len(buf)
    for form in (XAP_FORM_FULL, XAP_FORM_SHORT):
        if n % _FORM_SIZE[form] == 0:
            return _parse_form(buf, form, n // _FORM_SIZE[form])
    return None


def parse_xap_tcp_option(buf: bytes | memoryview) -> dict | None:
    """A kind-253 option starting at ``buf[0]``: kind, length, exid, messages."""
    if len(buf) < _TCP_HDR.size:
        return None
    kind, length, exid = _TCP_HDR.unpack_from(buf)
    if kind != XAP_TCP_OPTION_KIND or exid != XAP_TCP_EXID or not 4 <= length <= len(buf):
        return None
    messages = parse_xap_messages(buf[4:length])
    if messages is None:
        return None
    return {"kind": kind, "length": length, "exid": exid, "messages": messages}


def parse_xap_ip_option(buf: bytes | memoryview) -> dict | None:
    """An IP option of number 30 starting at ``buf[0]`` (IPOption_XAP's fields)."""
    if len(buf) < _IP_HDR.size:
        return None
    otype, length = _IP_HDR.unpack_from(buf)
    if otype & 0x1F != XAP_IP_OPTION_NUMBER or not 2 <= length <= len(buf):
        return None
    messages = parse_xap_messages(buf[2:length])
    if messages is None:
        return None
    return {
        "copy_flag": otype >> 7,
        "optclass": (otype >> 5) & 3,
        "option": XAP_IP_OPTION_NUMBER,
        "length": length,
        "messages": messages,
    }


def parse_xap_tlv(buf: bytes | memoryview) -> dict | None:
    """The TLV at the start of ``buf``: type, length and ``client_ip``/``target_ip``
    (a known type of 4 bytes) or ``value`` (raw bytes, any other TLV)."""
    if len(buf) < _TLV_HDR.size:
        return None
    tlv_type, length = _TLV_HDR.unpack_from(buf)
    if 2 + length > len(buf):
        return None
    value = bytes(buf[2:2 + length])
    name = XAP_TLV_TYPES.get(tlv_type)
    if name is not None and length == XAP_TLV_IP_LEN:
        return {"type": tlv_type, "length": length, name: socket.inet_ntoa(value)}
    return {"type": tlv_type, "length": length, "value": value}


def parse_xap_tlvs(buf: bytes | memoryview) -> list[dict] | None:
    """Whole TLVs up to the end of ``buf``; None when the bytes end inside one."""
    tlvs, i = [], 0
    while i < len(buf):
        tlv = parse_xap_tlv(buf[i:])
        if tlv is None:
            return None
        tlvs.append(tlv)
        i += 2 + tlv["length"]
    return tlvs


def parse_xap_udp(buf: bytes | memoryview) -> dict | None:
    """A UDP payload (XAPUDP): form, count, messages, then TLVs to the end."""
    if len(buf) < _UDP_HDR.size:
        return None
    form, count = _UDP_HDR.unpack_from(buf)
    if form not in _FORM_SIZE:
        return None
    end = 2 + count * _FORM_SIZE[form]
    if end > len(buf):
        return None
    tlvs = parse_xap_tlvs(buf[end:])
    if tlvs is None:
        return None
    messages = _parse_form(buf[2:end], form, count)
    return {"form": form, "count": count, "messages": messages, "tlvs": tlvs}


def _walk_options(buf, parse):
    """Every option of a TCP or IPv4 options area (same EOL/NOP/TLV rules) that
    ``parse`` accepts, in order."""
    found, i, n = [], 0, len(buf)
    while i < n:
        if buf[i] == 0:
            break
        if buf[i] == 1:
            i += 1
            continue
        if i + 1 >= n or buf[i + 1] < 2:
            break
        opt = parse(buf[i:i + buf[i + 1]])
        if opt is not None:
            found.append(opt)
        i += buf[i + 1]
    return found


def parse_xap_tcp_options(buf: bytes | memoryview) -> list[dict]:
    """All XAP options of a TCP options area, in header order (= switch order)."""
    return _walk_options(buf, parse_xap_tcp_option)


def parse_xap_ip_options(buf: bytes | memoryview) -> list[dict]:
    """All XAP options of an IPv4 options area, in header order."""
    return _walk_options(buf, parse_xap_ip_option)


def build_xap(
    *,
    operation: int,
    nonce: int = 0,
    proto: int = 6,
    sport: int = 0,
    dport: int = 0,
    xid: int = 0,
    cluster_id: str | None = None,
    version: int = XAP_VERSION,
) -> bytes:
    """One message: full form with ``cluster_id``, short form without it."""
    word = (version & 0xF) << 28 | (operation & 0xF) << 24 | (nonce & 0xFFFFFF)
    if cluster_id is None:
        return _SHORT.pack(word, proto, sport, dport, xid)
    return _FULL.pack(word, proto, sport, dport, xid, socket.inet_aton(cluster_id))


def build_xap_ack(request: Mapping) -> bytes:
    """The ack a switch emits for a parsed request: same fields, operation ack."""
    return build_xap(**{**request, "operation": XAP_OP_ACK})


def _body(messages: Iterable[Mapping]) -> tuple[int, int, bytes]:
    msgs = list(messages)
    forms = {"cluster_id" in m for m in msgs}
    if len(forms) > 1:
        raise ValueError("one XAP carrier holds either full or short messages, not both")
    form = XAP_FORM_SHORT if forms == {False} else XAP_FORM_FULL
    return form, len(msgs), b"".join(build_xap(**m) for m in msgs)


def build_xap_tcp_option(messages: Iterable[Mapping]) -> bytes:
    """A kind-253 option (unpadded) carrying ``messages`` in order."""
    body = _body(messages)[2]
    return _TCP_HDR.pack(XAP_TCP_OPTION_KIND, 4 + len(body), XAP_TCP_EXID) + body


def build_xap_ip_option(messages: Iterable[Mapping]) -> bytes:
    """An IP option 158 (unpadded) carrying ``messages`` in order."""
    body = _body(messages)[2]
    return _IP_HDR.pack(XAP_IP_OPTION_TYPE, 2 + len(body)) + body


def build_xap_tlv(tlv: Mapping) -> bytes:
    """One TLV from a dict as ``parse_xap_tlv`` gives it (``length`` is computed)."""
    name = XAP_TLV_TYPES.get(tlv["type"])
    if name is not None and name in tlv:
        value = socket.inet_aton(tlv[name])
    else:
        value = bytes(tlv["value"])
    if len(value) > 0xFF:
        raise ValueError(f"an XAP TLV value holds at most 255 bytes, not {len(value)}")
    return _TLV_HDR.pack(tlv["type"], len(value)) + value


def build_xap_udp(messages: Iterable[Mapping], tlvs: Iterable[Mapping] = ()) -> bytes:
    """A UDP payload (XAPUDP) carrying ``messages`` in order, then ``tlvs``."""
    form, count, body = _body(messages)
    return _UDP_HDR.pack(form, count) + body + b"".join(build_xap_tlv(t) for t in tlvs)
