# SPDX-License-Identifier: GPL-2.0-or-later
"""blockproto: the byte stream between a block client (the nbdkit plugin) and the lab node that
holds the remote disk, over a Unix stream socket. Sans-IO, like h11: records are encoded with
``encode`` (or ``record.encode()``) and the bytes received are given to ``Decoder.feed``, which
returns the records they complete. The decoder never raises on what it is fed: a stream that
is not blockproto gives one ``Malformed`` record, after which the decoder ignores its input
and the caller closes the connection.

Every header starts with a magic, so a stream that lost its framing is caught at the next
header; every integer is big-endian (network order)::

    Request, 28 bytes, then ``length`` bytes of data for WRITE (none for the other ops)
     0               4       6       8                              16
    +---------------+-------+-------+-------------------------------+
    | magic "BPRQ"  |  op   | flags |            handle             |
    +---------------+-------+-------+-------------------------------+
    |            offset             |    length     |
    +-------------------------------+---------------+
    16                              24              28

    Reply, 24 bytes, then ``length`` bytes of payload
     0               4       6       8                              16
    +---------------+-------+-------+-------------------------------+
    | magic "BPRP"  |  op   | flags |            handle             |
    +---------------+-------+-------+-------------------------------+
    |    status     |    length     |
    +---------------+---------------+
    16              20              24

``op`` is INFO=1, READ=2, WRITE=3 or FLUSH=4; ``flags`` is reserved and 0. ``handle`` is the
client's tag for a request: several may be outstanding and each reply carries the handle (and
the op) of the request it answers; the node may answer in any order. INFO and FLUSH have
offset and length 0; READ asks for ``length`` bytes at ``offset``; WRITE carries them.

``status`` is 0 for success, else an errno value (EIO 5, EINVAL 22, ENOSPC 28, ...); a reply
that is not a success has no payload. A successful READ reply's payload is the data (as many
bytes as asked for: the client checks), INFO's is ``size`` (u64, bytes) and ``block_size``
(u32), WRITE's and FLUSH's is empty. No length exceeds ``MAX_LENGTH`` (32 MiB), so a corrupt
length cannot make a decoder buffer without bound.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from enum import IntEnum

REQUEST_MAGIC = 0x42505251  # b"BPRQ"
REPLY_MAGIC = 0x42505250  # b"BPRP"
REQUEST_HEADER = struct.Struct(">IHHQQI")  # magic, op, flags, handle, offset, length
REPLY_HEADER = struct.Struct(">IHHQII")  # magic, op, flags, handle, status, length
INFO_PAYLOAD = struct.Struct(">QI")  # size, block_size
MAX_LENGTH = 32 * 1024 * 1024

U32 = 2**32
U64 = 2**64
_MAGIC = struct.Struct(">I")
_REQUEST_MAGIC_B = _MAGIC.pack(REQUEST_MAGIC)
_REPLY_MAGIC_B = _MAGIC.pack(REPLY_MAGIC)


class Op(IntEnum):
    INFO = 1
    READ = 2
    WRITE = 3
    FLUSH = 4


@dataclass(frozen=True, slots=True)
class Request:
    op: Op
    handle: int
    offset: int = 0
    length: int = 0
    data: bytes = b""  # WRITE only; len(data) == length

    @classmethod
    def info(cls, handle: int) -> Request:
        return cls(Op.INFO, handle)

    @classmethod
    def read(cls, handle: int, offset: int, length: int) -> Request:
        return cls(Op.READ, handle, offset, length)

    @classmethod
    def write(cls, handle: int, offset: int, data: bytes) -> Request:
        return cls(Op.WRITE, handle, offset, len(data), bytes(data))

    @classmethod
    def flush(cls, handle: int) -> Request:
        return cls(Op.FLUSH, handle)

    def encode(self) -> bytes:
        problem = _request_problem(self.op, 0, self.handle, self.offset, self.length)
        if problem is None and len(self.data) != (self.length if self.op == Op.WRITE else 0):
            problem = f"{len(self.data)} bytes of data for {_op_name(self.op)} of {self.length}"
        if problem:
            raise ValueError(problem)
        header = REQUEST_HEADER.pack(
            REQUEST_MAGIC, self.op, 0, self.handle, self.offset, self.length
        )
        return header + self.data


@dataclass(frozen=True, slots=True)
class Reply:
    op: Op
    handle: int
    status: int = 0  # 0 ok, else an errno value
    data: bytes = b""  # READ's data
    size: int = 0  # INFO: the disk's size in bytes
    block_size: int = 0  # INFO: its block size in bytes

    @property
    def ok(self) -> bool:
        return self.status == 0

    @classmethod
    def to(cls, request: Request, data: bytes = b"") -> Reply:
        """The success reply to ``request`` (READ: with its ``data``)."""
        return cls(request.op, request.handle, 0, bytes(data))

    @classmethod
    def info(cls, handle: int, size: int, block_size: int) -> Reply:
        return cls(Op.INFO, handle, 0, size=size, block_size=block_size)

    @classmethod
    def error(cls, request: Request, status: int = errno.EIO) -> Reply:
        return cls(request.op, request.handle, status)

    def payload(self) -> bytes:
        if self.status or self.op in (Op.WRITE, Op.FLUSH):
            return b""
        if self.op == Op.INFO:
            return INFO_PAYLOAD.pack(self.size, self.block_size)
        return self.data

    def encode(self) -> bytes:
        problem = None
        if not 0 <= self.status < U32:
            problem = f"status {self.status} out of range"
        elif self.op == Op.INFO and not (0 <= self.size < U64 and 0 <= self.block_size < U32):
            problem = f"INFO size {self.size} or block size {self.block_size} out of range"
        elif self.data and (self.status or self.op != Op.READ):
            problem = f"data in a {_op_name(self.op)} reply of status {self.status}"
        payload = self.payload() if problem is None else b""
        problem = problem or _reply_problem(self.op, 0, self.handle, self.status, len(payload))
        if problem:
            raise ValueError(problem)
        header = REPLY_HEADER.pack(REPLY_MAGIC, self.op, 0, self.handle, self.status, len(payload))
        return header + payload


@dataclass(frozen=True, slots=True)
class Malformed:
    """The stream is not blockproto from byte ``offset`` (counted from the decoder's start)."""

    reason: str
    offset: int


Record = Request | Reply


def encode(record: Record) -> bytes:
    return record.encode()


def _op_name(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return f"op {op}"


def _common_problem(op: int, flags: int, handle: int, length: int) -> str | None:
    if op not in Op._value2member_map_:
        return f"unknown op {op}"
    if flags:
        return f"reserved flags {flags:#x} set"
    if not 0 <= handle < U64:
        return f"handle {handle} out of range"
    if not 0 <= length <= MAX_LENGTH:
        return f"length {length} beyond the limit of {MAX_LENGTH}"
    return None


def _request_problem(op: int, flags: int, handle: int, offset: int, length: int) -> str | None:
    problem = _common_problem(op, flags, handle, length)
    if problem:
        return problem
    if not 0 <= offset < U64:
        return f"offset {offset} out of range"
    if op in (Op.INFO, Op.FLUSH) and (offset or length):
        return f"{_op_name(op)} with offset {offset} and length {length} (must be 0)"
    return None


def _reply_problem(op: int, flags: int, handle: int, status: int, length: int) -> str | None:
    problem = _common_problem(op, flags, handle, length)
    if problem:
        return problem
    if status and length:
        return f"{length} bytes of payload in a reply of status {status}"
    if not status and op == Op.INFO and length != INFO_PAYLOAD.size:
        return f"INFO reply payload of {length} bytes (must be {INFO_PAYLOAD.size})"
    if not status and op in (Op.WRITE, Op.FLUSH) and length:
        return f"{length} bytes of payload in a {_op_name(op)} reply"
    return None


class Decoder:
    """Bytes in, records out. ``expect`` limits the records to one kind (a node accepts only
    requests, a client only replies); the other kind is then ``Malformed``."""

    def __init__(self, expect: type[Request] | type[Reply] | None = None) -> None:
        self.expect = expect
        self.malformed: Malformed | None = None
        self._buf = bytearray()
        self._consumed = 0  # bytes of the stream before _buf[0]

    @property
    def pending(self) -> int:
        """Bytes held for a record not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Request | Reply | Malformed]:
        if self.malformed is not None:
            return []
        self._buf += data
        out: list[Request | Reply | Malformed] = []
        buf, pos = self._buf, 0
        while True:
            record, used = self._next(buf, pos)
            if record is None:
                break
            out.append(record)
            if isinstance(record, Malformed):
                self.malformed = record
                self._buf = bytearray()
                return out
            pos += used
        del buf[:pos]
        self._consumed += pos
        return out

    def close(self) -> Malformed | None:
        """The stream ended: a ``Malformed`` if it ended inside a record."""
        if self.malformed is None and self._buf:
            self.malformed = Malformed(
                f"stream ended {len(self._buf)} bytes into a record", self._consumed
            )
            self._buf = bytearray()
            return self.malformed
        return None

    def _bad(self, reason: str, pos: int) -> tuple[Malformed, int]:
        return Malformed(reason, self._consumed + pos), 0

    def _next(self, buf: bytearray, pos: int) -> tuple[Request | Reply | Malformed | None, int]:
        avail = len(buf) - pos
        if avail < _MAGIC.size:
            head = bytes(buf[pos:])
            if avail and not (_REQUEST_MAGIC_B.startswith(head) or _REPLY_MAGIC_B.startswith(head)):
                return self._bad(f"bad magic {head.hex()}...", pos)
            return None, 0
        (magic,) = _MAGIC.unpack_from(buf, pos)
        if magic == REQUEST_MAGIC:
            if self.expect is Reply:
                return self._bad("a request where a reply was expected", pos)
            return self._request(buf, pos, avail)
        if magic == REPLY_MAGIC:
            if self.expect is Request:
                return self._bad("a reply where a request was expected", pos)
            return self._reply(buf, pos, avail)
        return self._bad(f"bad magic {magic:#010x}", pos)

    def _request(self, buf: bytearray, pos: int, avail: int):
        if avail < REQUEST_HEADER.size:
            return None, 0
        _, op, flags, handle, offset, length = REQUEST_HEADER.unpack_from(buf, pos)
        problem = _request_problem(op, flags, handle, offset, length)
        if problem:
            return self._bad(problem, pos)
        body = length if op == Op.WRITE else 0
        total = REQUEST_HEADER.size + body
        if avail < total:
            return None, 0
        start = pos + REQUEST_HEADER.size
        return Request(Op(op), handle, offset, length, bytes(buf[start : start + body])), total

    def _reply(self, buf: bytearray, pos: int, avail: int):
        if avail < REPLY_HEADER.size:
            return None, 0
        _, op, flags, handle, status, length = REPLY_HEADER.unpack_from(buf, pos)
        problem = _reply_problem(op, flags, handle, status, length)
        if problem:
            return self._bad(problem, pos)
        total = REPLY_HEADER.size + length
        if avail < total:
            return None, 0
        start = pos + REPLY_HEADER.size
        if op == Op.INFO and not status:
            size, block_size = INFO_PAYLOAD.unpack_from(buf, start)
            return Reply(Op.INFO, handle, 0, size=size, block_size=block_size), total
        return Reply(Op(op), handle, status, bytes(buf[start : start + length])), total
