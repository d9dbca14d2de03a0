# SPDX-License-Identifier: GPL-2.0-or-later
"""Block devices a DDM owns: the device behind the IOP (disk storage devices 326, L178).

``BlockDevice`` is the small interface a DDM needs; ``FileBlockDevice`` backs it with a real
file: sparse (``ftruncate`` to the capacity, nothing written until written), ``os.pwrite`` /
``os.pread`` at the byte address, and ``flush`` = fsync, which the DDM calls on BSA
CacheFlush and for a write-through BlockWrite. ``fsync`` is a parameter so tests can count
the calls that reach the disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol


class BlockDevice(Protocol):
    capacity: int
    block_size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def write(self, offset: int, data: bytes) -> None: ...

    def flush(self) -> None: ...


class FileBlockDevice:
    def __init__(self, path: str | os.PathLike, capacity: int, *, block_size: int = 512,
                 fsync: Callable[[int], None] = os.fsync) -> None:
        self.capacity, self.block_size = capacity, block_size
        self._fsync = fsync
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(self._fd).st_size < capacity:
            os.ftruncate(self._fd, capacity)

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        return data.ljust(length, b"\x00")  # a file shortened behind our back reads as holes

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.pwrite(self._fd, view, offset + len(data) - len(view)):]

    def flush(self) -> None:
        self._fsync(self._fd)

    def close(self) -> None:
        """Close the file (again: nothing, as a file object's ``close``)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class MemoryBlockDevice:
    """A device in memory, for the sim backend (in-process, deterministic, no files): sparse
    by 4 KiB block, what was never written reads as zeros. ``flush`` counts, nothing more:
    the sim's durability is not this device's to prove (the veth lab's files are)."""

    BLOCK = 4096

    def __init__(self, capacity: int, *, block_size: int = 512) -> None:
        self.capacity, self.block_size = capacity, block_size
        self._blocks: dict[int, bytearray] = {}
        self.flushes = 0

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray(length)
        pos = 0
        while pos < length:
            block, at = divmod(offset + pos, self.BLOCK)
            n = min(self.BLOCK - at, length - pos)
            if (b := self._blocks.get(block)) is not None:
                out[pos:pos + n] = b[at:at + n]
            pos += n
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            block, at = divmod(offset + pos, self.BLOCK)
            n = min(self.BLOCK - at, len(data) - pos)
            b = self._blocks.setdefault(block, bytearray(self.BLOCK))
            b[at:at + n] = data[pos:pos + n]
            pos += n

    def flush(self) -> None:
        self.flushes += 1
