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

from ftsslab.fast import fc as _fc

# Numbers shared with layers/ftss.py (a test proves they are equal).
FTSS_FC_TYPE = 0xE0
FC_RCTL_DD_UNSOL_DATA = 0x04  # FC defaults shared with layers/fc.py
FC_FCTL_SINGLE = 0x290000
FC_RX_ID_UNASSIGNED = 0xFFFF
FTSS_VERSION = 1
FTSS_HDR_LEN = 4
FTSS_OP_PKT = 0x01
FTSS_OP_ACK = 0x02
FTSS_OP_HELLO = 0x03
FTSS_OP_STATUS = 0x04
FTSS_OP_WRITE = 0x10
FTSS_OP_READ = 0x11
FTSS_OP_LIST = 0x12
FTSS_OP_DELETE = 0x13
FTSS_OP_RESPONSE = 0x14
FTSS_ACK_STORED_GUARANTEED = 1
FTSS_NODE_UP = 1
FTSS_HOLD_TIME = 30
FTSS_WRITE_CREATE = 0x1
FTSS_FILE_OK = 0
FTSS_FLAG_ALTPATH = 0x1
FTSS_OP_FILE_MASK = 0xF0
FTSS_OP_FILE_CLASS = 0x10
FTSS_PKT_BROADCAST = 0x1
FTSS_PKT_RETRANSMIT = 0x2
FTSS_PKT_EXTERNAL = 0x4
FTSS_PKT_ROLLBACK = 0x8
FTSS_ACK_STORED_BEST_EFFORT = 2
FTSS_ACK_UNDELIVERABLE = 3
FTSS_ACK_DELIVERED = 4
FTSS_ACK_REJECTED = 5
FTSS_REASON_NONE = 0x00
FTSS_REASON_MALFORMED = 0x01
FTSS_REASON_UNKNOWN_OPCODE = 0x02
FTSS_REASON_OVERSIZE = 0x03
FTSS_REASON_STORE_FULL = 0x04
FTSS_REASON_BAD_LENGTH = 0x05
FTSS_REASON_BAD_VERSION = 0x06
FTSS_REASON_DEST_DOWN = 0x10
FTSS_REASON_DEST_UNKNOWN = 0x11
FTSS_NODE_DOWN = 0
FTSS_NODE_MAINTENANCE = 3
FTSS_FILE_NOT_FOUND = 1
FTSS_FILE_EXISTS = 2
FTSS_FILE_NO_SPACE = 3
FTSS_FILE_BAD_REQUEST = 5
FTSS_FILE_DENIED = 6
FTSS_WRITE_TRUNCATE = 0x2
FC_FCTL_ANSWER = 0x980000  # exchange responder, last seq, end seq (docs/protocols.md)

_HDR = struct.Struct("!BBH")  # version<<4 | flags, opcode, length
_PKT = struct.Struct("!QIHH")  # msg_id, src_node, flags, retention
_ACK = struct.Struct("!QIBBH")  # msg_id, node_id, status, reason, reserved
_HELLO = struct.Struct("!IHBBHH")  # node_id, seq, state, port, hold_time, mac_count
_WRITE = struct.Struct("!IQHHI")  # req_id, offset, wflags, name_len, data_len
_READ = struct.Struct("!IQIH")  # req_id, offset, count, name_len
_NAMED = struct.Struct("!IH")  # req_id, name_len (LIST, DELETE)
_RESP = struct.Struct("!IBBH")  # req_id, status, op, data_len
_U16 = struct.Struct("!H")


def _mac(b) -> str:
    return bytes(b).hex(":")


def _parse_pkt(d: dict, body: memoryview) -> dict | None:
    if len(body) < _PKT.size:
        return None
    d["msg_id"], d["src_node"], d["pkt_flags"], d["retention"] = _PKT.unpack_from(body)
    d["payload"] = body[_PKT.size :]
    return d


def _parse_ack(d: dict, body: memoryview) -> dict | None:
    if len(body) != _ACK.size:
        return None
    d["msg_id"], d["node_id"], d["status"], d["reason"], d["reserved"] = _ACK.unpack(body)
    return d


def _parse_hello(d: dict, body: memoryview) -> dict | None:
    if len(body) < _HELLO.size:
        return None
    (d["node_id"], d["seq"], d["state"], d["port"], d["hold_time"], count) = _HELLO.unpack_from(
        body
    )
    if len(body) != _HELLO.size + 6 * count:
        return None
    d["mac_count"] = count
    off = _HELLO.size
    d["macs"] = [_mac(body[off + 6 * i : off + 6 * i + 6]) for i in range(count)]
    return d


def _parse_write(d: dict, body: memoryview) -> dict | None:
    if len(body) < _WRITE.size:
        return None
    d["req_id"], d["offset"], d["wflags"], nlen, dlen = _WRITE.unpack_from(body)
    if len(body) != _WRITE.size + nlen + dlen:
        return None
    d["name_len"], d["data_len"] = nlen, dlen
    d["filename"] = bytes(body[_WRITE.size : _WRITE.size + nlen])
    d["data"] = bytes(body[_WRITE.size + nlen :])
    return d


def _parse_read(d: dict, body: memoryview) -> dict | None:
    if len(body) < _READ.size:
        return None
    d["req_id"], d["offset"], d["count"], nlen = _READ.unpack_from(body)
    if len(body) != _READ.size + nlen:
        return None
    d["name_len"], d["filename"] = nlen, bytes(body[_READ.size :])
    return d


def _parse_named(d: dict, body: memoryview) -> dict | None:
    if len(body) < _NAMED.size:
        return None
    d["req_id"], nlen = _NAMED.unpack_from(body)
    if len(body) != _NAMED.size + nlen:
        return None
    d["name_len"], d["filename"] = nlen, bytes(body[_NAMED.size :])
    return d


def _parse_response(d: dict, body: memoryview) -> dict | None:
    if len(body) < _RESP.size:
        return None
    d["req_id"], d["status"], d["op"], dlen = _RESP.unpack_from(body)
    if len(body) != _RESP.size + dlen:
        return None
    d["data_len"] = dlen
    data = body[_RESP.size :]
    if d["op"] != FTSS_OP_LIST:
        d["data"] = bytes(data)
        return d
    names, off = [], 0
    while off < dlen:
        if off + 2 > dlen:
            return None
        (nlen,) = _U16.unpack_from(data, off)
        off += 2 + nlen
        if off > dlen:
            return None
        names.append(bytes(data[off - nlen : off]))
    d["names"] = names
    return d


_BODY = {
    FTSS_OP_PKT: _parse_pkt,
    FTSS_OP_ACK: _parse_ack,
    FTSS_OP_HELLO: _parse_hello,
    FTSS_OP_STATUS: _parse_hello,
    FTSS_OP_WRITE: _parse_write,
    FTSS_OP_READ: _parse_read,
    FTSS_OP_LIST: _parse_named,
    FTSS_OP_DELETE: _parse_named,
    FTSS_OP_RESPONSE: _parse_response,
}


def parse_ftss(buf: bytes | memoryview) -> dict | None:
    """One FTSS message (padding after ``length`` ignored); None if malformed.

    An unknown opcode gives the header fields and the body as ``"payload"``,
    so the link unit can still reject it with UNKNOWN_OPCODE.
    """
    mv = memoryview(buf)
    if len(mv) < FTSS_HDR_LEN:
        return None
    vf, opcode, length = _HDR.unpack_from(mv)
    if length < FTSS_HDR_LEN or length > len(mv):
        return None
    d = {"version": vf >> 4, "flags": vf & 0xF, "opcode": opcode, "length": length}
    body = mv[FTSS_HDR_LEN:length]
    parse = _BODY.get(opcode)
    if parse is None:
        d["payload"] = body
        return d
    return parse(d, body)


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
    flags: int = 0,
) -> bytes:
    return build_ftss(FTSS_OP_ACK, _ACK.pack(msg_id, node_id, status, reason, 0), flags=flags)


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
