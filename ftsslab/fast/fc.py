# SPDX-License-Identifier: GPL-2.0-or-later
"""Fast FCoE/FC frame parser and builder (no Scapy): the FTSS node's hot path.

Same wire format as ``ftsslab.layers.fc`` (Ether / FCoE / FC / payload / CRC /
EOF trailer); dict keys are the Scapy field names, with two exceptions forced by
name clashes: the Ether type is ``"ether_type"`` (``"type"`` is FC.type) and the
FCoE trailer's reserved bytes are ``"trailer_reserved"`` as in Scapy.  Frames
may be 802.1Q-tagged (and QinQ-stacked), as Scapy dissects them.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

# The wire numbers of FC and FCoE, defined here only (ftsslab.layers.fc uses them).
FCOE_ETHERTYPE = 0x8906  # FC-BB-5 FCoE Ethertype (IEEE-assigned)
FCOE_VERSION = 0  # FC-BB-5 FCoE frame format version
FCOE_HEADER_LEN = 14  # version(4 bits) + reserved(100 bits) + SOF(8 bits)
FCOE_TRAILER_LEN = 4  # EOF + 3 reserved bytes (the FC CRC belongs to the FC frame)
FC_HEADER_LEN = 24
FC_CRC_LEN = 4
FC_CRC_POLY = 0x04C11DB7  # FC-FS CRC-32 generator, same as IEEE 802.3
FC_CRC_POLY_REFLECTED = 0xEDB88320  # the same polynomial, bit-reversed (LSB-first)

# Start-of-frame delimiters (FC-BB-5 encoding of the ordered sets).
FC_SOF_F = 0x28
FC_SOF_I4 = 0x29
FC_SOF_I2 = 0x2D
FC_SOF_I3 = 0x2E
FC_SOF_N4 = 0x31
FC_SOF_N2 = 0x35
FC_SOF_N3 = 0x36
FC_SOF_C4 = 0x39
FCOE_SOF = {
    FC_SOF_F: "SOFf",
    FC_SOF_I4: "SOFi4",
    FC_SOF_I2: "SOFi2",
    FC_SOF_I3: "SOFi3",
    FC_SOF_N4: "SOFn4",
    FC_SOF_N2: "SOFn2",
    FC_SOF_N3: "SOFn3",
    FC_SOF_C4: "SOFc4",
}

# End-of-frame delimiters.
FC_EOF_N = 0x41
FC_EOF_T = 0x42
FC_EOF_RT = 0x44
FC_EOF_DT = 0x46
FC_EOF_NI = 0x49
FC_EOF_DTI = 0x4E
FC_EOF_RTI = 0x4F
FC_EOF_A = 0x50
FCOE_EOF = {
    FC_EOF_N: "EOFn",
    FC_EOF_T: "EOFt",
    FC_EOF_RT: "EOFrt",
    FC_EOF_DT: "EOFdt",
    FC_EOF_NI: "EOFni",
    FC_EOF_DTI: "EOFdti",
    FC_EOF_RTI: "EOFrti",
    FC_EOF_A: "EOFa",
}

# R_CTL: routing (high nibble) + information category (low nibble), FC-FS.
FC_RCTL_DD_UNCAT = 0x00
FC_RCTL_DD_SOL_DATA = 0x01
FC_RCTL_DD_UNSOL_CTL = 0x02
FC_RCTL_DD_SOL_CTL = 0x03
FC_RCTL_DD_UNSOL_DATA = 0x04
FC_RCTL_DD_DATA_DESC = 0x05
FC_RCTL_DD_UNSOL_CMD = 0x06
FC_RCTL_DD_CMD_STATUS = 0x07
FC_RCTL_ELS_REQ = 0x22
FC_RCTL_ELS_REP = 0x23
FC_RCTL_BA_ABTS = 0x81
FC_RCTL_BA_ACC = 0x84
FC_RCTL_BA_RJT = 0x85
FC_RCTL_ACK_1 = 0xC0
FC_RCTL_ACK_0 = 0xC1
FC_RCTL_P_RJT = 0xC2
FC_RCTL = {
    FC_RCTL_DD_UNCAT: "dd_uncategorized",
    FC_RCTL_DD_SOL_DATA: "dd_sol_data",
    FC_RCTL_DD_UNSOL_CTL: "dd_unsol_ctl",
    FC_RCTL_DD_SOL_CTL: "dd_sol_ctl",
    FC_RCTL_DD_UNSOL_DATA: "dd_unsol_data",
    FC_RCTL_DD_DATA_DESC: "dd_data_desc",
    FC_RCTL_DD_UNSOL_CMD: "dd_unsol_cmd",
    FC_RCTL_DD_CMD_STATUS: "dd_cmd_status",
    FC_RCTL_ELS_REQ: "els_req",
    FC_RCTL_ELS_REP: "els_rep",
    0x32: "els4_req",
    0x33: "els4_rep",
    0x50: "vft_header",
    0x51: "ifr_header",
    0x52: "enc_header",
    0x80: "ba_nop",
    FC_RCTL_BA_ABTS: "ba_abts",
    0x82: "ba_rmc",
    FC_RCTL_BA_ACC: "ba_acc",
    FC_RCTL_BA_RJT: "ba_rjt",
    0x86: "ba_prmt",
    FC_RCTL_ACK_1: "ack_1",
    FC_RCTL_ACK_0: "ack_0",
    FC_RCTL_P_RJT: "p_rjt",
    0xC3: "f_rjt",
    0xC4: "p_bsy",
    0xC5: "f_bsy_data",
    0xC6: "f_bsy_link_ctl",
    0xC7: "lcr",
    0xC9: "end",
}

# TYPE: the FC-4 protocol of the payload (FC-FS / FC-GS).
FC_TYPE_BLS = 0x00
FC_TYPE_ELS = 0x01
FC_TYPE_IP = 0x05
FC_TYPE_FCP = 0x08
FC_TYPE_CT = 0x20
FC_TYPE_VENDOR_FIRST = 0xE0  # 0xE0-0xFF: vendor unique
FC_TYPE_VENDOR_LAST = 0xFF
FC_TYPE = {
    FC_TYPE_BLS: "BLS",
    FC_TYPE_ELS: "ELS",
    0x04: "LLC",
    FC_TYPE_IP: "IP",
    FC_TYPE_FCP: "SCSI-FCP",
    0x1B: "SB-3_from_CU",
    0x1C: "SB-3_to_CU",
    FC_TYPE_CT: "FC-CT",
    0x22: "SW_ILS",
    0x23: "AL",
    0x24: "SNMP",
    0x28: "FC-NVMe",
    **{t: f"vendor_{t:02x}" for t in range(FC_TYPE_VENDOR_FIRST, FC_TYPE_VENDOR_LAST + 1)},
}

# F_CTL bits (FC-FS), most significant first.
FC_FCTL_EXCH_CONTEXT = 0x800000  # set: frame sent by the exchange responder
FC_FCTL_SEQ_CONTEXT = 0x400000  # set: frame sent by the sequence recipient
FC_FCTL_FIRST_SEQ = 0x200000
FC_FCTL_LAST_SEQ = 0x100000
FC_FCTL_END_SEQ = 0x080000
FC_FCTL_SEQ_INITIATIVE = 0x010000
FC_FCTL_REL_OFFSET = 0x000008
FC_FCTL_SINGLE = FC_FCTL_FIRST_SEQ | FC_FCTL_END_SEQ | FC_FCTL_SEQ_INITIATIVE
"""F_CTL default: a one-frame sequence that opens an exchange and passes the initiative."""
FC_FCTL_BITS = [  # LSB first, as FlagsField wants
    "fill_lsb", "fill_msb", "xchg_reassembly", "rel_offset",
    "abts_lsb", "abts_msb", "cont_seq_lsb", "cont_seq_msb",
    "unidirectional", "retx_seq", "rsvd10", "rsvd11",
    "ack_form_lsb", "ack_form_msb", "last_data_lsb", "last_data_msb",
    "seq_initiative", "priority", "end_conn", "end_seq",
    "last_seq", "first_seq", "seq_context", "exch_context",
]  # fmt: skip
FC_DFCTL_BITS = [  # LSB first; the optional headers between FC header and payload
    "dev_hdr_lsb", "dev_hdr_msb", "rsvd2", "rsvd3", "assoc_hdr", "network_hdr", "esp_hdr", "rsvd7",
]  # fmt: skip
FC_RX_ID_UNASSIGNED = 0xFFFF  # RX_ID before the responder has assigned one

# Ether(14) + FCoE version/reserved(13) + SOF(1) + FC header(24)
_HEAD = struct.Struct("!6s6sH13sBIIIBBHHHI")
_BODY = struct.Struct("!13sBIIIBBHHHI")  # the same from FCoE on, after VLAN tags
_TAG = struct.Struct("!HH")  # an 802.1Q/802.1ad tag's TCI, then the next Ether type
_VLAN_TYPES = (0x8100, 0x88A8)  # 802.1Q C-tag, 802.1ad S-tag (QinQ): Scapy takes any stack
_TRAILER = struct.Struct("<IB3s")  # FC CRC (LSB first), EOF, reserved
_FC_START = 14 + 14  # FC frame (what the CRC covers) starts after Ether + FCoE headers
_MIN_LEN = _HEAD.size + _TRAILER.size
_RESERVED_MASK = (1 << 100) - 1
_ADDR_MASK = 0xFFFFFF
_ZERO13, _ZERO3 = bytes(13), bytes(3)


def fc_crc(data: bytes | memoryview) -> int:
    """FC CRC-32 over header + payload (same CRC as IEEE 802.3, via zlib)."""
    return zlib.crc32(data)


class Fcoe(NamedTuple):
    """One Ether/FCoE/FC frame as a typed record: the Scapy field names and values (MACs
    as ``"aa:bb:.."``), the VLAN id when tagged, the FC payload and whether its CRC holds."""

    dst: str
    src: str
    ether_type: int
    vlan: int | None
    version: int
    reserved: int
    sof: int
    r_ctl: int
    d_id: int
    cs_ctl: int
    s_id: int
    type: int
    f_ctl: int
    seq_id: int
    df_ctl: int
    seq_cnt: int
    ox_id: int
    rx_id: int
    parameter: int
    crc: int
    eof: int
    trailer_reserved: int
    payload: memoryview  # between the FC header and the CRC
    crc_ok: bool


def decode_fcoe(frame: bytes | memoryview) -> Fcoe | None:
    """A whole Ethernet frame as an ``Fcoe`` record; None if it is not a full FCoE frame.

    FCoE may come after 802.1Q/802.1ad tags (FCoE usually runs in VLAN 1002): ``vlan``
    is the VLAN id of the tag right before it (the inner one under QinQ), None when
    untagged; ``ether_type`` stays the Ether header's own (Scapy's ``Ether.type``).
    """
    if len(frame) < _MIN_LEN:
        return None
    (dst, src, ether_type, ver_rsvd, sof, w0, w1, w2,
     seq_id, df_ctl, seq_cnt, ox_id, rx_id, parameter) = _HEAD.unpack_from(frame)  # fmt: skip
    at, vlan = 14, None
    if ether_type != FCOE_ETHERTYPE:
        inner = ether_type
        while inner in _VLAN_TYPES and len(frame) >= at + _TAG.size:
            tci, inner = _TAG.unpack_from(frame, at)
            at, vlan = at + _TAG.size, tci & 0xFFF
        if inner != FCOE_ETHERTYPE or len(frame) < at + _BODY.size + _TRAILER.size:
            return None
        (ver_rsvd, sof, w0, w1, w2, seq_id, df_ctl, seq_cnt, ox_id, rx_id,
         parameter) = _BODY.unpack_from(frame, at)  # fmt: skip
    view = memoryview(frame)
    end = len(view) - _TRAILER.size
    crc, eof, trailer_reserved = _TRAILER.unpack_from(view, end)
    if ver_rsvd == _ZERO13:  # FCoE version 0, reserved 0: nearly every frame
        version = reserved = 0
    else:
        first = int.from_bytes(ver_rsvd, "big")
        version, reserved = first >> 100, first & _RESERVED_MASK
    return Fcoe(dst.hex(":"), src.hex(":"), ether_type, vlan, version, reserved, sof,
                w0 >> 24, w0 & _ADDR_MASK, w1 >> 24, w1 & _ADDR_MASK, w2 >> 24,
                w2 & _ADDR_MASK, seq_id, df_ctl, seq_cnt, ox_id,
                rx_id, parameter, crc, eof,
                int.from_bytes(trailer_reserved, "big") if trailer_reserved != _ZERO3 else 0,
                view[at + _BODY.size : end],
                zlib.crc32(view[at + FCOE_HEADER_LEN : end]) == crc)


def parse_fcoe_frame(frame: bytes | memoryview) -> dict | None:
    """``decode_fcoe`` as a dict of its fields (for tools and the tests against Scapy)."""
    rec = decode_fcoe(frame)
    return None if rec is None else rec._asdict()


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
    vlan: int | None = None,
) -> bytes:
    """An Ether/FCoE/FC frame, CRC computed; equals the Scapy build. With ``vlan``, an
    802.1Q tag (priority 0) carries it in that VLAN, as ``Ether()/Dot1Q(vlan=vlan)/...``."""
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
    frame = body + _TRAILER.pack(zlib.crc32(memoryview(body)[_FC_START:]), eof, bytes(3))
    if vlan is None:
        return frame
    if not 0 <= vlan <= 0xFFF:
        raise ValueError(f"VLAN id must be 0-4095 (got {vlan})")
    return frame[:12] + _TAG.pack(0x8100, vlan) + frame[12:]
