# SPDX-License-Identifier: GPL-2.0-or-later
"""Fast FCoE/FC frame parser and builder (no Scapy): the FTSS node's hot path.

Same wire format as ``ftsslab.layers.fc`` (Ether / FCoE / FC / payload / CRC /
EOF trailer); dict keys are the Scapy field names, with two exceptions forced by
name clashes: the Ether type is ``"ether_type"`` (``"type"`` is FC.type) and the
FCoE trailer's reserved bytes are ``"trailer_reserved"`` as in Scapy.  Only
untagged frames are handled here (Scapy handles 802.1Q-tagged FCoE).
"""

from __future__ import annotations

import struct
import zlib

FCOE_ETHERTYPE = 0x8906
FC_SOF_I3 = 0x2E
FC_EOF_T = 0x42

# Ether(14) + FCoE version/reserved(13) + SOF(1) + FC header(24)
_HEAD = struct.Struct("!6s6sH13sBIIIBBHHHI")
_TRAILER = struct.Struct("<IB3s")  # FC CRC (LSB first), EOF, reserved
_FC_START = 14 + 14  # FC frame (what the CRC covers) starts after Ether + FCoE headers
_MIN_LEN = _HEAD.size + _TRAILER.size
_RESERVED_MASK = (1 << 100) - 1
_ADDR_MASK = 0xFFFFFF


def fc_crc(data: bytes | memoryview) -> int:
    """FC CRC-32 over header + payload (same CRC as IEEE 802.3, via zlib)."""
    return zlib.crc32(data)


def parse_fcoe_frame(frame: bytes | memoryview) -> dict | None:
    """Ether/FCoE/FC fields of a whole Ethernet frame; None if not a full FCoE frame.

    ``"payload"`` is a memoryview of the FC payload (between FC header and
    CRC); ``"crc_ok"`` tells whether the received CRC matches.
    """
    if len(frame) < _MIN_LEN:
        return None
    (dst, src, ether_type, ver_rsvd, sof, w0, w1, w2,
     seq_id, df_ctl, seq_cnt, ox_id, rx_id, parameter) = _HEAD.unpack_from(frame)  # fmt: skip
    if ether_type != FCOE_ETHERTYPE:
        return None
    view = memoryview(frame)
    end = len(view) - _TRAILER.size
    crc, eof, trailer_reserved = _TRAILER.unpack_from(view, end)
    first = int.from_bytes(ver_rsvd, "big")
    return {
        "dst": dst.hex(":"),
        "src": src.hex(":"),
        "ether_type": ether_type,
        "version": first >> 100,
        "reserved": first & _RESERVED_MASK,
        "sof": sof,
        "r_ctl": w0 >> 24,
        "d_id": w0 & _ADDR_MASK,
        "cs_ctl": w1 >> 24,
        "s_id": w1 & _ADDR_MASK,
        "type": w2 >> 24,
        "f_ctl": w2 & _ADDR_MASK,
        "seq_id": seq_id,
        "df_ctl": df_ctl,
        "seq_cnt": seq_cnt,
        "ox_id": ox_id,
        "rx_id": rx_id,
        "parameter": parameter,
        "crc": crc,
        "eof": eof,
        "trailer_reserved": int.from_bytes(trailer_reserved, "big"),
        "payload": view[_HEAD.size : end],
        "crc_ok": zlib.crc32(view[_FC_START:end]) == crc,
    }


def build_fcoe_frame(
    dst: str,
    src: str,
    *,
    r_ctl: int,
    d_id: int,
    s_id: int,
    type: int,
    f_ctl: int,
    seq_id: int,
    seq_cnt: int,
    ox_id: int,
    rx_id: int,
    parameter: int,
    payload: bytes,
    sof: int = FC_SOF_I3,
    eof: int = FC_EOF_T,
    cs_ctl: int = 0,
    df_ctl: int = 0,
) -> bytes:
    """An untagged Ether/FCoE/FC frame, CRC computed; equals the Scapy build."""
    head = _HEAD.pack(
        bytes.fromhex(dst.replace(":", "")),
        bytes.fromhex(src.replace(":", "")),
        FCOE_ETHERTYPE,
        bytes(13),
        sof,
        (r_ctl << 24) | d_id,
        (cs_ctl << 24) | s_id,
        (type << 24) | f_ctl,
        seq_id,
        df_ctl,
        seq_cnt,
        ox_id,
        rx_id,
        parameter,
    )
    body = head + payload
    return body + _TRAILER.pack(zlib.crc32(memoryview(body)[_FC_START:]), eof, bytes(3))
