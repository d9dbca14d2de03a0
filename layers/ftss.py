# SPDX-License-Identifier: GPL-2.0-or-later
# This file is part of ftsslab.

"""
FTSS: the messages a fault tolerant storage system exchanges with its nodes
over the FTSS interconnection fabric (Fibre Channel, here carried in FCoE).

Seed 000 (HP, "A Fault Tolerant Storage System Having An Interconnection
Fabric That Also Carries Network Traffic"), Figs. 5-8, and its claims (seed
004).  The seed gives the behaviour, not the bytes; the wire format is ours:

- one common 4-byte header ``FTSS`` (version, flags, opcode, total length).
  The opcode's high nibble is what the FTSS link unit 136 needs to "separate
  an incoming data stream into file I/O transactions [...] and network
  packets": ``0x0_`` goes to the network routing agent 144, ``0x1_`` to the
  file operations unit 138.  The message is zero-padded to a 32-bit boundary
  after ``length`` bytes, so a receiver strips the padding with ``length``;
- ``PKT`` carries a whole network frame (an Ethernet frame from the node's
  protocol stack 116, "encapsulating the packet in a protocol of an interface
  used to implement the FTSS interconnection fabric", claims 7, 14, 22, 31);
- ``ACK`` is the acknowledgment of Figs. 7A/7B (blocks 160, 170, 174, 178);
- ``HELLO``/``STATUS`` feed routing table 146 ("port number of the fiber
  channel port coupled to the destination node, status information");
- ``WRITE``/``READ``/``LIST``/``DELETE``/``RESPONSE`` are the file I/O
  transactions of the alternative embodiment, where packets travel "as a file
  I/O transaction" in directories on the FTSS (claims 6, 13, 21, 30).

The FC frames use TYPE ``FTSS_FC_TYPE`` (0xE0, the first of the FC
vendor-unique TYPE values 0xE0-0xFF).
"""

import struct

from scapy.config import conf
from scapy.fields import (
    BitField,
    ByteEnumField,
    ByteField,
    ConditionalField,
    FieldLenField,
    FieldListField,
    FlagsField,
    IntField,
    LongField,
    MACField,
    PacketListField,
    ShortField,
    StrLenField,
    XIntField,
    XLongField,
)
from scapy.layers.l2 import Ether
from scapy.packet import Packet, bind_layers

from ftsslab.fast.ftss import (  # noqa: F401  (the wire numbers, importable from here too)
    FTSS_ACK_DELIVERED,
    FTSS_ACK_REASONS,
    FTSS_ACK_REJECTED,
    FTSS_ACK_STATUS,
    FTSS_ACK_STORED_BEST_EFFORT,
    FTSS_ACK_STORED_GUARANTEED,
    FTSS_ACK_UNDELIVERABLE,
    FTSS_ALIGN,
    FTSS_FC_TYPE,
    FTSS_FILE_BAD_REQUEST,
    FTSS_FILE_DENIED,
    FTSS_FILE_EXISTS,
    FTSS_FILE_IO_ERROR,
    FTSS_FILE_NO_SPACE,
    FTSS_FILE_NOT_FOUND,
    FTSS_FILE_OK,
    FTSS_FILE_STATUS,
    FTSS_FLAG_ALTPATH,
    FTSS_FLAGS,
    FTSS_HDR_LEN,
    FTSS_HOLD_TIME,
    FTSS_NODE_DOWN,
    FTSS_NODE_DRAINING,
    FTSS_NODE_MAINTENANCE,
    FTSS_NODE_STATES,
    FTSS_NODE_UP,
    FTSS_OP_ACK,
    FTSS_OP_DELETE,
    FTSS_OP_FILE_CLASS,
    FTSS_OP_FILE_MASK,
    FTSS_OP_HELLO,
    FTSS_OP_LIST,
    FTSS_OP_PKT,
    FTSS_OP_READ,
    FTSS_OP_RESPONSE,
    FTSS_OP_STATUS,
    FTSS_OP_WRITE,
    FTSS_OPCODES,
    FTSS_PKT_BROADCAST,
    FTSS_PKT_EXTERNAL,
    FTSS_PKT_FLAGS,
    FTSS_PKT_RETRANSMIT,
    FTSS_PKT_ROLLBACK,
    FTSS_REASON_BAD_LENGTH,
    FTSS_REASON_BAD_VERSION,
    FTSS_REASON_DEST_DOWN,
    FTSS_REASON_DEST_UNKNOWN,
    FTSS_REASON_MALFORMED,
    FTSS_REASON_NONE,
    FTSS_REASON_OVERSIZE,
    FTSS_REASON_STORE_FULL,
    FTSS_REASON_UNKNOWN_OPCODE,
    FTSS_VERSION,
    FTSS_WRITE_CREATE,
    FTSS_WRITE_FLAGS,
    FTSS_WRITE_SYNC,
)

from .fc import FC


def _filename_fields():
    """A 16-bit length-prefixed file name: ``name_len`` then ``filename``."""
    return [
        FieldLenField("name_len", None, length_of="filename", fmt="!H"),
        StrLenField("filename", b"", length_from=lambda pkt: pkt.name_len),
    ]


class FTSS(Packet):
    """Common header; ``length`` counts header + body + payload, not padding."""

    name = "FTSS"
    fields_desc = [
        BitField("version", FTSS_VERSION, 4),
        FlagsField("flags", 0, 4, FTSS_FLAGS),
        ByteEnumField("opcode", 0, FTSS_OPCODES),
        ShortField("length", None),
    ]

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        """Bytes too short for the header are not an FTSS message: give Raw."""
        if _pkt is not None and len(_pkt) < FTSS_HDR_LEN:
            return conf.raw_layer
        return cls

    def post_build(self, p, pay):
        if self.length is not None:
            return p + pay
        total = len(p) + len(pay)
        p = p[:2] + struct.pack("!H", total & 0xFFFF) + p[4:]
        return p + pay + b"\x00" * (-total % FTSS_ALIGN)

    def extract_padding(self, s):
        body = max(self.length - FTSS_HDR_LEN, 0)
        return s[:body], s[body:]

    def mysummary(self):
        return self.sprintf("FTSS v%version% %opcode% len=%length%")


class FTSSPacket(Packet):
    """PKT: a network frame handed to the FTSS for stored, routed delivery."""

    name = "FTSS Network Packet"
    fields_desc = [
        XLongField("msg_id", 0),
        XIntField("src_node", 0),
        FlagsField("pkt_flags", 0, 16, FTSS_PKT_FLAGS),
        # seconds to keep the packet in the packet queue after delivery (claim 5)
        ShortField("retention", 0),
    ]

    def hashret(self):
        return struct.pack("!Q", self.msg_id)

    def mysummary(self):
        return self.sprintf("FTSS PKT id=%msg_id% ") + f"{len(self.payload)}B"


class FTSSAck(Packet):
    """ACK: the answer to the PKT with the same ``msg_id`` and to the ``more`` PKTs of the
    same sender after it (consecutive msg ids, one verdict: FC's ACK_N)."""

    name = "FTSS Acknowledgment"
    fields_desc = [
        XLongField("msg_id", 0),
        XIntField("node_id", 0),  # the acknowledging node: FTSS or destination
        ByteEnumField("status", FTSS_ACK_STORED_GUARANTEED, FTSS_ACK_STATUS),
        ByteEnumField("reason", FTSS_REASON_NONE, FTSS_ACK_REASONS),
        ShortField("more", 0),
    ]

    def hashret(self):  # the first msg id: sr() pairs a range with its first PKT only
        return struct.pack("!Q", self.msg_id)

    def answers(self, other):
        return (isinstance(other, FTSSPacket)
                and self.msg_id <= other.msg_id <= self.msg_id + self.more)

    def messages(self):
        """The PKTs it answers (a scenario's ``received:`` counts it as that many)."""
        return self.more + 1

    def mysummary(self):
        s = self.sprintf("FTSS ACK id=%msg_id%") + (f" +{self.more}" if self.more else "")
        s += self.sprintf(" %status%")
        return s if self.reason == FTSS_REASON_NONE else s + self.sprintf(" (%reason%)")


class FTSSHello(Packet):
    """HELLO: a node announces itself and the MAC addresses it serves."""

    name = "FTSS Node Hello"
    kind = "HELLO"
    fields_desc = [
        XIntField("node_id", 0),
        ShortField("seq", 0),
        ByteEnumField("state", FTSS_NODE_UP, FTSS_NODE_STATES),
        ByteField("port", 0),  # fibre channel port 134 the node is attached to
        ShortField("hold_time", FTSS_HOLD_TIME),
        FieldLenField("mac_count", None, count_of="macs", fmt="!H"),
        FieldListField(
            "macs", [], MACField("mac", "00:00:00:00:00:00"), count_from=lambda pkt: pkt.mac_count
        ),
    ]

    def hashret(self):
        return struct.pack("!IH", self.node_id, self.seq)

    def mysummary(self):
        head = self.sprintf(f"FTSS {self.kind} node=%node_id% %state% port=%port%")
        return f"{head} {len(self.macs)} MACs"


class FTSSStatus(FTSSHello):
    """STATUS: routing table 146's entry for a node, sent by the FTSS.

    It answers the HELLO with the same ``node_id`` and ``seq``; the FTSS also
    sends it unsolicited when a node's state changes.
    """

    name = "FTSS Node Status"
    kind = "STATUS"

    def answers(self, other):
        return type(other) is FTSSHello and (other.node_id, other.seq) == (self.node_id, self.seq)


class FTSSFileRequest(Packet):
    """Base of the file I/O requests; ``req_id`` pairs a request with its RESPONSE."""

    opcode = 0

    def hashret(self):
        return struct.pack("!I", self.req_id)

    def mysummary(self):
        return f"FTSS {FTSS_OPCODES[self.opcode]} req={self.req_id:#x} {self.filename!r}"


class FTSSWrite(FTSSFileRequest):
    name = "FTSS File Write"
    opcode = FTSS_OP_WRITE
    fields_desc = [
        XIntField("req_id", 0),
        LongField("offset", 0),
        FlagsField("wflags", FTSS_WRITE_CREATE, 16, FTSS_WRITE_FLAGS),
        FieldLenField("name_len", None, length_of="filename", fmt="!H"),
        FieldLenField("data_len", None, length_of="data", fmt="!I"),
        StrLenField("filename", b"", length_from=lambda pkt: pkt.name_len),
        StrLenField("data", b"", length_from=lambda pkt: pkt.data_len),
    ]

    def mysummary(self):
        return f"{super().mysummary()} {len(self.data)}B"


class FTSSRead(FTSSFileRequest):
    name = "FTSS File Read"
    opcode = FTSS_OP_READ
    fields_desc = [
        XIntField("req_id", 0),
        LongField("offset", 0),
        IntField("count", 0),
        *_filename_fields(),
    ]


class FTSSList(FTSSFileRequest):
    name = "FTSS File List"
    opcode = FTSS_OP_LIST
    fields_desc = [XIntField("req_id", 0), *_filename_fields()]


class FTSSDelete(FTSSFileRequest):
    name = "FTSS File Delete"
    opcode = FTSS_OP_DELETE
    fields_desc = [XIntField("req_id", 0), *_filename_fields()]


class FTSSFileName(Packet):
    """One entry of a LIST response's name list."""

    name = "FTSS File Name"
    fields_desc = _filename_fields()

    def extract_padding(self, s):
        return b"", s


class FTSSFileResponse(Packet):
    """RESPONSE: outcome of a file request; READ data or LIST names follow."""

    name = "FTSS File Response"
    fields_desc = [
        XIntField("req_id", 0),
        ByteEnumField("status", FTSS_FILE_OK, FTSS_FILE_STATUS),
        ByteEnumField("op", FTSS_OP_READ, FTSS_OPCODES),  # opcode of the request
        ShortField("data_len", None),  # bytes of data, or of the name list
        ConditionalField(
            StrLenField("data", b"", length_from=lambda pkt: pkt.data_len),
            lambda pkt: pkt.op != FTSS_OP_LIST,
        ),
        ConditionalField(
            PacketListField("names", [], FTSSFileName, length_from=lambda pkt: pkt.data_len),
            lambda pkt: pkt.op == FTSS_OP_LIST,
        ),
    ]

    def post_build(self, p, pay):
        if self.data_len is None:
            p = p[:6] + struct.pack("!H", (len(p) - 8) & 0xFFFF) + p[8:]
        return p + pay

    def hashret(self):
        return struct.pack("!I", self.req_id)

    def answers(self, other):
        return (
            isinstance(other, FTSSFileRequest)
            and other.opcode == self.op
            and other.req_id == self.req_id
        )

    def mysummary(self):
        s = self.sprintf("FTSS RESPONSE req=%req_id% %op% %status%")
        if self.op == FTSS_OP_LIST:
            return f"{s} {len(self.names)} names"
        return f"{s} {len(self.data)}B"


bind_layers(FC, FTSS, type=FTSS_FC_TYPE)
bind_layers(FTSS, FTSSPacket, opcode=FTSS_OP_PKT)
bind_layers(FTSS, FTSSAck, opcode=FTSS_OP_ACK)
bind_layers(FTSS, FTSSHello, opcode=FTSS_OP_HELLO)
bind_layers(FTSS, FTSSStatus, opcode=FTSS_OP_STATUS)
bind_layers(FTSS, FTSSWrite, opcode=FTSS_OP_WRITE)
bind_layers(FTSS, FTSSRead, opcode=FTSS_OP_READ)
bind_layers(FTSS, FTSSList, opcode=FTSS_OP_LIST)
bind_layers(FTSS, FTSSDelete, opcode=FTSS_OP_DELETE)
bind_layers(FTSS, FTSSFileResponse, opcode=FTSS_OP_RESPONSE)
bind_layers(FTSSPacket, Ether)
