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

from ftsslab.fast.fc import (  # noqa: F401  (the wire numbers, importable from here too)
    FC_CRC_LEN,
    FC_CRC_POLY_REFLECTED,
    FC_DFCTL_BITS,
    FC_EOF_A,
    FC_EOF_DT,
    FC_EOF_DTI,
    FC_EOF_N,
    FC_EOF_NI,
    FC_EOF_RT,
    FC_EOF_RTI,
    FC_EOF_T,
    FC_FCTL_BITS,
    FC_FCTL_END_SEQ,
    FC_FCTL_EXCH_CONTEXT,
    FC_FCTL_LAST_SEQ,
    FC_FCTL_REL_OFFSET,
    FC_FCTL_SEQ_CONTEXT,
    FC_FCTL_SEQ_INITIATIVE,
    FC_FCTL_SINGLE,
    FC_HEADER_LEN,
    FC_RCTL,
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
    FC_RX_ID_UNASSIGNED,
    FC_SOF_C4,
    FC_SOF_F,
    FC_SOF_I2,
    FC_SOF_I3,
    FC_SOF_I4,
    FC_SOF_N2,
    FC_SOF_N3,
    FC_SOF_N4,
    FC_TYPE,
    FC_TYPE_BLS,
    FC_TYPE_ELS,
    FC_TYPE_FCP,
    FCOE_EOF,
    FCOE_ETHERTYPE,
    FCOE_HEADER_LEN,
    FCOE_SOF,
    FCOE_TRAILER_LEN,
    FCOE_VERSION,
)


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
