"""Fast parser and builders for FTSS messages (see ``layers/ftss.py``).

``parse_ftss`` returns the Scapy field names and values of the header and the
body (``FlagsField``/enum values as ints, MACs as ``"aa:bb:.."`` strings, names
as bytes; a LIST response's ``names`` is the list of the entries' ``filename``
values); a PKT's inner frame is ``"payload"``.  It returns None, never raises,
for bytes that are not one well-formed message.  The builders give exactly the
bytes Scapy builds.  No Scapy import here: this is the forwarding hot path.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple, TypeVar

from ftsslab.fast import fc as _fc

# The wire numbers of FTSS, defined here only (ftsslab.layers.ftss and ftss.lua use them).
FTSS_FC_TYPE = 0xE0  # FC TYPE: first vendor-unique value (0xE0-0xFF)
FTSS_VERSION = 1
FTSS_HDR_LEN = 4
FTSS_ALIGN = 4  # messages are padded to 32-bit boundaries

# Opcodes: high nibble 0 = network (routing agent 144), 1 = file I/O (unit 138).
FTSS_OP_PKT = 0x01
FTSS_OP_ACK = 0x02
FTSS_OP_HELLO = 0x03
FTSS_OP_STATUS = 0x04
FTSS_OP_WRITE = 0x10
FTSS_OP_READ = 0x11
FTSS_OP_LIST = 0x12
FTSS_OP_DELETE = 0x13
FTSS_OP_RESPONSE = 0x14
FTSS_OP_FILE_MASK = 0xF0  # opcode & mask == FTSS_OP_FILE_CLASS -> file I/O
FTSS_OP_FILE_CLASS = 0x10

FTSS_OPCODES = {
    FTSS_OP_PKT: "PKT",
    FTSS_OP_ACK: "ACK",
    FTSS_OP_HELLO: "HELLO",
    FTSS_OP_STATUS: "STATUS",
    FTSS_OP_WRITE: "WRITE",
    FTSS_OP_READ: "READ",
    FTSS_OP_LIST: "LIST",
    FTSS_OP_DELETE: "DELETE",
    FTSS_OP_RESPONSE: "RESPONSE",
}

# Header flags (4 bits, LSB first): ALTPATH = sent on the redundant interface
# after the primary one failed ("retransmit the packet on the other interface").
FTSS_FLAGS = ["ALTPATH", "RSV1", "RSV2", "RSV3"]
FTSS_FLAG_ALTPATH = 0x1

# PKT flags (16 bits, LSB first).
FTSS_PKT_FLAGS = ["BROADCAST", "RETRANSMIT", "EXTERNAL", "ROLLBACK"]
FTSS_PKT_BROADCAST = 0x1  # "take both the EXTERNAL and FTSS branches" (block 158)
FTSS_PKT_RETRANSMIT = 0x2  # same msg_id sent again (redundant device/subsystem)
FTSS_PKT_EXTERNAL = 0x4  # came in from external network 96 (Fig. 8)
FTSS_PKT_ROLLBACK = 0x8  # re-retrieved from the packet queue to rebuild a dialog

# ACK status: each value is one acknowledgment of Figs. 7A/7B.
FTSS_ACK_STORED_GUARANTEED = 1  # block 174
FTSS_ACK_STORED_BEST_EFFORT = 2  # block 160, external destination
FTSS_ACK_UNDELIVERABLE = 3  # block 170
FTSS_ACK_DELIVERED = 4  # block 178, destination's receipt
FTSS_ACK_REJECTED = 5  # FTSS refused to store the message (reason says why)
FTSS_ACK_STATUS = {
    FTSS_ACK_STORED_GUARANTEED: "STORED_GUARANTEED",
    FTSS_ACK_STORED_BEST_EFFORT: "STORED_BEST_EFFORT",
    FTSS_ACK_UNDELIVERABLE: "UNDELIVERABLE",
    FTSS_ACK_DELIVERED: "DELIVERED",
    FTSS_ACK_REJECTED: "REJECTED",
}

# ACK reason: 0x0_ = REJECTED reasons, 0x1_ = UNDELIVERABLE reasons.
FTSS_REASON_NONE = 0x00
FTSS_REASON_MALFORMED = 0x01
FTSS_REASON_UNKNOWN_OPCODE = 0x02
FTSS_REASON_OVERSIZE = 0x03
FTSS_REASON_STORE_FULL = 0x04
FTSS_REASON_BAD_LENGTH = 0x05
FTSS_REASON_BAD_VERSION = 0x06
FTSS_REASON_DEST_DOWN = 0x10  # block 168 "NO": powered down, maintenance
FTSS_REASON_DEST_UNKNOWN = 0x11  # not in routing table 146 and no external port
FTSS_ACK_REASONS = {
    FTSS_REASON_NONE: "NONE",
    FTSS_REASON_MALFORMED: "MALFORMED",
    FTSS_REASON_UNKNOWN_OPCODE: "UNKNOWN_OPCODE",
    FTSS_REASON_OVERSIZE: "OVERSIZE",
    FTSS_REASON_STORE_FULL: "STORE_FULL",
    FTSS_REASON_BAD_LENGTH: "BAD_LENGTH",
    FTSS_REASON_BAD_VERSION: "BAD_VERSION",
    FTSS_REASON_DEST_DOWN: "DEST_DOWN",
    FTSS_REASON_DEST_UNKNOWN: "DEST_UNKNOWN",
}

MAX_MSG_ID = (1 << 64) - 1
MAX_ACK_MORE = 0xFFFF  # an ACK answers at most 65536 msg ids (its 16-bit ``more``)

FTSS_HOLD_TIME = 30  # default seconds a HELLO keeps its routing table entry valid

# Node state in routing table 146 ("status information of the destination node").
FTSS_NODE_DOWN = 0
FTSS_NODE_UP = 1
FTSS_NODE_DRAINING = 2
FTSS_NODE_MAINTENANCE = 3
FTSS_NODE_STATES = {
    FTSS_NODE_DOWN: "DOWN",
    FTSS_NODE_UP: "UP",
    FTSS_NODE_DRAINING: "DRAINING",
    FTSS_NODE_MAINTENANCE: "MAINTENANCE",
}

# WRITE flags (16 bits, LSB first).
FTSS_WRITE_FLAGS = ["CREATE", "TRUNCATE", "SYNC"]
FTSS_WRITE_CREATE = 0x1
FTSS_WRITE_TRUNCATE = 0x2
FTSS_WRITE_SYNC = 0x4  # answer only once on RAID 142, not just write cache 140

# File RESPONSE status.
FTSS_FILE_OK = 0
FTSS_FILE_NOT_FOUND = 1
FTSS_FILE_EXISTS = 2
FTSS_FILE_NO_SPACE = 3
FTSS_FILE_IO_ERROR = 4
FTSS_FILE_BAD_REQUEST = 5
FTSS_FILE_DENIED = 6
FTSS_FILE_STATUS = {
    FTSS_FILE_OK: "OK",
    FTSS_FILE_NOT_FOUND: "NOT_FOUND",
    FTSS_FILE_EXISTS: "EXISTS",
    FTSS_FILE_NO_SPACE: "NO_SPACE",
    FTSS_FILE_IO_ERROR: "IO_ERROR",
    FTSS_FILE_BAD_REQUEST: "BAD_REQUEST",
    FTSS_FILE_DENIED: "DENIED",
}

# FC header values of FTSS frames (the numbers are FC's: ftsslab.fast.fc).
FC_RCTL_DD_UNSOL_DATA = _fc.FC_RCTL_DD_UNSOL_DATA  # request and answer
FC_FCTL_SINGLE = _fc.FC_FCTL_SINGLE  # request: a one-frame sequence opening an exchange
FC_FCTL_ANSWER = _fc.FC_FCTL_EXCH_CONTEXT | _fc.FC_FCTL_LAST_SEQ | _fc.FC_FCTL_END_SEQ
"""F_CTL of an answer: it closes the request's exchange (docs/protocols.md)."""
FC_RX_ID_UNASSIGNED = _fc.FC_RX_ID_UNASSIGNED

_HDR = struct.Struct("!BBH")  # version<<4 | flags, opcode, length
_PKT = struct.Struct("!QIHH")  # msg_id, src_node, flags, retention
_ACK = struct.Struct("!QIBBH")  # msg_id, node_id, status, reason, more
_HELLO = struct.Struct("!IHBBHH")  # node_id, seq, state, port, hold_time, mac_count
_WRITE = struct.Struct("!IQHHI")  # req_id, offset, wflags, name_len, data_len
_READ = struct.Struct("!IQIH")  # req_id, offset, count, name_len
_NAMED = struct.Struct("!IH")  # req_id, name_len (LIST, DELETE)
_RESP = struct.Struct("!IBBH")  # req_id, status, op, data_len
_U16 = struct.Struct("!H")
T = TypeVar("T")


def _mac(b) -> str:
    return bytes(b).hex(":")


# ---- typed records: the one decoder; the cores read these, ``parse_ftss`` renders dicts


class Pkt(NamedTuple):
    msg_id: int
    src_node: int
    pkt_flags: int
    retention: int
    payload: memoryview  # the inner Ethernet frame


class Ack(NamedTuple):
    msg_id: int
    node_id: int
    status: int
    reason: int
    more: int  # the msg ids after msg_id that it answers too (FC's ACK_N, N - 1)

    def msg_ids(self) -> range:
        """Every msg id it answers: ``msg_id`` and the ``more`` after it."""
        return range(self.msg_id, min(self.msg_id + self.more, MAX_MSG_ID) + 1)


class Hello(NamedTuple):  # also STATUS
    node_id: int
    seq: int
    state: int
    port: int
    hold_time: int
    mac_count: int
    macs: list[str]


class Write(NamedTuple):
    req_id: int
    offset: int
    wflags: int
    name_len: int
    data_len: int
    filename: bytes
    data: bytes


class Read(NamedTuple):
    req_id: int
    offset: int
    count: int
    name_len: int
    filename: bytes


class Named(NamedTuple):  # LIST and DELETE
    req_id: int
    name_len: int
    filename: bytes


class Response(NamedTuple):
    req_id: int
    status: int
    op: int
    data_len: int
    data: bytes | None  # None for a LIST's answer, which has ``names``
    names: list[bytes] | None


class Unknown(NamedTuple):  # an opcode with no body format: the link unit rejects it
    payload: memoryview


Body = Pkt | Ack | Hello | Write | Read | Named | Response | Unknown


class Message(NamedTuple):
    """One FTSS message: the header fields and the body as a typed record."""

    version: int
    flags: int
    opcode: int
    length: int
    body: Body


def _pkt(body: memoryview) -> Pkt | None:
    if len(body) < _PKT.size:
        return None
    return Pkt(*_PKT.unpack_from(body), body[_PKT.size :])


def _ack(body: memoryview) -> Ack | None:
    return Ack(*_ACK.unpack(body)) if len(body) == _ACK.size else None


def _hello(body: memoryview) -> Hello | None:
    if len(body) < _HELLO.size:
        return None
    node_id, seq, state, port, hold_time, count = _HELLO.unpack_from(body)
    if len(body) != _HELLO.size + 6 * count:
        return None
    off = _HELLO.size
    macs = [_mac(body[off + 6 * i : off + 6 * i + 6]) for i in range(count)]
    return Hello(node_id, seq, state, port, hold_time, count, macs)


def _write(body: memoryview) -> Write | None:
    if len(body) < _WRITE.size:
        return None
    req_id, offset, wflags, nlen, dlen = _WRITE.unpack_from(body)
    if len(body) != _WRITE.size + nlen + dlen:
        return None
    return Write(req_id, offset, wflags, nlen, dlen, bytes(body[_WRITE.size : _WRITE.size + nlen]),
                 bytes(body[_WRITE.size + nlen :]))


def _read(body: memoryview) -> Read | None:
    if len(body) < _READ.size:
        return None
    req_id, offset, count, nlen = _READ.unpack_from(body)
    if len(body) != _READ.size + nlen:
        return None
    return Read(req_id, offset, count, nlen, bytes(body[_READ.size :]))


def _named(body: memoryview) -> Named | None:
    if len(body) < _NAMED.size:
        return None
    req_id, nlen = _NAMED.unpack_from(body)
    if len(body) != _NAMED.size + nlen:
        return None
    return Named(req_id, nlen, bytes(body[_NAMED.size :]))


def _response(body: memoryview) -> Response | None:
    if len(body) < _RESP.size:
        return None
    req_id, status, op, dlen = _RESP.unpack_from(body)
    if len(body) != _RESP.size + dlen:
        return None
    data = body[_RESP.size :]
    if op != FTSS_OP_LIST:
        return Response(req_id, status, op, dlen, bytes(data), None)
    names, off = [], 0
    while off < dlen:
        if off + 2 > dlen:
            return None
        (nlen,) = _U16.unpack_from(data, off)
        off += 2 + nlen
        if off > dlen:
            return None
        names.append(bytes(data[off - nlen : off]))
    return Response(req_id, status, op, dlen, None, names)


_BODY = {
    FTSS_OP_PKT: _pkt,
    FTSS_OP_ACK: _ack,
    FTSS_OP_HELLO: _hello,
    FTSS_OP_STATUS: _hello,
    FTSS_OP_WRITE: _write,
    FTSS_OP_READ: _read,
    FTSS_OP_LIST: _named,
    FTSS_OP_DELETE: _named,
    FTSS_OP_RESPONSE: _response,
}


def decode(buf: bytes | memoryview) -> Message | None:
    """One FTSS message (padding after ``length`` ignored); None if malformed.

    An unknown opcode gives an ``Unknown`` body, so the link unit can still reject it
    with UNKNOWN_OPCODE.
    """
    mv = memoryview(buf)
    if len(mv) < FTSS_HDR_LEN:
        return None
    vf, opcode, length = _HDR.unpack_from(mv)
    if length < FTSS_HDR_LEN or length > len(mv):
        return None
    parse = _BODY.get(opcode)
    body = parse(mv[FTSS_HDR_LEN:length]) if parse else Unknown(mv[FTSS_HDR_LEN:length])
    return None if body is None else Message(vf >> 4, vf & 0xF, opcode, length, body)


def parse_ftss(buf: bytes | memoryview) -> dict | None:
    """``decode`` as a dict of the Scapy field names of the header and the body (a LIST
    response's ``names``, any other response's ``data``)."""
    msg = decode(buf)
    if msg is None:
        return None
    d = {"version": msg.version, "flags": msg.flags, "opcode": msg.opcode, "length": msg.length}
    d.update((k, v) for k, v in msg.body._asdict().items()
             if not (isinstance(msg.body, Response) and v is None))
    return d


def parse_ftss_frame(frame: bytes | memoryview) -> dict | None:
    """Ether/FCoE/FC/FTSS frame -> FTSS dict with the FC dict under ``"fc"``.

    The FC CRC is not enforced here: ``d["fc"]["crc_ok"]`` tells the caller.
    """
    fcd = _fc.parse_fcoe_frame(frame)
    if fcd is None or fcd.get("type") != FTSS_FC_TYPE:
        return None
    d = parse_ftss(fcd["payload"])
    if d is not None:
        d["fc"] = fcd
    return d


def build_ftss_frame(
    dst: str,
    src: str,
    message: bytes,
    *,
    d_id: int,
    s_id: int,
    ox_id: int,
    rx_id: int = FC_RX_ID_UNASSIGNED,
    f_ctl: int = FC_FCTL_SINGLE,
    r_ctl: int = FC_RCTL_DD_UNSOL_DATA,
    seq_id: int = 0,
    seq_cnt: int = 0,
    parameter: int = 0,
) -> bytes:
    """An FTSS message (from a ``build_*``) in an Ether/FCoE/FC frame of TYPE 0xE0."""
    return _fc.build_fcoe_frame(
        dst,
        src,
        r_ctl=r_ctl,
        d_id=d_id,
        s_id=s_id,
        type=FTSS_FC_TYPE,
        f_ctl=f_ctl,
        seq_id=seq_id,
        seq_cnt=seq_cnt,
        ox_id=ox_id,
        rx_id=rx_id,
        parameter=parameter,
        payload=message,
    )


class FrameHead:
    """The frames between two MACs, built fast: the Ether + FCoE header is made once.

    ``frame`` gives exactly the bytes of ``build_ftss_frame`` with the same arguments (SOF
    i3, EOF t, R_CTL unsolicited data, no sequence or parameter; tests prove it equal):
    the cores send every FTSS frame of a link through one of these.
    """

    __slots__ = ("prefix",)

    def __init__(self, dst: str, src: str):
        self.prefix = (bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", ""))
                       + _U16.pack(_fc.FCOE_ETHERTYPE) + bytes(13) + bytes((_fc.FC_SOF_I3,)))

    def frame(self, message: bytes, d_id: int, s_id: int, ox_id: int,
              f_ctl: int = FC_FCTL_SINGLE) -> bytes:
        fc = _FC_HEAD.pack(FC_RCTL_DD_UNSOL_DATA << 24 | d_id, s_id, FTSS_FC_TYPE << 24 | f_ctl,
                           0, 0, 0, ox_id, FC_RX_ID_UNASSIGNED, 0) + message
        return self.prefix + fc + _FC_TRAILER.pack(zlib.crc32(fc), _fc.FC_EOF_T, bytes(3))


_FC_HEAD = struct.Struct("!IIIBBHHHI")  # the FC header from R_CTL|D_ID on (FC-FS)
_FC_TRAILER = struct.Struct("<IB3s")  # FC CRC (LSB first), FCoE EOF, reserved


def build_ftss(opcode: int, body: bytes, *, flags: int = 0) -> bytes:
    """Header + body + zero padding to 32 bits (what ``FTSS()/body`` builds)."""
    length = FTSS_HDR_LEN + len(body)
    return _HDR.pack(FTSS_VERSION << 4 | flags, opcode, length) + body + b"\x00" * (-length % 4)


def build_pkt(
    msg_id: int,
    src_node: int,
    frame: bytes,
    *,
    pkt_flags: int = 0,
    retention: int = 0,
    flags: int = 0,
) -> bytes:
    body = _PKT.pack(msg_id, src_node, pkt_flags, retention) + bytes(frame)
    return build_ftss(FTSS_OP_PKT, body, flags=flags)


def build_ack(
    msg_id: int,
    node_id: int,
    status: int = FTSS_ACK_STORED_GUARANTEED,
    reason: int = 0,
    *,
    more: int = 0,
    flags: int = 0,
) -> bytes:
    """``more``: the consecutive msg ids after ``msg_id`` (of the same sender) that this
    ACK answers too, with the same status and reason (at most ``MAX_ACK_MORE``)."""
    return build_ftss(FTSS_OP_ACK, _ACK.pack(msg_id, node_id, status, reason, more),
                      flags=flags)


def ack_runs(items: Iterable[T], key: Callable[[T], object],
             msg_id: Callable[[T], int]) -> Iterator[tuple[T, int]]:
    """Answers due, in order, grouped as ACKs can carry them: a run of consecutive msg ids
    with one ``key`` (where the ACK goes, its verdict, the sender), at most ``MAX_ACK_MORE``
    after the first. Yields each run's first item and its ``more``."""
    run: list = []  # the run so far: its first item, key, first and last msg ids
    for item in items:
        m, k = msg_id(item), key(item)
        if run and k == run[1] and m == run[3] + 1 and run[3] - run[2] < MAX_ACK_MORE:
            run[3] = m
            continue
        if run:
            yield run[0], run[3] - run[2]
        run = [item, k, m, m]
    if run:
        yield run[0], run[3] - run[2]


def _hello_body(node_id, seq, macs, state, port, hold_time) -> bytes:
    head = _HELLO.pack(node_id, seq, state, port, hold_time, len(macs))
    return head + b"".join(bytes.fromhex(m.replace(":", "")) for m in macs)


def build_hello(
    node_id: int,
    seq: int,
    macs: list[str],
    *,
    state: int = FTSS_NODE_UP,
    port: int = 0,
    hold_time: int = FTSS_HOLD_TIME,
    flags: int = 0,
) -> bytes:
    body = _hello_body(node_id, seq, macs, state, port, hold_time)
    return build_ftss(FTSS_OP_HELLO, body, flags=flags)


def build_status(
    node_id: int,
    seq: int,
    macs: list[str],
    *,
    state: int = FTSS_NODE_UP,
    port: int = 0,
    hold_time: int = FTSS_HOLD_TIME,
    flags: int = 0,
) -> bytes:
    body = _hello_body(node_id, seq, macs, state, port, hold_time)
    return build_ftss(FTSS_OP_STATUS, body, flags=flags)


def build_write(
    req_id: int,
    filename: bytes,
    data: bytes,
    *,
    offset: int = 0,
    wflags: int = FTSS_WRITE_CREATE,
    flags: int = 0,
) -> bytes:
    body = _WRITE.pack(req_id, offset, wflags, len(filename), len(data)) + filename + data
    return build_ftss(FTSS_OP_WRITE, body, flags=flags)


def build_read(
    req_id: int, filename: bytes, *, offset: int = 0, count: int = 0, flags: int = 0
) -> bytes:
    body = _READ.pack(req_id, offset, count, len(filename)) + filename
    return build_ftss(FTSS_OP_READ, body, flags=flags)


def build_list(req_id: int, dirname: bytes, *, flags: int = 0) -> bytes:
    return build_ftss(FTSS_OP_LIST, _NAMED.pack(req_id, len(dirname)) + dirname, flags=flags)


def build_delete(req_id: int, filename: bytes, *, flags: int = 0) -> bytes:
    return build_ftss(FTSS_OP_DELETE, _NAMED.pack(req_id, len(filename)) + filename, flags=flags)


def build_response(
    req_id: int,
    op: int,
    *,
    status: int = FTSS_FILE_OK,
    data: bytes = b"",
    names: list[bytes] | None = None,
    flags: int = 0,
) -> bytes:
    """RESPONSE to request ``op``: ``names`` for LIST, ``data`` otherwise."""
    if op == FTSS_OP_LIST:
        data = b"".join(_U16.pack(len(n)) + n for n in names or ())
    body = _RESP.pack(req_id, status, op, len(data)) + data
    return build_ftss(FTSS_OP_RESPONSE, body, flags=flags)
