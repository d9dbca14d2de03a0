# SPDX-License-Identifier: GPL-2.0-or-later
"""Typed views of I2O frames for the IOP access module, over ``ftsslab.fast.i2o``.

``parse`` never raises: anything ``fast.parse_i2o`` refuses, or that is no well-formed request
(wrong version, reserved MsgFlags, a reply flag, a BSA function without its body), is None and
earns ``failure_reply``: the FAIL-flag reply that carries the rejected frame's header back
(D1.7). The executive's bodies (status block, system table, LCT) are the emulation's own
compact layouts, defined here once for the IOP and the Local Transport.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ftsslab.fast import i2o as fast

EXEC_TID = 0  # the IOP's executive (I2O TID 0)
HOST_TID = 1  # the host driver module as initiator
FIRST_DEVICE_TID = 0x010
FIRST_IOP_ID = 2  # I2O IOP IDs 0 and 1 are reserved

REQ_SUCCESS = 0x00
REQ_ERROR_NO_DATA_TRANSFER = 0x05
DSC_INAPPROPRIATE_FUNCTION = 0x000D
DSC_UNSUPPORTED_FUNCTION = 0x000A
DSC_DEVICE_NOT_AVAILABLE = 0x001C
BSA_DSC_ACCESS_ERROR = 0x0002
BSA_DSC_DEVICE_FAILURE = 0x0003
BSA_DSC_DEVICE_NOT_READY = 0x0004
BSA_WRITE_THRU = 0x0008  # BSA_WRITE_FLAG_NAMES[3]

EXEC_STATUS_GET, EXEC_OUTBOUND_INIT, EXEC_LCT_NOTIFY = 0xA0, 0xA1, 0xA2
EXEC_SYS_TAB_SET, EXEC_HRT_GET, EXEC_SYS_ENABLE = 0xA3, 0xA8, 0xD1

STATUS_BLOCK = struct.Struct("<HBB")  # IOP id, IopState, device count
SYS_TAB = struct.Struct("<HH")  # the IOP id assigned, IOPs in the system
HRT_ENTRY = struct.Struct("<I")  # adapter id per device
LCT_ENTRY = struct.Struct("<HHQI")  # TID, class, capacity in bytes, block size
I2O_CLASS_RANDOM_BLOCK_STORAGE = 0x010

_BODY_LAYER = {fast.I2O_BSA_BLOCK_READ: "I2OBlockRead", fast.I2O_BSA_BLOCK_WRITE: "I2OBlockWrite",
               fast.I2O_BSA_CACHE_FLUSH: "I2OBlockCacheFlush"}


class Request(NamedTuple):
    """A well-formed request frame (the parse_i2o dict kept for the body's fields)."""

    function: int
    msg_flags: int
    target_tid: int
    initiator_tid: int
    initiator_context: int
    transaction_context: int
    fields: dict


class Reply(NamedTuple):
    function: int
    msg_flags: int
    initiator_context: int
    req_status: int | None  # None: a FAIL-flag reply (no status word)
    detailed_status: int | None
    payload: bytes


def last_frame(msg_flags: int) -> bool:
    """The last frame of its message: a single one, or FINAL in a multi-transaction one
    ("a series of frames", L206; check 9)."""
    return not msg_flags & fast.MSG_MULTI_TRANS or bool(msg_flags & fast.MSG_FINAL)


def parse_request(frame: bytes) -> Request | None:
    out = fast.parse_i2o(frame)
    if (out is None or out["version"] != fast.I2OVERSION
            or out["msg_flags"] & (fast.MSG_RESERVED | fast.MSG_REPLY | fast.MSG_FAIL)
            or (layer := _BODY_LAYER.get(out["function"])) and layer not in out["layers"]):
        return None
    return Request(out["function"], out["msg_flags"], out["target_tid"], out["initiator_tid"],
                   out["initiator_context"], out["transaction_context"], out)


def parse_reply(frame: bytes) -> Reply | None:
    out = fast.parse_i2o(frame)
    if out is None or not out["msg_flags"] & fast.MSG_REPLY:
        return None
    return Reply(out["function"], out["msg_flags"], out["initiator_context"],
                 out.get("req_status"), out.get("detailed_status"), bytes(out["payload"]))


def reply(request: Request, req_status: int = REQ_SUCCESS, detailed_status: int = 0, *,
          transfer_count: int | None = None, body: bytes = b"") -> bytes:
    """A single reply carrying the request's contexts; BSA replies get TransferCount and, on an
    error status, the failing byte address. ``body`` follows the status word (executive)."""
    if request.function in fast.I2O_BSA_FUNCTION_CODES:
        error = req_status in fast.I2O_REPLY_ERRORS
        return fast.build_reply(request.fields, req_status, detailed_status,
                                transfer_count=transfer_count or 0,
                                error_address=request.fields.get("byte_address", 0)
                                if error else None)
    frame = fast.build_reply(request.fields, req_status, detailed_status)
    return frame if not body else _append(frame, body)


def error_reply(request: Request, detailed_status: int) -> bytes:
    return reply(request, REQ_ERROR_NO_DATA_TRANSFER, detailed_status)


def _append(frame: bytes, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    size = struct.unpack_from("<H", frame, 2)[0] + len(body) // 4
    return frame[:2] + struct.pack("<H", size) + frame[4:] + body


def failure_reply(frame: bytes) -> bytes:
    """The FAIL-flag reply to a frame that is no request (D1.7): its header, zero-padded to the
    16 bytes, is preserved as the body, and its addresses and contexts are answered as far as
    they can be read. Never raises."""
    header = bytes(frame[:fast.I2O_HEADER_LEN]).ljust(fast.I2O_HEADER_LEN, b"\x00")
    _, _, _, word1, ictx, tctx = struct.unpack("<BBHIII", header)
    return fast.build_i2o(word1 >> 24, header, target_tid=word1 & 0xFFF,
                          initiator_tid=word1 >> 12 & 0xFFF, initiator_context=ictx,
                          transaction_context=tctx,
                          msg_flags=fast.MSG_REPLY | fast.MSG_FAIL | fast.MSG_FINAL)
