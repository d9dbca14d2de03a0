# SPDX-License-Identifier: GPL-2.0-or-later
"""Fast I2O frame parser and builders (no Scapy): the IOP access module's hot path.

``parse_i2o`` gives the fields of ``ftsslab.layers.i2o`` under the same names:
the header's, then those of each body layer in ``"layers"`` (flattened: no two
layers of one frame share a field name), ``"sgl"`` as a list of element dicts
(each with its ``"layer"``), and ``"payload"``: body bytes no layer claimed.
The numbers the Scapy layers use are defined here, once.
"""

from __future__ import annotations

import struct

I2O_UDP_PORT = 49122  # unassigned gap between 49001 (nusrp) and 49150 (inspider)
I2OVERSION = 0x01  # Linux I2OVER15
I2O_HEADER_LEN = 16
I2O_HEADER_WORDS = I2O_HEADER_LEN // 4
I2O_BSA_SGL_OFFSET = 8  # Linux SGL_OFFSET_8 for block read/write

MSG_STATIC = 0x01
MSG_64BIT_CNTXT = 0x02
MSG_RESERVED = 0x0C
MSG_MULTI_TRANS = 0x10
MSG_FAIL = 0x20
MSG_FINAL = 0x40
MSG_REPLY = 0x80

I2O_BSA_BLOCK_READ = 0x30
I2O_BSA_BLOCK_WRITE = 0x31
I2O_BSA_CACHE_FLUSH = 0x37
I2O_BSA_FUNCTION_CODES = frozenset(
    {0x25, 0x27, 0x30, 0x31, 0x33, 0x35, 0x37, 0x41, 0x43, 0x45, 0x49, 0x4B, 0x70, 0x71}
)
I2O_REPLY_ERRORS = (0x04, 0x05, 0x06)  # ERROR_DIRTY / _NO_DATA / _PARTIAL: + address

SGL_FLAGS_DIR = 0x04
SGL_FLAGS_SIMPLE = 0x10
SGL_FLAGS_END_OF_BUFFER = 0x40
SGL_FLAGS_LAST = 0x80
SGL_ADDRESS_MODE_MASK = 0x3C
SGL_ATTRIBUTES = 0x7C
SGL_REMOTE = 0x34  # chain pointer + DIR: INVALID in the I2O 1.5 truth table
SGL_ATTR_64BIT_ADDRESS = 0x0002
SGE_SIMPLE_LAST = SGL_FLAGS_LAST | SGL_FLAGS_END_OF_BUFFER | SGL_FLAGS_SIMPLE
SGE_REMOTE_LAST = SGL_FLAGS_LAST | SGL_FLAGS_END_OF_BUFFER | SGL_REMOTE

_HEADER = struct.Struct("<BBHIII")
_STATUS = struct.Struct("<HBB")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_RW = struct.Struct("<HBBIQ")  # control flags, time multiplier, fetch ahead/reserved, ...
_FLUSH = struct.Struct("<HBB")
_SGE32 = struct.Struct("<II")
_SGE64 = struct.Struct("<IQ")
_SGE_REMOTE = struct.Struct("<IQI")
_SGE_ATTR = struct.Struct("<HBBI")


def sge_kind(flags: int, addr64: bool) -> str | None:
    """Element layer name for a FlagsCount top byte; None: not an element we parse."""
    if flags & SGL_ATTRIBUTES == SGL_ATTRIBUTES:
        return "I2OSGEAttributes"
    if flags & SGL_ADDRESS_MODE_MASK == SGL_REMOTE:
        return "I2OSGERemote"
    if flags & 0x30 == SGL_FLAGS_SIMPLE:
        return "I2OSGESimple64" if addr64 else "I2OSGESimple"
    return None


SGE_SIZE = {"I2OSGESimple": 8, "I2OSGESimple64": 12, "I2OSGEAttributes": 8,
             "I2OSGERemote": 16}


def _parse_sgl(buf: memoryview) -> tuple[list[dict], int]:
    """Elements up to the one flagged LAST; returns them and the bytes used."""
    sgl: list[dict] = []
    pos = 0
    addr64 = False
    while len(buf) - pos >= 4:
        flags = buf[pos + 3]
        kind = sge_kind(flags, addr64)
        if kind is None or len(buf) - pos < SGE_SIZE[kind]:
            break
        if kind == "I2OSGEAttributes":
            attr, length, _, page = _SGE_ATTR.unpack_from(buf, pos)
            sgl.append({"layer": kind, "attribute_flags": attr, "element_length": length,
                        "flags": flags, "page_frame_size": page})
            addr64 = addr64 or bool(attr & SGL_ATTR_64BIT_ADDRESS)
        elif kind == "I2OSGERemote":
            word, va, rkey = _SGE_REMOTE.unpack_from(buf, pos)
            sgl.append({"layer": kind, "count": word & 0xFFFFFF, "flags": flags,
                        "virtual_address": va, "rkey": rkey})
        else:
            word, addr = (_SGE64 if addr64 else _SGE32).unpack_from(buf, pos)
            sgl.append({"layer": kind, "count": word & 0xFFFFFF, "flags": flags,
                        "address": addr})
        pos += SGE_SIZE[kind]
        if flags & SGL_FLAGS_LAST:
            break
    return sgl, pos


def _parse_request(out: dict, body: memoryview) -> int:
    """Fill in a request body; returns how many body bytes its layer took."""
    fn = out["function"]
    if fn in (I2O_BSA_BLOCK_READ, I2O_BSA_BLOCK_WRITE) and len(body) >= _RW.size:
        ctl, tm, third, count, lba = _RW.unpack_from(body)
        out["layers"].append("I2OBlockRead" if fn == I2O_BSA_BLOCK_READ else "I2OBlockWrite")
        out.update(control_flags=ctl, time_multiplier=tm, byte_count=count, byte_address=lba)
        out["fetch_ahead" if fn == I2O_BSA_BLOCK_READ else "reserved"] = third
        out["sgl"], used = _parse_sgl(body[_RW.size:])
        return _RW.size + used
    if fn == I2O_BSA_CACHE_FLUSH and len(body) >= _FLUSH.size:
        ctl, tm, res = _FLUSH.unpack_from(body)
        out["layers"].append("I2OBlockCacheFlush")
        out.update(control_flags=ctl, time_multiplier=tm, reserved=res)
        return _FLUSH.size
    return 0


def _parse_reply(out: dict, body: memoryview) -> int:
    if out["msg_flags"] & MSG_FAIL or len(body) < _STATUS.size:
        return 0
    dsc, res, status = _STATUS.unpack_from(body)
    out["layers"].append("I2OReply")
    out.update(detailed_status=dsc, reserved=res, req_status=status)
    rest = len(body) - _STATUS.size
    if out["function"] not in I2O_BSA_FUNCTION_CODES or rest < 4:
        return _STATUS.size
    if status in I2O_REPLY_ERRORS:
        if rest < 12:  # Scapy's I2OBlockReply fails whole: the rest stays raw
            return _STATUS.size
        out["error_address"] = _U64.unpack_from(body, _STATUS.size + 4)[0]
    out["layers"].append("I2OBlockReply")
    out["transfer_count"] = _U32.unpack_from(body, _STATUS.size)[0]
    return _STATUS.size + (12 if status in I2O_REPLY_ERRORS else 4)


def parse_i2o(buf: bytes | memoryview) -> dict | None:
    """One I2O frame (padding after MessageSize ignored); None if short or malformed."""
    mv = memoryview(buf)
    if len(mv) < I2O_HEADER_LEN:
        return None
    vo, flags, size, word1, ictx, tctx = _HEADER.unpack_from(mv)
    if size < I2O_HEADER_WORDS or size * 4 > len(mv):
        return None
    out = {
        "sgl_offset": vo >> 4, "version": vo & 0x0F, "msg_flags": flags, "msg_size": size,
        "function": word1 >> 24, "initiator_tid": word1 >> 12 & 0xFFF,
        "target_tid": word1 & 0xFFF, "initiator_context": ictx, "transaction_context": tctx,
        "layers": [],
    }
    body = mv[I2O_HEADER_LEN:size * 4]
    used = (_parse_reply if flags & MSG_REPLY else _parse_request)(out, body)
    out["payload"] = body[used:]
    return out


# ---------------------------------------------------------------- builders
def build_i2o(function: int, body: bytes = b"", *, target_tid: int = 0,
              initiator_tid: int = 1, initiator_context: int = 0,
              transaction_context: int = 0, msg_flags: int = 0,
              sgl_offset: int = 0) -> bytes:
    """A frame: header + body padded to whole words (== ``I2OMessage(...)/Raw(body)``)."""
    body += b"\x00" * (-len(body) % 4)
    size = I2O_HEADER_WORDS + len(body) // 4
    word1 = (function & 0xFF) << 24 | (initiator_tid & 0xFFF) << 12 | target_tid & 0xFFF
    return _HEADER.pack((sgl_offset & 0x0F) << 4 | I2OVERSION, msg_flags, size, word1,
                        initiator_context, transaction_context) + body


def sge_simple(count: int, address: int, flags: int = SGE_SIMPLE_LAST,
               addr64: bool = False) -> bytes:
    word = (flags & 0xFF) << 24 | count & 0xFFFFFF
    return (_SGE64 if addr64 else _SGE32).pack(word, address)


def sge_attributes(page_frame_size: int = 4096,
                   attribute_flags: int = SGL_ATTR_64BIT_ADDRESS) -> bytes:
    return _SGE_ATTR.pack(attribute_flags, 2, SGL_ATTRIBUTES, page_frame_size)


def sge_remote(count: int, virtual_address: int, rkey: int,
               flags: int = SGE_REMOTE_LAST) -> bytes:
    return _SGE_REMOTE.pack((flags & 0xFF) << 24 | count & 0xFFFFFF, virtual_address, rkey)


def build_block_rw(function: int, sgl: list[bytes], byte_address: int, *,
                   byte_count: int | None = None, control_flags: int = 0,
                   time_multiplier: int = 1, fetch_ahead: int = 0, **header) -> bytes:
    """BSA BLOCK_READ/BLOCK_WRITE frame; ``byte_count`` defaults to the SGL's total."""
    if byte_count is None:
        byte_count = sum(_U32.unpack_from(e)[0] & 0xFFFFFF for e in sgl
                         if e[3] & SGL_ATTRIBUTES != SGL_ATTRIBUTES)
    body = _RW.pack(control_flags, time_multiplier, fetch_ahead, byte_count, byte_address)
    return build_i2o(function, body + b"".join(sgl), sgl_offset=I2O_BSA_SGL_OFFSET, **header)


def build_reply(request: dict, req_status: int = 0, detailed_status: int = 0, *,
                transfer_count: int | None = None, error_address: int | None = None,
                msg_flags: int = MSG_REPLY | MSG_FINAL) -> bytes:
    """The reply a storing node sends for a parsed request: same addresses, function
    and both contexts (what seed 001's step 650 restores), then the status word and,
    for BSA, TransferCount (+ the failing address on an error status)."""
    body = _STATUS.pack(detailed_status, 0, req_status)
    if transfer_count is not None:
        body += _U32.pack(transfer_count)
        if error_address is not None:
            body += _U64.pack(error_address)
    return build_i2o(request["function"], body, target_tid=request["target_tid"],
                     initiator_tid=request["initiator_tid"],
                     initiator_context=request["initiator_context"],
                     transaction_context=request["transaction_context"], msg_flags=msg_flags)


def swap_initiator_context(frame: bytes, context: int) -> tuple[bytes, int]:
    """Seed 001 steps 530/650: put ``context`` in the frame, return it and the old one."""
    old = _U32.unpack_from(frame, 8)[0]
    return frame[:8] + _U32.pack(context & 0xFFFFFFFF) + frame[12:], old
