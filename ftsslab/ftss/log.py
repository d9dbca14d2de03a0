"""Record format of the FTSS store's log and the file layer it is written through.

Every record carries its own CRC so that recovery can tell a committed record (block 154) from a
torn or rotted one without trusting file sizes; the file layer is an object so that tests can swap
in a simulated disk that loses what was never fsynced.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import NamedTuple

MAGIC = b"FTSR"
# magic, kind, 3 pad bytes, payload length, seq, key; then the CRC of those 28 bytes + payload.
_HEAD = struct.Struct("<4sBxxxIQQ")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _CRC.size
MAX_PAYLOAD = 1 << 24  # a larger length field is corruption, not a reason to read 4 GiB
MAX_KIND = 0xFF
MAX_KEY = (1 << 64) - 1


class Record(NamedTuple):
    """One committed log record; the store never interprets kind, key or payload."""

    seq: int
    kind: int
    key: int
    payload: bytes


def encode(seq: int, kind: int, key: int, payload: bytes) -> bytes:
    """The on-disk bytes of one record."""
    head = _HEAD.pack(MAGIC, kind, len(payload), seq, key)
    return head + _CRC.pack(zlib.crc32(payload, zlib.crc32(head))) + payload


def decode_at(buf: bytes, off: int, after_seq: int = -1) -> tuple[Record, int] | None:
    """The record at ``off`` and the offset after it, or None if it is torn or corrupt.

    A record whose seq does not exceed ``after_seq`` is also refused: seqs only grow, so a stale
    but intact record behind a torn one is never mistaken for a live one.
    """
    end_head = off + HEADER_SIZE
    if off < 0 or end_head > len(buf):
        return None
    magic, kind, length, seq, key = _HEAD.unpack_from(buf, off)
    if magic != MAGIC or length > MAX_PAYLOAD or seq <= after_seq:
        return None
    end = end_head + length
    if end > len(buf):
        return None
    payload = bytes(buf[end_head:end])
    (crc,) = _CRC.unpack_from(buf, off + _HEAD.size)
    if zlib.crc32(payload, zlib.crc32(buf[off : off + _HEAD.size])) != crc:
        return None
    return Record(seq, kind, key, payload), end


def scan(buf: bytes, after_seq: int = -1) -> tuple[list[Record], int]:
    """Every valid record from the start of ``buf`` up to the first bad one, and where that is."""
    out: list[Record] = []
    off = 0
    while (hit := decode_at(buf, off, after_seq)) is not None:
        rec, off = hit
        after_seq = rec.seq
        out.append(rec)
    return out, off


class OsFiles:
    """The real file layer: plain descriptors, os.fsync, and directory fsync after name changes.

    The store calls only these methods, so a test can pass an object that simulates power loss.
    """

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def read(self, path: str) -> bytes | None:
        """The whole file, or None if it does not exist."""
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def open(self, path: str, truncate: bool = False) -> int:
        """A descriptor appending to ``path`` (created if missing, emptied if ``truncate``)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        return os.open(path, flags, 0o644)

    def write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def truncate(self, path: str, size: int) -> None:
        """Cut ``path`` to ``size`` bytes, durably."""
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
