# SPDX-License-Identifier: GPL-2.0-or-later
"""Fast TCH parsers and builders (no Scapy): TCP reserved-bit flags, the
endpoint/update TCP options and the second-embodiment messages over UDP.

Values equal what ``ftsslab.layers.tch`` dissects (option values compare equal
to its named tuples); every parser returns None instead of raising.
"""

from __future__ import annotations

import socket
import struct

# The wire numbers of TCH, defined here only (ftsslab.layers.tch and tch.lua use them).
TCH_HND = 0x4
"""Reserved bit 0x4: "this message is part of a TCH session"."""
TCH_SET = 0x2
"""Reserved bit 0x2: "to force a handoff"."""
TCH_END = 0x1
"""Reserved bit 0x1: "to indicate completion of the handoff"."""
TCH_FLAGS = {"HND": TCH_HND, "SET": TCH_SET, "END": TCH_END}

TCH_ENDPOINT_KIND = 255
"""Endpoint option kind: the seed's temporary number (field 471)."""
TCH_UPDATE_KIND = 254
"""Update option kind: the seed's temporary number (field 481)."""
TCH_ENDPOINT_LEN = 8
TCH_UPDATE_LEN = 10
TCP_MAX_OPTIONS_LEN = 40
"""A 4-bit data offset counts at most 15 words: 60 - 20 header bytes."""

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

_TCP = struct.Struct("!HHIIHHHH")
_ENDPOINT = struct.Struct("!BBH4s")
_UPDATE = struct.Struct("!BBII")
_HEADER = struct.Struct("!BBBBIIBBH")
_STATE = struct.Struct("!4s4sHHIIIIIBBHIIIIIIII")
_HEADER_KEYS = (
    "ptype", "mtype", "htype", "status", "session_id", "xid", "initiator", "reserved", "app_len",
)
STATE_KEYS = (  # the state block's fields, in wire order
    "client_ip", "cluster_ip", "client_port", "cluster_port", "seq", "ack", "snd_una",
    "snd_wnd", "rcv_wnd", "snd_wscale", "rcv_wscale", "mss", "cwnd", "ssthresh", "srtt",
    "rttvar", "rto", "keepalive", "persist", "delack",
)
_STATE_DEFAULTS = {
    **dict.fromkeys(STATE_KEYS, 0),
    "client_ip": "0.0.0.0", "cluster_ip": "0.0.0.0", "mss": 1460, "ssthresh": 0xFFFFFFFF,
    "rto": 1000,
}


def tch_flag_names(reserved: int) -> frozenset[str]:
    """Names of the TCH flags set in a ``TCP.reserved`` value."""
    return frozenset(n for n, bit in TCH_FLAGS.items() if reserved & bit)


def parse_tch_options(buf: bytes | memoryview) -> dict | None:
    """TCH options of a raw TCP option area: ``{"TCHEndpoint": (port, ip),
    "TCHUpdate": (seq, ack)}`` (keys only for options present).

    None when the list is malformed (an option length below 2 or past the
    end), a TCH option has the wrong length, or one appears twice.
    """
    buf = memoryview(buf)
    out: dict = {}
    i, n = 0, len(buf)
    while i < n:
        kind = buf[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n or buf[i + 1] < 2 or i + buf[i + 1] > n:
            return None
        olen = buf[i + 1]
        if kind == TCH_ENDPOINT_KIND:
            if olen != _ENDPOINT.size or "TCHEndpoint" in out:
                return None
            _, _, port, ip = _ENDPOINT.unpack_from(buf, i)
            out["TCHEndpoint"] = (port, socket.inet_ntoa(ip))
        elif kind == TCH_UPDATE_KIND:
            if olen != _UPDATE.size or "TCHUpdate" in out:
                return None
            out["TCHUpdate"] = _UPDATE.unpack_from(buf, i)[2:]
        i += olen
    return out


def build_tch_options(
    endpoint: tuple[int, str] | None = None, update: tuple[int, int] | None = None
) -> bytes:
    """Option bytes of ``tch_options(endpoint, update)``: endpoint, NOP, NOP,
    update, EOL, zero-padded to a 32-bit boundary."""
    out = b""
    if endpoint is not None:
        out += _ENDPOINT.pack(TCH_ENDPOINT_KIND, _ENDPOINT.size, endpoint[0],
                              socket.inet_aton(endpoint[1]))
    if update is not None:
        out += b"\x01\x01" + _UPDATE.pack(TCH_UPDATE_KIND, _UPDATE.size, *update)
    out += b"\x00"
    return out + b"\x00" * (-len(out) % 4)


def parse_tch_tcp(buf: bytes | memoryview) -> dict | None:
    """A TCP header with TCH flags and options.

    Keys: the Scapy TCP field names except ``options``, plus ``tch_flags``
    (frozenset of names), ``tch_options`` (:func:`parse_tch_options`) and
    ``payload``.  None when shorter than its data offset or malformed.
    """
    buf = memoryview(buf)
    if len(buf) < _TCP.size:
        return None
    sport, dport, seq, ack, off_flags, window, chksum, urgptr = _TCP.unpack_from(buf)
    dataofs = off_flags >> 12
    hlen = dataofs * 4
    if dataofs < 5 or len(buf) < hlen:
        return None
    options = parse_tch_options(buf[_TCP.size:hlen])
    if options is None:
        return None
    reserved = (off_flags >> 9) & 0x7
    return {
        "sport": sport, "dport": dport, "seq": seq, "ack": ack, "dataofs": dataofs,
        "reserved": reserved, "flags": off_flags & 0x1FF, "window": window,
        "chksum": chksum, "urgptr": urgptr, "tch_flags": tch_flag_names(reserved),
        "tch_options": options, "payload": buf[hlen:],
    }


def _carries_state(ptype: int, mtype: int) -> bool:
    return ptype == TCH_OPEN or (ptype == TCH_MESSAGE and mtype in (TCH_MSG_UPDATE,
                                                                     TCH_MSG_HANDOFF))


def parse_tch_message(buf: bytes | memoryview) -> dict | None:
    """A second-embodiment message (UDP payload); keys are the Scapy field names
    (state fields only when the kind carries them).  Trailing bytes are ignored."""
    buf = memoryview(buf)
    if len(buf) < _HEADER.size:
        return None
    vt, *rest = _HEADER.unpack_from(buf)
    out = {"version": vt >> 4, **dict(zip(_HEADER_KEYS, [vt & 0xF, *rest], strict=True))}
    off = _HEADER.size
    if _carries_state(out["ptype"], out["mtype"]):
        if len(buf) < off + _STATE.size:
            return None
        state = list(_STATE.unpack_from(buf, off))
        state[0], state[1] = socket.inet_ntoa(state[0]), socket.inet_ntoa(state[1])
        out.update(zip(STATE_KEYS, state, strict=True))
        off += _STATE.size
    end = off + out["app_len"]
    if len(buf) < end:
        return None
    out["app_state"] = bytes(buf[off:end])
    return out


def build_tch_message(
    ptype: int,
    mtype: int = 0,
    htype: int = 1,
    status: int = 0,
    session_id: int = 0,
    xid: int = 0,
    initiator: int = 1,
    app_state: bytes = b"",
    **state,
) -> bytes:
    """Bytes of ``TCHMessage(...)`` with the same arguments; ``state`` holds the
    TCP state fields of Open, Update and Handoff (Scapy's defaults for the rest)."""
    if unknown := state.keys() - _STATE_DEFAULTS.keys():
        raise TypeError(f"unknown TCH state fields: {sorted(unknown)}")
    out = _HEADER.pack((1 << 4) | ptype, mtype, htype, status, session_id, xid, initiator, 0,
                       len(app_state))
    if _carries_state(ptype, mtype):
        vals = [state.get(k, _STATE_DEFAULTS[k]) for k in STATE_KEYS]
        vals[0], vals[1] = socket.inet_aton(vals[0]), socket.inet_aton(vals[1])
        out += _STATE.pack(*vals)
    out += app_state + b"\x00" * (-len(app_state) % 4)
    if len(out) > TCH_MAX_MESSAGE:
        raise ValueError(
            f"TCH message is {len(out)} bytes; a 1500-byte IP packet over UDP carries "
            f"at most {TCH_MAX_MESSAGE}"
        )
    return out
