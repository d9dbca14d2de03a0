# SPDX-License-Identifier: GPL-2.0-or-later
"""What a NAS device serves: a volume of files, and the seed's virtual root directory.

The HTTP core (``http.py``) only asks a ``Catalog`` what a path is (``stat``); the driver does
the I/O through the same object (``read``, ``open_upload``). ``Volume`` is a real directory,
``MemoryCatalog`` the in-memory stand-in of the sim backend and the tests.

Paths are canonical URL paths (``canonical_path``): percent-decoded, dot segments and empty
segments gone, never ``..``. A ``Volume`` serves regular files only, never a name that starts
with ``.`` (uploads in progress are dot files: a partial upload never shows) and never anything
a symlink leads to outside its root.

``RootDirectory`` is the seed's virtual root directory (claims 7-10, D2.16): which device holds
which prefix of the namespace. The switch holds it to place sessions, every device a replica to
decide redirects; it travels as ``to_bytes()`` with its version.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_mod
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_HEX = frozenset(b"0123456789abcdefABCDEF")


class VolumeError(Exception):
    """A path the volume does not serve (absent, not a regular file, outside the root) or I/O."""


@dataclass(frozen=True)
class FileInfo:
    """What the HTTP core needs to answer for a file (its bytes stay with the driver)."""

    path: str  # canonical URL path
    size: int
    mtime_ns: int
    etag: str  # a strong entity tag, quotes included


class Catalog(Protocol):
    """What the HTTP core asks: is there a file at this canonical path."""

    def stat(self, path: str) -> FileInfo | None: ...


class Upload(Protocol):
    """An upload in progress: invisible until ``commit``; ``abort`` leaves nothing behind."""

    def write(self, offset: int, data: bytes) -> None: ...

    def read(self, offset: int, length: int) -> bytes: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class Storage(Catalog, Protocol):
    """A catalog whose driver also reads and uploads (``Volume``, ``MemoryCatalog``)."""

    def read(self, path: str, offset: int, length: int) -> bytes: ...

    def open_upload(self, path: str) -> Upload: ...


def canonical_path(target: str) -> str | None:
    """The canonical path of an origin-form request target, or None if it is not a safe path.

    ``/a/%62//./c?q`` -> ``/a/b/c``; a trailing ``/`` stays (a directory is never a file).
    None for: no leading ``/``, a bad percent escape, non-UTF-8, NUL, or any ``..`` segment.
    """
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        return None
    raw = path.encode("utf-8", "surrogatepass")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25:  # '%'
            pair = raw[i + 1:i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                return None
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    try:
        decoded = out.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in decoded:
        return None
    segments = [s for s in decoded.split("/") if s not in ("", ".")]
    if ".." in segments:
        return None
    tail = "/" if decoded.endswith("/") and segments else ""
    return "/" + "/".join(segments) + tail


def _file_segments(path: str) -> list[str] | None:
    """The segments of a canonical path that names a servable file (no dot names), or None."""
    if canonical_path(path) != path or path.endswith("/"):
        return None
    segments = path.split("/")[1:]
    if not segments or any(s.startswith(".") for s in segments):
        return None
    return segments


class Volume:
    """A directory served as a volume (``Storage``): the real-disk backend of a NAS device."""

    def __init__(self, root_dir: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.realpath(root_dir))
        if not self.root.is_dir():
            raise VolumeError(f"{root_dir}: not a directory")

    def _inside(self, real: str) -> bool:
        return real == str(self.root) or real.startswith(str(self.root) + os.sep)

    def _resolve(self, path: str) -> str | None:
        """The real path of the regular file at ``path`` inside the root, or None."""
        segments = _file_segments(path)
        if segments is None:
            return None
        real = os.path.realpath(self.root.joinpath(*segments))
        if not self._inside(real):
            return None
        try:
            st = os.stat(real)
        except (OSError, ValueError):
            return None
        return real if stat_mod.S_ISREG(st.st_mode) else None

    def stat(self, path: str) -> FileInfo | None:
        real = self._resolve(path)
        if real is None:
            return None
        try:
            st = os.stat(real)
        except OSError:
            return None
        # size and mtime, not the inode: a replica copied with its mtime has the same tag,
        # so a response can resume on it after a handoff (HttpServer.resume checks the tag)
        return FileInfo(path, st.st_size, st.st_mtime_ns, f'"{st.st_size:x}-{st.st_mtime_ns:x}"')

    def read(self, path: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer only at the end of the file)."""
        real = self._resolve(path)
        if real is None:
            raise VolumeError(f"{path}: no such file")
        try:
            fd = os.open(real, os.O_RDONLY)
            try:
                return _pread_all(fd, offset, length)
            finally:
                os.close(fd)
        except OSError as exc:
            raise VolumeError(f"{path}: {exc}") from exc

    def open_upload(self, path: str) -> _FileUpload:
        """Start an upload to ``path``; its parent directory must exist inside the root."""
        segments = _file_segments(path)
        if segments is None:
            raise VolumeError(f"{path}: not a file path")
        parent = os.path.realpath(self.root.joinpath(*segments[:-1]))
        if not self._inside(parent) or not os.path.isdir(parent):
            raise VolumeError(f"{path}: no such directory")
        target = os.path.join(parent, segments[-1])
        if os.path.isdir(target):
            raise VolumeError(f"{path}: is a directory")
        try:
            fd, temp = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=parent)
        except OSError as exc:
            raise VolumeError(f"{path}: {exc}") from exc
        return _FileUpload(fd, temp, target)


def _pread_all(fd: int, offset: int, length: int) -> bytes:
    parts = []
    while length > 0:
        data = os.pread(fd, min(length, 1 << 20), offset)
        if not data:
            break
        parts.append(data)
        offset += len(data)
        length -= len(data)
    return b"".join(parts)


class _FileUpload:
    """A temp file next to the target: fsync and rename on commit, so it appears whole or never."""

    def __init__(self, fd: int, temp: str, target: str) -> None:
        self._fd: int | None = fd
        self._temp, self._target = temp, target

    def _open_fd(self) -> int:
        if self._fd is None:
            raise VolumeError(f"{self._target}: upload already finished")
        return self._fd

    def write(self, offset: int, data: bytes) -> None:
        fd = self._open_fd()
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
        except OSError as exc:
            raise VolumeError(f"{self._target}: {exc}") from exc

    def read(self, offset: int, length: int) -> bytes:
        """What was written so far (to hand a partial upload to another device)."""
        try:
            return _pread_all(self._open_fd(), offset, length)
        except OSError as exc:
            raise VolumeError(f"{self._target}: {exc}") from exc

    def commit(self) -> None:
        fd = self._open_fd()
        try:
            os.fsync(fd)
            os.close(fd)
            self._fd = None
            os.replace(self._temp, self._target)
            dfd = os.open(os.path.dirname(self._target), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            self.abort()
            raise VolumeError(f"{self._target}: {exc}") from exc

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            os.unlink(self._temp)
        except FileNotFoundError:
            pass


class MemoryCatalog:
    """An in-memory volume (``Storage``) of canonical path -> bytes: the sim backend's disk."""

    def __init__(self, files: Mapping[str, bytes] | None = None, mtime_ns: int = 0) -> None:
        self.mtime_ns = mtime_ns
        self._files: dict[str, tuple[bytes, FileInfo]] = {}
        for path, data in (files or {}).items():
            self._store(path, bytes(data))

    def _store(self, path: str, data: bytes) -> None:
        if _file_segments(path) is None:
            raise VolumeError(f"{path}: not a canonical file path")
        # a content hash: equal content on two devices has the same tag (sim replicas)
        tag = hashlib.sha256(data).hexdigest()[:16]
        self._files[path] = (data, FileInfo(path, len(data), self.mtime_ns, f'"{tag}"'))

    def get(self, path: str) -> bytes | None:
        entry = self._files.get(path)
        return entry[0] if entry else None

    def stat(self, path: str) -> FileInfo | None:
        entry = self._files.get(path)
        return entry[1] if entry else None

    def read(self, path: str, offset: int, length: int) -> bytes:
        entry = self._files.get(path)
        if entry is None:
            raise VolumeError(f"{path}: no such file")
        return entry[0][offset:offset + length]

    def open_upload(self, path: str) -> _MemoryUpload:
        if _file_segments(path) is None:
            raise VolumeError(f"{path}: not a file path")
        return _MemoryUpload(self, path)


class _MemoryUpload:
    def __init__(self, catalog: MemoryCatalog, path: str) -> None:
        self._catalog, self._path = catalog, path
        self._data: bytearray | None = bytearray()

    def _buffer(self) -> bytearray:
        if self._data is None:
            raise VolumeError(f"{self._path}: upload already finished")
        return self._data

    def write(self, offset: int, data: bytes) -> None:
        buf = self._buffer()
        if len(buf) < offset:
            buf.extend(bytes(offset - len(buf)))
        buf[offset:offset + len(data)] = data

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self._buffer()[offset:offset + length])

    def commit(self) -> None:
        self._catalog._store(self._path, bytes(self._buffer()))
        self._data = None

    def abort(self) -> None:
        self._data = None


# ------------------------------------------------------------------ virtual root directory

_RD_MAGIC, _RD_FORMAT = b"RD", 1
_RD_HEAD = struct.Struct(">2sBQH")  # magic, format, directory version, entry count
MAX_NAME = 255  # bytes of a prefix or a device name


class RootDirectory:
    """The virtual root directory: path prefix -> device name, longest prefix wins.

    ``RootDirectory({"/d1/": "d1", "/d2/": "d2"}, version=3)``. Prefixes are plain string
    prefixes of canonical paths: end one with ``/`` to name a directory (``/d1`` would also
    match ``/d10``). Immutable; ``updated`` gives the next version.
    """

    __slots__ = ("_entries", "version")

    def __init__(self, prefixes: Mapping[str, str], version: int = 1) -> None:
        if not 0 <= version < 1 << 64:
            raise ValueError(f"version {version}: not a u64")
        for prefix, device in prefixes.items():
            if not _valid_entry(prefix, device):
                raise ValueError(f"bad entry {prefix!r} -> {device!r}")
        # longest first, so the first match is the longest one
        self._entries = tuple(sorted(prefixes.items(), key=lambda e: (-len(e[0]), e[0])))
        self.version = version

    @property
    def prefixes(self) -> dict[str, str]:
        return dict(self._entries)

    def owner(self, path: str) -> str | None:
        """The device holding ``path``, or None when no prefix covers it."""
        for prefix, device in self._entries:
            if path.startswith(prefix):
                return device
        return None

    def updated(self, prefixes: Mapping[str, str]) -> RootDirectory:
        return RootDirectory(prefixes, self.version + 1)

    def to_bytes(self) -> bytes:
        out = [_RD_HEAD.pack(_RD_MAGIC, _RD_FORMAT, self.version, len(self._entries))]
        for prefix, device in sorted(self._entries):
            for text in (prefix, device):
                raw = text.encode()
                out.append(bytes([len(raw)]) + raw)
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> RootDirectory | None:
        """The directory ``to_bytes`` encoded, or None for anything else (never raises)."""
        if len(data) < _RD_HEAD.size:
            return None
        magic, fmt, version, count = _RD_HEAD.unpack_from(data)
        if magic != _RD_MAGIC or fmt != _RD_FORMAT:
            return None
        pos, entries = _RD_HEAD.size, {}
        for _ in range(count):
            texts = []
            for _ in range(2):
                if pos >= len(data) or pos + 1 + data[pos] > len(data):
                    return None
                raw = data[pos + 1:pos + 1 + data[pos]]
                pos += 1 + data[pos]
                try:
                    texts.append(raw.decode())
                except UnicodeDecodeError:
                    return None
            prefix, device = texts
            if prefix in entries or not _valid_entry(prefix, device):
                return None
            entries[prefix] = device
        if pos != len(data):
            return None
        return cls(entries, version)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RootDirectory):
            return NotImplemented
        return (self.version, self._entries) == (other.version, other._entries)

    def __hash__(self) -> int:
        return hash((self.version, self._entries))

    def __repr__(self) -> str:
        return f"RootDirectory({self.prefixes!r}, version={self.version})"


def _valid_entry(prefix: object, device: object) -> bool:
    return (isinstance(prefix, str) and isinstance(device, str) and prefix.startswith("/")
            and device.isprintable() and prefix.isprintable() and device != ""
            and len(prefix.encode()) <= MAX_NAME and len(device.encode()) <= MAX_NAME)
