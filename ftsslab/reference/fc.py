# SPDX-License-Identifier: GPL-2.0-or-later
"""Reference FCoE/FC frames: every SOF and EOF, and the common FC-4/ELS/BLS/link-control kinds.

A server (S_ID 01.02.03) talks to the FTSS (D_ID 0a.0b.0c) over the FTSS
interconnection fabric; both use fabric-provided MAC addresses (FC-MAP
0E-FC-00 + FC_ID), as FC-BB-5 FCoE nodes do.
"""

from __future__ import annotations

from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from ftsslab.layers.fc import (
    FC,
    FC_EOF_A,
    FC_EOF_DT,
    FC_EOF_DTI,
    FC_EOF_N,
    FC_EOF_NI,
    FC_EOF_RT,
    FC_EOF_RTI,
    FC_EOF_T,
    FC_FCTL_END_SEQ,
    FC_FCTL_EXCH_CONTEXT,
    FC_FCTL_LAST_SEQ,
    FC_FCTL_REL_OFFSET,
    FC_FCTL_SEQ_CONTEXT,
    FC_FCTL_SEQ_INITIATIVE,
    FC_FCTL_SINGLE,
    FC_RCTL_ACK_1,
    FC_RCTL_BA_ABTS,
    FC_RCTL_BA_ACC,
    FC_RCTL_BA_RJT,
    FC_RCTL_DD_CMD_STATUS,
    FC_RCTL_DD_SOL_DATA,
    FC_RCTL_DD_UNSOL_CMD,
    FC_RCTL_DD_UNSOL_DATA,
    FC_RCTL_ELS_REP,
    FC_RCTL_ELS_REQ,
    FC_SOF_C4,
    FC_SOF_F,
    FC_SOF_I2,
    FC_SOF_I3,
    FC_SOF_I4,
    FC_SOF_N2,
    FC_SOF_N3,
    FC_SOF_N4,
    FC_TYPE_BLS,
    FC_TYPE_ELS,
    FC_TYPE_FCP,
    FCoE,
)

SERVER_FCID = 0x010203
FTSS_FCID = 0x0A0B0C
FCOE_VLAN = 1002  # the VLAN FCoE deployments conventionally use for the SAN
FC_MAP = "0e:fc:00"  # FC-BB-5 default FC-MAP: FPMA = FC-MAP + FC_ID


def _mac(fcid: int) -> str:
    return f"{FC_MAP}:{fcid >> 16:02x}:{(fcid >> 8) & 0xFF:02x}:{fcid & 0xFF:02x}"


SERVER_MAC = _mac(SERVER_FCID)
FTSS_MAC = _mac(FTSS_FCID)

# An INQUIRY exchange: OX_ID chosen by the server, RX_ID by the FTSS.
INQ_OX_ID = 0x1001
INQ_RX_ID = 0x5001
INQUIRY_LEN = 36
FCP_CMND_INQUIRY = (
    bytes(8)  # FCP_LUN 0
    + bytes([0, 0, 0, 0x02])  # CRN, task attribute SIMPLE, no TMF, RDDATA
    + bytes([0x12, 0, 0, 0, INQUIRY_LEN, 0]).ljust(16, b"\0")  # CDB: INQUIRY
    + INQUIRY_LEN.to_bytes(4, "big")  # FCP_DL
)
INQUIRY_DATA = (
    bytes([0x00, 0x00, 0x05, 0x02, INQUIRY_LEN - 5, 0, 0, 0])  # disk, SPC-3, 36 bytes
    + b"FTSSLAB "  # T10 vendor identification
    + b"FTSS disk".ljust(16)  # product identification
    + b"1.0".ljust(4)  # product revision level
)
FCP_RSP_GOOD = bytes(24)  # no flags, SCSI status GOOD, no residual, no sense


def _text(text: str) -> Raw:
    """A vendor payload, space-filled to whole FC words (no fill bytes needed in F_CTL)."""
    data = text.encode()
    return Raw(data.ljust(len(data) + -len(data) % 4))


def _to_ftss(fc: FC, **fcoe) -> Packet:
    return Ether(dst=FTSS_MAC, src=SERVER_MAC) / FCoE(**fcoe) / fc


def _to_server(fc: FC, **fcoe) -> Packet:
    return Ether(dst=SERVER_MAC, src=FTSS_MAC) / FCoE(**fcoe) / fc


def _req(**kw) -> FC:
    return FC(d_id=FTSS_FCID, s_id=SERVER_FCID, **kw)


def _rsp(**kw) -> FC:
    return FC(d_id=SERVER_FCID, s_id=FTSS_FCID, **kw)


RSP_LAST = FC_FCTL_EXCH_CONTEXT | FC_FCTL_LAST_SEQ | FC_FCTL_END_SEQ
# Vendor-unique TYPE for raw-payload frames: not 0xE0 (FTSS, layers/ftss.py) and not
# 0xFF (Wireshark decodes that one as Cisco MDS "OHMS").
VENDOR = 0xFE


def packets() -> list[tuple[str, Packet]]:
    inq = {"ox_id": INQ_OX_ID, "type": FC_TYPE_FCP}
    inq_rsp = {**inq, "rx_id": INQ_RX_ID}
    return [
        (
            "FCP_CMND INQUIRY, class 3 one-frame sequence (SOFi3/EOFt)",
            _to_ftss(
                _req(r_ctl=FC_RCTL_DD_UNSOL_CMD, **inq) / Raw(FCP_CMND_INQUIRY),
                sof=FC_SOF_I3,
                eof=FC_EOF_T,
            ),
        ),
        (
            "FCP_DATA INQUIRY data, frame 1 of 2 (SOFi3/EOFn)",
            _to_server(
                _rsp(
                    r_ctl=FC_RCTL_DD_SOL_DATA,
                    f_ctl=FC_FCTL_EXCH_CONTEXT | FC_FCTL_REL_OFFSET,
                    seq_id=1,
                    seq_cnt=0,
                    parameter=0,
                    **inq_rsp,
                )
                / Raw(INQUIRY_DATA[:20]),
                sof=FC_SOF_I3,
                eof=FC_EOF_N,
            ),
        ),
        (
            "FCP_DATA INQUIRY data, frame 2 of 2 (SOFn3/EOFt)",
            _to_server(
                _rsp(
                    r_ctl=FC_RCTL_DD_SOL_DATA,
                    f_ctl=FC_FCTL_EXCH_CONTEXT | FC_FCTL_REL_OFFSET | FC_FCTL_END_SEQ,
                    seq_id=1,
                    seq_cnt=1,
                    parameter=20,
                    **inq_rsp,
                )
                / Raw(INQUIRY_DATA[20:]),
                sof=FC_SOF_N3,
                eof=FC_EOF_T,
            ),
        ),
        (
            "FCP_RSP status GOOD, last sequence of the exchange",
            _to_server(
                _rsp(
                    r_ctl=FC_RCTL_DD_CMD_STATUS,
                    f_ctl=RSP_LAST | FC_FCTL_SEQ_INITIATIVE,
                    seq_id=2,
                    **inq_rsp,
                )
                / Raw(FCP_RSP_GOOD),
            ),
        ),
        (
            "ELS ECHO request",
            _to_ftss(
                _req(r_ctl=FC_RCTL_ELS_REQ, type=FC_TYPE_ELS, ox_id=0x2001)
                / Raw(bytes([0x10, 0, 0, 0]) + b"FTSS"),
            ),
        ),
        (
            "ELS LS_ACC reply to ECHO",
            _to_server(
                _rsp(
                    r_ctl=FC_RCTL_ELS_REP,
                    type=FC_TYPE_ELS,
                    f_ctl=RSP_LAST,
                    ox_id=0x2001,
                    rx_id=0x6001,
                )
                / Raw(bytes([0x02, 0, 0, 0]) + b"FTSS"),
            ),
        ),
        (
            "BLS ABTS of the INQUIRY exchange",
            _to_ftss(
                _req(
                    r_ctl=FC_RCTL_BA_ABTS,
                    type=FC_TYPE_BLS,
                    seq_id=3,
                    f_ctl=FC_FCTL_SEQ_INITIATIVE | FC_FCTL_END_SEQ,
                    ox_id=INQ_OX_ID,
                    rx_id=INQ_RX_ID,
                ),
            ),
        ),
        (
            "BLS BA_ACC to the ABTS",
            _to_server(
                _rsp(
                    r_ctl=FC_RCTL_BA_ACC,
                    type=FC_TYPE_BLS,
                    f_ctl=RSP_LAST,
                    ox_id=INQ_OX_ID,
                    rx_id=INQ_RX_ID,
                )
                / Raw(
                    bytes([0x80, 0x01, 0, 0])
                    + INQ_OX_ID.to_bytes(2, "big")
                    + INQ_RX_ID.to_bytes(2, "big")
                    + bytes([0, 0, 0xFF, 0xFF])
                ),
            ),
        ),
        (
            "BLS BA_RJT: invalid OX_ID-RX_ID combination",
            _to_server(
                _rsp(
                    r_ctl=FC_RCTL_BA_RJT,
                    type=FC_TYPE_BLS,
                    f_ctl=RSP_LAST,
                    ox_id=0x1002,
                    rx_id=0xFFFF,
                )
                / Raw(bytes([0, 0x03, 0x03, 0])),
            ),
        ),
        (
            "vendor TYPE 0xfe data, class 2 (SOFi2/EOFt)",
            _to_ftss(
                _req(r_ctl=FC_RCTL_DD_UNSOL_DATA, type=VENDOR, ox_id=0x3001)
                / _text("vendor-unique FC-4 payload"),
                sof=FC_SOF_I2,
            ),
        ),
        (
            "ACK_1 for the class 2 frame (SOFn2/EOFt)",
            _to_server(
                _rsp(
                    r_ctl=FC_RCTL_ACK_1,
                    type=FC_TYPE_BLS,
                    ox_id=0x3001,
                    f_ctl=FC_FCTL_EXCH_CONTEXT | FC_FCTL_SEQ_CONTEXT | FC_FCTL_END_SEQ,
                    parameter=1,
                ),
                sof=FC_SOF_N2,
            ),
        ),
        (
            "class F fabric frame (SOFf/EOFt)",
            _to_ftss(_req(type=VENDOR, ox_id=0x3002) / _text("class F"), sof=FC_SOF_F),
        ),
        (
            "class 4 circuit activation (SOFc4/EOFn)",
            _to_ftss(
                _req(type=VENDOR, ox_id=0x3003) / _text("class 4 activate"),
                sof=FC_SOF_C4,
                eof=FC_EOF_N,
            ),
        ),
        (
            "class 4 sequence, disconnect-terminate (SOFi4/EOFdt)",
            _to_ftss(
                _req(type=VENDOR, ox_id=0x3004) / _text("class 4 first"),
                sof=FC_SOF_I4,
                eof=FC_EOF_DT,
            ),
        ),
        (
            "class 4 sequence, remove-terminate (SOFn4/EOFrt)",
            _to_ftss(
                _req(type=VENDOR, ox_id=0x3004, seq_cnt=1, f_ctl=FC_FCTL_END_SEQ)
                / _text("class 4 next"),
                sof=FC_SOF_N4,
                eof=FC_EOF_RT,
            ),
        ),
        (
            "frame marked invalid by the fabric (EOFni)",
            _to_ftss(_req(type=VENDOR, ox_id=0x3005) / _text("invalid"), eof=FC_EOF_NI),
        ),
        (
            "invalid frame, disconnect-terminate (EOFdti)",
            _to_ftss(_req(type=VENDOR, ox_id=0x3006) / _text("invalid dt"), eof=FC_EOF_DTI),
        ),
        (
            "invalid frame, remove-terminate (EOFrti)",
            _to_ftss(_req(type=VENDOR, ox_id=0x3007) / _text("invalid rt"), eof=FC_EOF_RTI),
        ),
        (
            "aborted frame (EOFa)",
            _to_ftss(_req(type=VENDOR, ox_id=0x3008) / _text("aborted"), eof=FC_EOF_A),
        ),
        (
            "802.1Q-tagged FCoE (VLAN 1002): FCP_CMND INQUIRY",
            Ether(dst=FTSS_MAC, src=SERVER_MAC)
            / Dot1Q(vlan=FCOE_VLAN)
            / FCoE()
            / _req(r_ctl=FC_RCTL_DD_UNSOL_CMD, f_ctl=FC_FCTL_SINGLE, ox_id=0x1003, type=FC_TYPE_FCP)
            / Raw(FCP_CMND_INQUIRY),
        ),
    ]
