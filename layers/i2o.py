# SPDX-License-Identifier: GPL-2.0-or-later
"""
I2O message frames (Intelligent I/O Architecture 1.5), as exported onto a SAN.

Seed 001 (Intel, "exporting local device access onto a system area network
using a direct-call interface") has a host's IOP access module accept "an
inbound message frame from a remote server" and hand it to the local IOP,
then send the IOP's "outgoing message frame ... out the service connection"
(Figs. 5 and 6).  The frames themselves are the I2O ones; their layout follows
Linux's ``include/linux/i2o.h`` (``struct i2o_message``, all little-endian)
and the Random Block Storage class messages of the I2O specification:

* ``I2OMessage`` -- the four-word standard header: VersionOffset, MsgFlags,
  MessageSize (32-bit words), TID:12 / InitiatorAddress:12 / Function:8 packed
  in one LE u32, InitiatorContext, TransactionContext.
* ``I2OReply`` -- single reply body (DetailedStatusCode, ReqStatus); the
  MsgFlags reply bit tells it apart from a request.
* ``I2OBlockRead`` / ``I2OBlockWrite`` / ``I2OBlockCacheFlush`` and the BSA
  reply payload ``I2OBlockReply``.
* ``I2OPrivate`` -- word 4 of a Private (0xFF) frame: XFunctionCode and
  OrganizationID, I2O's vendor extension; under ftsslab's OrganizationID the
  Connection Manager's messages follow (below).
* Scatter-gather elements: ``I2OSGESimple`` (32-bit address),
  ``I2OSGESimple64`` (after an ``I2OSGEAttributes`` element that turns on
  64-bit addressing, as Linux emits ``0x7C020002``) and our extension
  ``I2OSGERemote``: a buffer on another SAN node named by 64-bit virtual
  address and RKey (seed 003's memory windows), flagged with the address mode
  the I2O 1.5 SGL truth table lists as INVALID (chain pointer + DIR, 0x34).

Context-field swap (seed 001, steps 530 and 650): the host saves the inbound
frame's context, gives the IOP its own, and puts the saved one back in the
outgoing reply, so on the SAN a reply carries exactly the InitiatorContext and
TransactionContext of its request: ``answers()`` pairs on those.

Connection Manager (seed 001 L198: messages "based on a protocol specified by
the network used and/or the Intelligent I/O Architecture"; decision D1.5): a
remote server says ``I2OCMHello``, the host answers with ``I2OCMAdvertise`` (its
IOPs and their block devices, ``I2OCMIOP`` / ``I2OCMDevice``) and sends it again
whenever the set changes; ``I2OCMConnect`` / ``I2OCMConnectReply`` set up a
service connection (its id and queue pairs), ``I2OCMDisconnect`` /
``I2OCMDisconnectReply`` tear it down.  All are private frames under
``FTSSLAB_ORGANIZATION_ID``; a reply has the REPLY flag, the request's
XFunctionCode and contexts.

Carriers: UDP port ``I2O_UDP_PORT`` and the payload of a RoCE SEND
(``layers/roce.py``'s ``register_send_payload`` with ``looks_like_i2o``).
"""

import struct

from scapy.fields import (
    BitEnumField,
    BitField,
    ByteEnumField,
    ByteField,
    ConditionalField,
    FlagsField,
    LEIntField,
    LELongField,
    LEShortEnumField,
    LEShortField,
    LEThreeBytesField,
    MultiEnumField,
    PacketListField,
    StrFixedLenField,
    XByteField,
    XLEIntField,
    XLELongField,
    XLEShortField,
)
from scapy.layers.inet import UDP
from scapy.packet import Packet, Raw, bind_bottom_up, bind_layers

# Every number (UDP port, MsgFlags, function codes the layers dispatch on, SGL
# flags) is defined once in the fast module, which cannot import Scapy.
from ftsslab.fast.i2o import (  # noqa: F401  (the numbers and names, importable here too)
    BSA_CTL_FLAG_NAMES,
    BSA_READ_FLAG_NAMES,
    BSA_WRITE_FLAG_NAMES,
    CM_ADVERTISE,
    CM_BODIES,
    CM_CONNECT,
    CM_DEVICE_LEN,
    CM_DISCONNECT,
    CM_FUNCTIONS,
    CM_HELLO,
    CM_IOP_LEN,
    CM_NAME_LEN,
    CM_STATUS_NAMES,
    FTSSLAB_ORGANIZATION_ID,
    I2O_BSA_BLOCK_READ,
    I2O_BSA_BLOCK_WRITE,
    I2O_BSA_CACHE_FLUSH,
    I2O_BSA_DSC,
    I2O_BSA_FUNCTIONS,
    I2O_BSA_SGL_OFFSET,
    I2O_DSC,
    I2O_EXEC_FUNCTIONS,
    I2O_FUNCTIONS,
    I2O_HEADER_LEN,
    I2O_HEADER_WORDS,
    I2O_OTHER_FUNCTIONS,
    I2O_PRIVATE,
    I2O_REPLY_ERRORS,
    I2O_REPLY_STATUS,
    I2O_UDP_PORT,
    I2O_UTIL_FUNCTIONS,
    I2OVERSION,
    MSG_FAIL,
    MSG_FLAG_NAMES,
    MSG_REPLY,
    MSG_RESERVED,
    SGE_REMOTE_LAST,
    SGE_SIMPLE_LAST,
    SGE_SIZE,
    SGL_ATTR_64BIT_ADDRESS,
    SGL_ATTR_FLAG_NAMES,
    SGL_ATTRIBUTES,
    SGL_FLAG_NAMES,
    SGL_FLAGS_LAST,
    sge_kind,
)

from .roce import register_send_payload

# MsgFlags (the high byte of Linux's 16-bit MSG_* values, e.g. MSG_REPLY 0x8000)



class _OptionalNibble(BitField):
    """A 4-bit field that may be left None; ``post_build`` then fills it in."""

    def i2m(self, pkt, x):
        return 0 if x is None else x


def _is_bsa(pkt):
    under = pkt.underlayer
    return isinstance(under, I2OMessage) and under.function in I2O_BSA_FUNCTIONS


class I2OMessage(Packet):
    """Standard I2O message frame header (``struct i2o_message``).

    The TID/InitiatorAddress/Function word is one LE u32 whose C bitfields put
    TargetAddress in bits 0-11; Scapy reads LE bit groups after reversing the
    four bytes, hence the field order Function, InitiatorAddress, TargetAddress.
    """

    name = "I2O Message"
    fields_desc = [
        _OptionalNibble("sgl_offset", None, 4),
        BitField("version", I2OVERSION, 4),
        FlagsField("msg_flags", 0, 8, MSG_FLAG_NAMES),
        LEShortField("msg_size", None),
        BitEnumField("function", 0, 8, I2O_FUNCTIONS, tot_size=-4),
        BitField("initiator_tid", 1, 12),
        BitField("target_tid", 0, 12, end_tot_size=-4),
        XLEIntField("initiator_context", 0),
        XLEIntField("transaction_context", 0),
    ]

    def do_dissect(self, s):
        # A frame shorter than its header is kept whole as a Raw payload
        # rather than raising half-way through the fields.
        if len(s) < I2O_HEADER_LEN:
            self.raw_packet_cache = b""
            self.raw_packet_cache_fields = {}
            self.explicit = 1
            return s
        return super().do_dissect(s)

    def post_build(self, p, pay):
        frame = p + pay
        if self.msg_size is None:
            frame += b"\x00" * (-len(frame) % 4)
            frame = frame[:2] + struct.pack("<H", len(frame) // 4) + frame[4:]
        if self.sgl_offset is None:
            off = I2O_BSA_SGL_OFFSET if isinstance(self.payload, _I2OBlockRW) else 0
            frame = bytes([off << 4 | frame[0] & 0x0F]) + frame[1:]
        return frame

    def extract_padding(self, s):
        if self.msg_size is None or "transaction_context" not in self.fields:
            return s, b""
        body = max(self.msg_size * 4 - I2O_HEADER_LEN, 0)
        return s[:body], s[body:]

    def guess_payload_class(self, payload):
        if "transaction_context" not in self.fields:
            return Raw
        if self.msg_flags & MSG_REPLY:
            # The failure reply (MSG_FAIL) carries the rejected frame's
            # preserved header instead of a status word: left as Raw.
            if self.msg_flags & MSG_FAIL:
                return Raw
        elif self.msg_flags & MSG_FAIL:
            return Raw if self.function == I2O_PRIVATE else _REQUEST_BODIES.get(self.function, Raw)
        if self.function == I2O_PRIVATE:
            return I2OPrivate
        return I2OReply if self.msg_flags & MSG_REPLY else _REQUEST_BODIES.get(self.function, Raw)

    def hashret(self):
        return struct.pack("<BII", self.function, self.initiator_context,
                           self.transaction_context) + self.payload.hashret()

    def answers(self, other):
        """A reply answers the request whose contexts it carries back (seed 001, Fig. 6);
        a private one also needs the request's XFunctionCode."""
        return (isinstance(other, I2OMessage)
                and bool(self.msg_flags & MSG_REPLY)
                and not other.msg_flags & MSG_REPLY
                and self.function == other.function
                and self.initiator_context == other.initiator_context
                and self.transaction_context == other.transaction_context
                and (self.function != I2O_PRIVATE or self.payload.answers(other.payload)))

    def mysummary(self):
        if self.raw_packet_cache == b"":
            return "I2O truncated frame"
        kind = "reply" if self.msg_flags & MSG_REPLY else "request"
        return self.sprintf(
            f"I2O %function% {kind} %initiator_tid%->%target_tid% "
            "ictx=%initiator_context% tctx=%transaction_context%"
        )


class I2OReply(Packet):
    """Single reply frame body: the status word (``msg->body[0]`` in Linux)."""

    name = "I2O Reply"
    fields_desc = [
        MultiEnumField("detailed_status", 0, {0: I2O_DSC, 1: I2O_BSA_DSC},
                       depends_on=lambda pkt: int(_is_bsa(pkt)), fmt="<H"),
        ByteField("reserved", 0),  # RetryCount in BSA replies
        ByteEnumField("req_status", 0, I2O_REPLY_STATUS),
    ]

    def guess_payload_class(self, payload):
        if _is_bsa(self) and len(payload) >= 4:
            return I2OBlockReply
        return Raw

    def mysummary(self):
        return self.sprintf("I2O reply %req_status% (%detailed_status%)")


class I2OBlockReply(Packet):
    """BSA success/error reply payload: TransferCount (+ failing address on error)."""

    name = "I2O BSA Block Reply"
    fields_desc = [
        LEIntField("transfer_count", 0),
        ConditionalField(
            XLELongField("error_address", 0),
            lambda pkt: isinstance(pkt.underlayer, I2OReply)
            and pkt.underlayer.req_status in I2O_REPLY_ERRORS,
        ),
    ]

    def mysummary(self):
        return self.sprintf("I2O BSA transferred %transfer_count% bytes")


class _I2OSGElement(Packet):
    """Base of every scatter-gather element: sits inside a PacketListField."""

    def extract_padding(self, s):
        return b"", s


class I2OSGESimple(_I2OSGElement):
    """Simple address element: FlagsCount word + 32-bit physical address."""

    name = "I2O SGL Simple Element"
    fields_desc = [
        LEThreeBytesField("count", 0),
        FlagsField("flags", SGE_SIMPLE_LAST, 8,
                   SGL_FLAG_NAMES),
        XLEIntField("address", 0),
    ]

    def mysummary(self):
        return self.sprintf("SGE %count% bytes @%address%")


class I2OSGESimple64(I2OSGESimple):
    """Simple address element with a 64-bit address (after the 64-bit attribute)."""

    name = "I2O SGL Simple Element 64-bit"
    fields_desc = I2OSGESimple.fields_desc[:2] + [XLELongField("address", 0)]


class I2OSGEAttributes(_I2OSGElement):
    """SGL attributes element; Linux's ``0x7C020002`` turns on 64-bit addresses."""

    name = "I2O SGL Attributes Element"
    fields_desc = [
        FlagsField("attribute_flags", SGL_ATTR_64BIT_ADDRESS, -16, SGL_ATTR_FLAG_NAMES),
        ByteField("element_length", 2),  # in 32-bit words
        XByteField("flags", SGL_ATTRIBUTES),
        LEIntField("page_frame_size", 4096),
    ]


class I2OSGERemote(_I2OSGElement):
    """ftsslab extension: a buffer on another SAN node (seed 003 RKey access).

    Count is the buffer length; the IOP access module moves the data with RDMA
    to/from ``virtual_address`` under ``rkey`` instead of local DMA.
    """

    name = "I2O SGL Remote Buffer Element"
    fields_desc = [
        LEThreeBytesField("count", 0),
        FlagsField("flags", SGE_REMOTE_LAST, 8,
                   SGL_FLAG_NAMES),
        XLELongField("virtual_address", 0),
        XLEIntField("rkey", 0),
    ]

    def mysummary(self):
        return self.sprintf("SGE remote %count% bytes @%virtual_address% rkey=%rkey%")


SGE_CLASSES = {c.__name__: c for c in
               (I2OSGESimple, I2OSGESimple64, I2OSGEAttributes, I2OSGERemote)}


def _next_sge(pkt, lst, cur, remain):
    """The SGL runs until the element flagged LAST (or bytes run out)."""
    if cur is not None and int(getattr(cur, "flags", 0)) & SGL_FLAGS_LAST:
        return None
    if len(remain) < 4:
        return None
    addr64 = any(isinstance(e, I2OSGEAttributes)
                 and e.attribute_flags & SGL_ATTR_64BIT_ADDRESS
                 for e in [*lst, cur] if e is not None)
    kind = sge_kind(remain[3], addr64)
    if kind is None or len(remain) < SGE_SIZE[kind]:
        return None
    return SGE_CLASSES[kind]


class _I2OBlockRW(Packet):
    """BSA block read/write body: flags, timing, byte count, LBA, then the SGL."""

    def post_build(self, p, pay):
        if self.byte_count is None:
            total = sum(e.count for e in self.sgl if not isinstance(e, I2OSGEAttributes))
            p = p[:4] + struct.pack("<I", total) + p[8:]
        return p + pay

    def mysummary(self):
        return self.sprintf(f"{self.name} %byte_count% bytes @%byte_address%")


class I2OBlockRead(_I2OBlockRW):
    name = "I2O BSA Block Read"
    fields_desc = [
        FlagsField("control_flags", 0, -16, BSA_READ_FLAG_NAMES),
        ByteField("time_multiplier", 1),
        ByteField("fetch_ahead", 0),
        LEIntField("byte_count", None),
        XLELongField("byte_address", 0),
        PacketListField("sgl", [], next_cls_cb=_next_sge),
    ]


class I2OBlockWrite(_I2OBlockRW):
    name = "I2O BSA Block Write"
    fields_desc = [
        FlagsField("control_flags", 0, -16, BSA_WRITE_FLAG_NAMES),
        ByteField("time_multiplier", 1),
        ByteField("reserved", 0),
        LEIntField("byte_count", None),
        XLELongField("byte_address", 0),
        PacketListField("sgl", [], next_cls_cb=_next_sge),
    ]


class I2OBlockCacheFlush(Packet):
    name = "I2O BSA Cache Flush"
    fields_desc = [
        FlagsField("control_flags", 0, -16, BSA_CTL_FLAG_NAMES),
        ByteField("time_multiplier", 1),
        ByteField("reserved", 0),
    ]

    def mysummary(self):
        return self.sprintf("I2O BSA cache flush (time multiplier %time_multiplier%)")


_REQUEST_BODIES = {
    I2O_BSA_BLOCK_READ: I2OBlockRead,
    I2O_BSA_BLOCK_WRITE: I2OBlockWrite,
    I2O_BSA_CACHE_FLUSH: I2OBlockCacheFlush,
}


# ---------------------------------------------------------------- private frames and the CM
def _is_reply(pkt) -> bool:
    under = pkt.underlayer
    return isinstance(under, I2OMessage) and bool(under.msg_flags & MSG_REPLY)


def _ours(pkt) -> int:
    return int(pkt.organization_id == FTSSLAB_ORGANIZATION_ID)


class I2OPrivate(Packet):
    """Word 4 of a Private message (Function 0xFF): the vendor's XFunctionCode and its
    OrganizationID.  XFunctionCode names are ftsslab's only under ftsslab's id."""

    name = "I2O Private"
    fields_desc = [
        MultiEnumField("xfunction", 0, {0: {}, 1: CM_FUNCTIONS}, depends_on=_ours,
                       fmt="<H"),
        XLEShortField("organization_id", FTSSLAB_ORGANIZATION_ID),
    ]

    def guess_payload_class(self, payload):
        known = CM_BODIES.get((self.xfunction, _is_reply(self)))
        if not _ours(self) or known is None or len(payload) < known[1]:
            return Raw
        return _CM_CLASSES[known[0]]

    def hashret(self):
        return struct.pack("<HH", self.xfunction, self.organization_id)

    def answers(self, other):
        return (isinstance(other, I2OPrivate) and self.xfunction == other.xfunction
                and self.organization_id == other.organization_id)

    def mysummary(self):
        if _ours(self):
            return CM_FUNCTIONS.get(self.xfunction, f"CM XFunctionCode 0x{self.xfunction:04x}")
        return f"I2O private 0x{self.xfunction:04x} of organization 0x{self.organization_id:04x}"


def _cm_name(value: bytes) -> str:
    return value.split(b"\x00", 1)[0].decode("ascii", "backslashreplace")


class I2OCMHello(Packet):
    """Remote server -> host: who is asking (the host answers with its advertisement)."""

    name = "I2O CM Hello"
    fields_desc = [StrFixedLenField("remote", b"", CM_NAME_LEN)]

    def mysummary(self):
        return f"CM_HELLO from {_cm_name(self.remote)}"


class _CMElement(Packet):
    """A list element of the advertisement: the rest of the bytes go back to the list."""

    def extract_padding(self, s):
        return b"", s


class I2OCMDevice(_CMElement):
    """One block device of an IOP: its TID, block size and capacity in bytes."""

    name = "I2O CM Device"
    fields_desc = [
        LEShortField("tid", 0),
        LEShortField("reserved", 0),
        LEIntField("block_size", 512),
        LELongField("capacity", 0),
    ]

    def mysummary(self):
        return self.sprintf("TID %tid%: %capacity% bytes in %block_size%-byte blocks")


def _counted(cls, size, count, lst, cur, remain):
    """Elements while the count and the bytes last (the fast parser stops the same way);
    Scapy's ``lst`` does not hold ``cur`` yet."""
    done = len(lst) + (cur is not None)
    return cls if done < count and len(remain) >= size else None


def _next_device(pkt, lst, cur, remain):
    count = len(pkt.devices) if pkt.device_count is None else pkt.device_count
    return _counted(I2OCMDevice, CM_DEVICE_LEN, count, lst, cur, remain)


class I2OCMIOP(_CMElement):
    """One IOP available for external use, and its devices (seed 001 L198)."""

    name = "I2O CM IOP"
    fields_desc = [
        LEShortField("iop_id", 0),
        LEShortField("device_count", None),
        PacketListField("devices", [], next_cls_cb=_next_device, max_count=0xFFFF),
    ]

    def post_build(self, p, pay):
        if self.device_count is None:
            p = p[:2] + struct.pack("<H", len(self.devices)) + p[4:]
        return p + pay

    def mysummary(self):
        return self.sprintf("IOP %iop_id%: ") + f"{len(self.devices)} devices"


def _next_iop(pkt, lst, cur, remain):
    count = len(pkt.iops) if pkt.iop_count is None else pkt.iop_count
    return _counted(I2OCMIOP, CM_IOP_LEN, count, lst, cur, remain)


class I2OCMAdvertise(Packet):
    """Host -> remote server: the host's IOPs for external use, after a hello and whenever
    the set changes (an IOP fails or comes back)."""

    name = "I2O CM Advertise"
    fields_desc = [
        StrFixedLenField("host", b"", CM_NAME_LEN),
        LEShortField("iop_count", None),
        LEShortField("reserved", 0),
        PacketListField("iops", [], next_cls_cb=_next_iop, max_count=0xFFFF),
    ]

    def post_build(self, p, pay):
        if self.iop_count is None:
            p = p[:CM_NAME_LEN] + struct.pack("<H", len(self.iops)) + p[CM_NAME_LEN + 2:]
        return p + pay

    def mysummary(self):
        return f"CM_ADVERTISE from {_cm_name(self.host)}: {len(self.iops)} IOPs"


class I2OCMConnect(Packet):
    """Remote server -> host: open a service connection to one IOP."""

    name = "I2O CM Connect"
    fields_desc = [LEShortField("iop_id", 0), LEShortField("reserved", 0)]

    def mysummary(self):
        return self.sprintf("CM_CONNECT iop %iop_id%")


class I2OCMConnectReply(Packet):
    """The service connection's id and the queue pairs its messages and data use."""

    name = "I2O CM Connect Reply"
    fields_desc = [
        LEShortEnumField("status", 0, CM_STATUS_NAMES),
        LEShortField("reserved", 0),
        LEIntField("conn_id", 0),
        XLEIntField("message_qpn", 0),
        XLEIntField("data_qpn", 0),
    ]

    def mysummary(self):
        return self.sprintf("CM_CONNECT reply %status% conn %conn_id%")


class I2OCMDisconnect(Packet):
    name = "I2O CM Disconnect"
    fields_desc = [LEIntField("conn_id", 0)]

    def mysummary(self):
        return self.sprintf("CM_DISCONNECT conn %conn_id%")


class I2OCMDisconnectReply(Packet):
    name = "I2O CM Disconnect Reply"
    fields_desc = [LEShortEnumField("status", 0, CM_STATUS_NAMES), LEShortField("reserved", 0)]

    def mysummary(self):
        return self.sprintf("CM_DISCONNECT reply %status%")


_CM_CLASSES = {c.__name__: c for c in (I2OCMHello, I2OCMAdvertise, I2OCMConnect,
                                       I2OCMConnectReply, I2OCMDisconnect,
                                       I2OCMDisconnectReply)}


def looks_like_i2o(payload: bytes) -> bool:
    """Whether a RoCE SEND payload is plausibly one I2O frame.

    Version nibble 1, a size of at least the header that fits the payload, a
    known function, no reserved MsgFlags bits, and an SGL offset inside it.
    """
    if len(payload) < I2O_HEADER_LEN:
        return False
    vo, flags, size, word1 = struct.unpack_from("<BBHI", payload)
    sgl_offset = vo >> 4
    return (vo & 0x0F == I2OVERSION
            and not flags & MSG_RESERVED
            and I2O_HEADER_WORDS <= size
            and size * 4 <= len(payload)
            and word1 >> 24 in I2O_FUNCTIONS
            and (sgl_offset == 0 or I2O_HEADER_WORDS <= sgl_offset < size))


bind_layers(UDP, I2OMessage, sport=I2O_UDP_PORT, dport=I2O_UDP_PORT)
bind_bottom_up(UDP, I2OMessage, sport=I2O_UDP_PORT)
bind_bottom_up(UDP, I2OMessage, dport=I2O_UDP_PORT)
register_send_payload(I2OMessage, looks_like_i2o)
