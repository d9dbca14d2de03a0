# SPDX-License-Identifier: GPL-2.0-or-later
"""Fibre Channel over Ethernet: the FTSS interconnection fabric.

Seed 000 names Fibre Channel as the interface between the servers and the
fault tolerant storage system ("a fiber channel link to FTSS 92", "fiber
channel ports 134 (which are coupled to FTSS interconnection fabric 94)"), and
claim 7 of seed 004 carries network packets "by encapsulating the packet in a
protocol of an interface used to implement the FTSS interconnection fabric".
ftsslab runs that fabric as FC frames inside Ethernet (FC-BB-5 FCoE), so a lab
needs no FC hardware:

    Ether(type=0x8906) / FCoE(version, reserved, SOF) / FC(24-byte header)
        / payload / [FC.crc] [FCoE.eof, FCoE.trailer_reserved]

Both FCoE and FC end with a trailer (FCoE: EOF + 3 reserved bytes; FC: the
CRC-32 over header and payload).  Each is a named field of its layer, listed
after the header fields: ``pre_dissect`` moves the trailer bytes up behind the
header so the ordinary field machinery reads them, and ``post_build`` puts them
back at the end of the layer (computing ``FC.crc`` when None).  So the payload
an upper layer sees (``bind_layers(FC, X, type=...)``) is exactly the bytes
between the FC header and the CRC.
"""

import struct

from scapy.config import conf
from scapy.fields import (
    BitField,
    ByteEnumField,
    FlagsField,
    ShortField,
    X3BytesField,
    XByteField,
    XIntField,
    XLEIntField,
    XShortField,
)
from scapy.layers.l2 import Ether
from scapy.packet import NoPayload, Packet, Raw, bind_layers

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


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ FC_CRC_POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def fc_crc(data: bytes) -> int:
    """CRC-32 of an FC frame's header + payload, as FC-FS defines it.

    Written from the definition (reflected polynomial 0x04C11DB7, initial value
    and final XOR 0xFFFFFFFF) rather than with zlib, so that it is an
    independent oracle for ``ftsslab.fast.fc.fc_crc``.  On the wire it is sent
    least significant byte first, like the Ethernet FCS.
    """
    crc = 0xFFFFFFFF
    for byte in bytes(data):
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def verify_fc_crc(frame: "Packet | bytes") -> bool:
    """True when an FC frame's CRC matches its header and payload.

    ``frame`` is either a packet holding an :class:`FC` layer (the layer's bytes
    are checked) or the bytes of an FC frame: header + payload + CRC.
    """
    if isinstance(frame, Packet):
        if FC not in frame:
            return False
        frame = bytes(frame[FC])
    data = bytes(frame)
    if len(data) < FC_HEADER_LEN + FC_CRC_LEN:
        return False
    (crc,) = struct.unpack("<I", data[-FC_CRC_LEN:])
    return fc_crc(data[:-FC_CRC_LEN]) == crc


def fc_addr(value: int) -> str:
    """An FC address (D_ID/S_ID) as Wireshark prints it: domain.area.port."""
    return (value & 0xFFFFFF).to_bytes(3, "big").hex(".")


class FCAddrField(X3BytesField):
    """A 24-bit FC port address; held as an int, shown and accepted as "dd.aa.pp"."""

    def any2i(self, pkt, x):
        if isinstance(x, str):
            return int(x.replace(".", ""), 16)
        return super().any2i(pkt, x)

    def i2repr(self, pkt, x):
        return "None" if x is None else fc_addr(x)


class _TrailedPacket(Packet):
    """A layer with ``_header_len`` bytes in front of its payload and
    ``_trailer_len`` bytes behind it; the trailer is the last fields_desc entries.

    The wire order (header, payload, trailer) differs from the field order
    (header, trailer), so the trailer is moved behind the header on dissect and
    back to the end on build.  Inner padding is built inside the layer: it
    belongs before the trailer, not at the end of the Ethernet frame.
    """

    name = "FC-BB trailed layer (base)"
    _header_len = 0
    _trailer_len = 0

    def dissect(self, s):
        if len(s) < self._header_len + self._trailer_len:
            # Too short to hold our fields: keep the bytes undissected.
            self.add_payload(conf.raw_layer(s, _internal=1, _underlayer=self))
            return
        super().dissect(s)

    def pre_dissect(self, s):
        h, t = self._header_len, len(s) - self._trailer_len
        return s[:h] + s[t:] + s[h:t]

    def post_dissect(self, s):
        self.raw_packet_cache = None  # field order is not wire order: always post_build
        return s

    def do_build_payload(self):
        return self.payload.do_build() + self.payload.build_padding()

    def build_padding(self):
        return b""

    def post_build(self, pkt, pay):
        header = pkt[: self._header_len]
        return header + pay + self.build_trailer(header, pay, pkt[self._header_len :])

    def build_trailer(self, header: bytes, pay: bytes, trailer: bytes) -> bytes:
        """The trailer bytes to send; ``trailer`` is what the fields gave."""
        return trailer


class FCoE(_TrailedPacket):
    """FC-BB-5 FCoE encapsulation: header with the SOF, trailer with the EOF.

    The FC frame (header, payload, CRC) is the payload of this layer.
    """

    name = "FCoE (FC-BB-5)"
    _header_len = FCOE_HEADER_LEN
    _trailer_len = FCOE_TRAILER_LEN
    fields_desc = [
        BitField("version", FCOE_VERSION, 4),
        BitField("reserved", 0, 100),
        ByteEnumField("sof", FC_SOF_I3, FCOE_SOF),
        ByteEnumField("eof", FC_EOF_T, FCOE_EOF),
        X3BytesField("trailer_reserved", 0),
    ]

    def mysummary(self):
        return self.sprintf("FCoE %sof%/%eof%")


class FC(_TrailedPacket):
    """An FC frame: the 24-byte frame header, the payload, then the CRC.

    ``crc`` is computed over header + payload when None; a dissected value is
    kept as received, so a bad CRC survives a rebuild (see ``verify_fc_crc``).
    """

    name = "Fibre Channel frame"
    _header_len = FC_HEADER_LEN
    _trailer_len = FC_CRC_LEN
    fields_desc = [
        ByteEnumField("r_ctl", FC_RCTL_DD_UNSOL_DATA, FC_RCTL),
        FCAddrField("d_id", 0),
        XByteField("cs_ctl", 0),
        FCAddrField("s_id", 0),
        ByteEnumField("type", FC_TYPE_FCP, FC_TYPE),
        FlagsField("f_ctl", FC_FCTL_SINGLE, 24, FC_FCTL_BITS),
        XByteField("seq_id", 0),
        FlagsField("df_ctl", 0, 8, FC_DFCTL_BITS),
        ShortField("seq_cnt", 0),
        XShortField("ox_id", 0),
        XShortField("rx_id", FC_RX_ID_UNASSIGNED),
        XIntField("parameter", 0),
        XLEIntField("crc", None),
    ]

    def build_trailer(self, header, pay, trailer):
        if self.crc is None:
            return struct.pack("<I", fc_crc(header + pay))
        return trailer

    def mysummary(self):
        r_ctl = self.get_field("r_ctl").i2repr(self, self.r_ctl)
        return (
            f"FC {fc_addr(self.s_id)} > {fc_addr(self.d_id)}"
            f" type=0x{self.type:02x} ox_id=0x{self.ox_id:04x} {r_ctl}"
        )

    def hashret(self):
        # Request and reply share the exchange (OX_ID) and the address pair.
        return struct.pack("!HI", self.ox_id, self.s_id ^ self.d_id) + self.payload.hashret()

    def answers(self, other):
        """A responder frame answers the originator's frame of the same exchange."""
        if not isinstance(other, FC):
            return False
        if not (
            self.f_ctl & FC_FCTL_EXCH_CONTEXT
            and not other.f_ctl & FC_FCTL_EXCH_CONTEXT
            and self.ox_id == other.ox_id
            and self.s_id == other.d_id
            and self.d_id == other.s_id
        ):
            return False
        opaque = (Raw, NoPayload, conf.padding_layer)
        if isinstance(self.payload, opaque) or isinstance(other.payload, opaque):
            return True
        return self.payload.answers(other.payload)


bind_layers(Ether, FCoE, type=FCOE_ETHERTYPE)  # Dot1Q aliases Ether: tagged FCoE too
bind_layers(FCoE, FC)
