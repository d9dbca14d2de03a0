"""A small pcapng writer and a strict pcap/pcapng reader.

Writer: Scapy's writer names interfaces but cannot describe them, and the lab needs
one interface per link (``node:if``) with a description, plus comments that carry
the scenario step behind a packet. Nanosecond timestamps (if_tsresol = 9).

Reader: struct-based, so merge and replay never dissect; Scapy dissects a packet only
when its ``pkt`` is asked for. Scapy's own reader stops quietly at the first damage;
this one yields every good packet and then raises ``CaptureError`` saying at which
byte, in which record or block, and what is wrong, so a damaged capture never passes
for a shorter good one.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

LINKTYPE_ETHERNET = 1
_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_OPT_END, _OPT_COMMENT = 0, 1
_IF_NAME, _IF_DESCRIPTION, _IF_TSRESOL = 2, 3, 9


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _block(kind: int, body: bytes, options: bytes = b"") -> bytes:
    if options:
        options += struct.pack("<HH", _OPT_END, 0)
    total = 12 + len(body) + len(options)
    return struct.pack("<II", kind, total) + body + options + struct.pack("<I", total)


@dataclass(frozen=True)
class Interface:
    name: str
    description: str = ""
    linktype: int = LINKTYPE_ETHERNET


class PcapNgWriter:
    """Write a section with interfaces declared up front (or on first use)."""

    def __init__(self, fh: BinaryIO, application: str = "ftsslab", comments: list[str] = ()):
        self.fh = fh
        self.ids: dict[str, int] = {}
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
        opts = b"".join(_option(_OPT_COMMENT, c.encode()) for c in comments)
        self.fh.write(_block(_SHB, shb, opts + _option(4, application.encode())))

    def interface(self, iface: Interface) -> int:
        if iface.name not in self.ids:
            opts = _option(_IF_NAME, iface.name.encode())
            if iface.description:
                opts += _option(_IF_DESCRIPTION, iface.description.encode())
            opts += _option(_IF_TSRESOL, b"\x09")
            self.fh.write(_block(_IDB, struct.pack("<HHI", iface.linktype, 0, 262144), opts))
            self.ids[iface.name] = len(self.ids)
        return self.ids[iface.name]

    def packet(
        self,
        iface: str | Interface,
        data: bytes,
        time_ns: int,
        comments: list[str] | tuple[str, ...] = (),
    ) -> None:
        ifid = self.interface(iface if isinstance(iface, Interface) else Interface(iface))
        body = struct.pack(
            "<IIIII", ifid, time_ns >> 32, time_ns & 0xFFFFFFFF, len(data), len(data)
        )
        opts = b"".join(_option(_OPT_COMMENT, c.encode()) for c in comments)
        self.fh.write(_block(_EPB, body + _pad(data), opts))


@dataclass
class ReadPacket:
    """One packet of a capture: what the file says about it, and Scapy's dissection."""

    time: float
    interface: str | None
    comments: list[str]
    data: bytes         # the bytes as captured
    linktype: int = LINKTYPE_ETHERNET
    wirelen: int | None = None

    @functools.cached_property
    def pkt(self) -> Any:
        """The Scapy packet (dissected on first use; Raw when the link type is unknown)."""
        from scapy.config import conf

        cls = conf.l2types.num2layer.get(self.linktype, conf.raw_layer)
        try:
            p = cls(self.data)
        except Exception:  # a dissector bug must not hide the packet's bytes
            p = conf.raw_layer(self.data)
        p.time, p.wirelen = self.time, self.wirelen
        p.comments = [c.encode() for c in self.comments]  # as Scapy's reader gives them
        if self.interface is not None:
            p.sniffed_on = self.interface
        return p


class CaptureError(ValueError):
    """Not a capture, or a damaged one: at which byte, in which record or block, what.

    A reader raises it after yielding every packet before the damage; ``packets`` is
    how many that was. The message is one line.
    """

    def __init__(self, offset: int, where: str, reason: str, *, source: str | None = None,
                 packets: int = 0, gzipped: bool = False):
        self.offset, self.where, self.reason = offset, where, reason
        self.source, self.packets = source, packets
        at = f"byte {offset}" + (" of the decompressed data" if gzipped else "")
        text = f"damaged at {at}, {where}: {reason}" if where else f"{reason} (at {at})"
        super().__init__(f"{source}: {text}" if source else text)


MAX_BLOCK = 16 * 2**20   # a bigger pcapng block or pcap record is damage (as in Wireshark)
MAX_SNAPLEN = 262144     # a pcap record may exceed a smaller snaplen, never this (libpcap)
_PCAP_MAGIC = {b"\xa1\xb2\xc3\xd4": (">", 10**6), b"\xd4\xc3\xb2\xa1": ("<", 10**6),
               b"\xa1\xb2\x3c\x4d": (">", 10**9), b"\x4d\x3c\xb2\xa1": ("<", 10**9)}
_SHB_MAGIC = struct.pack("<I", _SHB)
_BOM = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
_SPB, _OPB = 3, 2
_PACKET_BLOCKS = (_OPB, _SPB, _EPB)
_BLOCK_NAMES = {_SHB: "Section Header Block", _IDB: "Interface Description Block",
                _OPB: "Packet Block", _SPB: "Simple Packet Block", 4: "Name Resolution Block",
                5: "Interface Statistics Block", _EPB: "Enhanced Packet Block",
                10: "Decryption Secrets Block"}
_IF_TSOFFSET = 14
_CUT = "the file appears to have been cut short in the middle of a"  # tshark's words


def _registered(kind: int) -> bool:
    """A block type the pcapng registry assigns (Wireshark's list) or one for local use.

    Readers skip blocks they do not know, but no writer may use an unassigned type: one
    here is damage (most often a bit flipped in a packet block's type).
    """
    return (kind in (_SHB, 0xBAD, 0x40000BAD) or 1 <= kind <= 10 or 0x101 <= kind <= 0x102
            or 0x201 <= kind <= 0x221 or kind & 0x80000000 != 0)


class _Damage(Exception):
    """Raised inside the reader; read_packets adds the source and the packet count."""

    def __init__(self, offset: int, where: str, reason: str):
        self.offset, self.where, self.reason = offset, where, reason


def _short(offset: int, where: str, need: int, got: int, packet: bool,
           part: str = "") -> _Damage:
    return _Damage(offset, where, f"{part}cut short, {got} of its {need} bytes are there "
                                  f"({_CUT} {'packet' if packet else 'block'})")


class _Stream:
    """``read`` that counts bytes and turns a broken gzip stream into damage."""

    def __init__(self, fh: BinaryIO):
        self.fh, self.offset = fh, 0

    def read(self, n: int) -> bytes:
        try:
            data = self.fh.read(n)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise _Damage(self.offset, "", f"the gzip stream is damaged or cut short ({exc})") \
                from None
        self.offset += len(data)
        return data


def read_packets(source: str | os.PathLike | bytes | bytearray) -> Iterator[ReadPacket]:
    """Every packet of a pcap or pcapng file (a path or its bytes; gzip works too).

    CaptureError (a ValueError) when the data is not a capture file, or after the last
    good packet when it is damaged; OSError when a path cannot be read.
    """
    name = None if isinstance(source, bytes | bytearray) else os.fspath(source)
    raw: BinaryIO = (io.BytesIO(bytes(source)) if name is None else open(name, "rb"))
    count = 0
    with raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = _Stream(gzip.GzipFile(fileobj=raw) if gzipped else raw)
        try:
            magic = stream.read(4)
            reader = _read_pcapng if magic == _SHB_MAGIC else _read_pcap
            for pkt in reader(stream, magic):
                count += 1
                yield pkt
        except _Damage as exc:
            raise CaptureError(exc.offset, exc.where, exc.reason, source=name, packets=count,
                               gzipped=gzipped) from None


def _read_pcap(stream: _Stream, magic: bytes) -> Iterator[ReadPacket]:
    if magic not in _PCAP_MAGIC:
        what = "an empty file" if not magic else f"it starts with {magic.hex(' ')}"
        raise _Damage(0, "", f"not a pcap or pcapng capture: {what}")
    endian, per_second = _PCAP_MAGIC[magic]
    header = stream.read(20)
    if len(header) < 20:
        raise _short(0, "pcap file header", 24, 4 + len(header), False)
    major, minor, _, _, snaplen, linktype = struct.unpack(endian + "HHiIII", header)
    if major != 2:
        raise _Damage(4, "pcap file header", f"version {major}.{minor}, not 2.x")
    limit = min(max(snaplen, MAX_SNAPLEN), MAX_BLOCK)
    record = struct.Struct(endian + "IIII")
    n = 0
    while True:
        start = stream.offset
        hdr = stream.read(16)
        if not hdr:
            return
        n += 1
        if len(hdr) < 16:
            raise _short(start, f"record {n}", 16, len(hdr), True, "header ")
        sec, frac, caplen, wirelen = record.unpack(hdr)
        if caplen > limit:
            raise _Damage(start + 8, f"record {n}", f"captured length {caplen} is absurd "
                          f"(snapshot length {snaplen}; at most {limit} is accepted)")
        data = stream.read(caplen)
        if len(data) < caplen:
            raise _short(start, f"record {n}", 16 + caplen, 16 + len(data), True)
        yield ReadPacket((sec * per_second + frac) / per_second, None, [], data, linktype,
                         wirelen)


@dataclass
class _Iface:
    linktype: int
    snaplen: int
    name: str | None
    per_second: int
    offset: int


def _read_pcapng(stream: _Stream, magic: bytes) -> Iterator[ReadPacket]:
    endian = "<"
    ifaces: list[_Iface] = []
    head, n = magic, 0
    while True:
        start = stream.offset - len(head)
        head += stream.read(8 - len(head))
        if not head:
            return
        n += 1
        if head[:4] == _SHB_MAGIC:  # a new section: its own byte order and interfaces
            head += stream.read(12 - len(head))
            if len(head) < 12:
                raise _short(start, f"block {n} (Section Header Block)", 28, len(head), False)
            if head[8:12] not in _BOM:
                raise _Damage(start + 8, f"block {n} (Section Header Block)",
                              f"bad byte-order magic {head[8:12].hex(' ')}")
            endian, ifaces = _BOM[head[8:12]], []
        if len(head) < 8:
            raise _short(start, f"block {n}", 8, len(head), False, "header ")
        kind, total = struct.unpack_from(endian + "II", head)
        where = f"block {n} ({_BLOCK_NAMES.get(kind, f'type {kind:#x}')})"
        least = 28 if kind == _SHB else 12
        if total < least or total % 4 or total > MAX_BLOCK:
            raise _Damage(start + 4, where, f"total length {total} is impossible "
                                            f"(a multiple of 4 from {least} to {MAX_BLOCK})")
        rest = stream.read(total - len(head))
        if len(rest) < total - len(head):
            raise _short(start, where, total, len(head) + len(rest), kind in _PACKET_BLOCKS)
        block, head = head + rest, b""
        (trailer,) = struct.unpack_from(endian + "I", block, total - 4)
        if trailer != total:
            raise _Damage(start + total - 4, where,
                          f"total length {total} at its start but {trailer} at its end")
        body, base = block[8:-4], start + 8
        if not _registered(kind):
            raise _Damage(start, where, "not a registered or local-use block type")
        if kind == _SHB:
            major, minor = struct.unpack_from(endian + "HH", body, 4)
            if major != 1:
                raise _Damage(base + 4, where, f"pcapng version {major}.{minor}, not 1.x")
            _options(body, 16, endian, base, where)
        elif kind == _IDB:
            ifaces.append(_interface(body, endian, base, where))
        elif kind in _PACKET_BLOCKS:
            yield _packet(kind, body, endian, base, where, ifaces)


def _options(body: bytes, at: int, endian: str, base: int, where: str) -> dict[int, list[bytes]]:
    """A block's options from ``body[at:]``; ``base`` is the body's offset in the file."""
    opts: dict[int, list[bytes]] = {}
    while at < len(body):
        if len(body) - at < 4:
            raise _Damage(base + at, where, f"{len(body) - at} stray bytes after its options")
        code, length = struct.unpack_from(endian + "HH", body, at)
        if code == _OPT_END:
            if length or at + 4 != len(body):
                raise _Damage(base + at, where, "bytes after its end-of-options marker"
                              if not length else f"end-of-options marker of length {length}")
            break
        if at + 4 + length > len(body):
            raise _Damage(base + at, where, f"option {code} of {length} bytes overruns the "
                                            f"block")
        opts.setdefault(code, []).append(body[at + 4:at + 4 + length])
        at += 4 + length + (-length % 4)
    return opts


def _text(values: list[bytes]) -> list[str]:
    return [v.decode("utf-8", "replace") for v in values]


def _interface(body: bytes, endian: str, base: int, where: str) -> _Iface:
    if len(body) < 8:
        raise _Damage(base, where, f"{len(body)} bytes of body, 8 needed")
    linktype, _, snaplen = struct.unpack_from(endian + "HHI", body)
    opts = _options(body, 8, endian, base, where)
    per_second, offset = 10**6, 0
    if _IF_TSRESOL in opts:
        value = opts[_IF_TSRESOL][0]
        if len(value) != 1:
            raise _Damage(base, where, f"if_tsresol of {len(value)} bytes, 1 expected")
        per_second = (2 if value[0] & 0x80 else 10) ** (value[0] & 0x7F)
    if _IF_TSOFFSET in opts:
        value = opts[_IF_TSOFFSET][0]
        if len(value) != 8:
            raise _Damage(base, where, f"if_tsoffset of {len(value)} bytes, 8 expected")
        (offset,) = struct.unpack(endian + "q", value)
    name = _text(opts[_IF_NAME])[0] if _IF_NAME in opts else None
    return _Iface(linktype, snaplen, name, per_second, offset)


def _packet(kind: int, body: bytes, endian: str, base: int, where: str,
            ifaces: list[_Iface]) -> ReadPacket:
    if kind == _SPB:  # interface 0, no time, no options
        if len(body) < 4:
            raise _Damage(base, where, f"{len(body)} bytes of body, 4 needed")
        if not ifaces:
            raise _Damage(base, where, "no interface is described before it")
        iface = ifaces[0]
        (wirelen,) = struct.unpack_from(endian + "I", body)
        caplen = min(wirelen, iface.snaplen or wirelen, len(body) - 4)
        return ReadPacket(0.0, iface.name, [], body[4:4 + caplen], iface.linktype, wirelen)
    if len(body) < 20:
        raise _Damage(base, where, f"{len(body)} bytes of body, 20 needed")
    if kind == _EPB:
        ifid, high, low, caplen, wirelen = struct.unpack_from(endian + "IIIII", body)
    else:  # the obsolete Packet Block
        ifid, _, high, low, caplen, wirelen = struct.unpack_from(endian + "HHIIII", body)
    if ifid >= len(ifaces):
        raise _Damage(base, where, f"unknown interface id {ifid} "
                                   f"(the section describes {len(ifaces)})")
    if 20 + caplen > len(body):
        raise _Damage(base + 12, where, f"captured length {caplen} does not fit in the block "
                                        f"({len(body) - 20} bytes of packet data)")
    opts = _options(body, 20 + caplen + (-caplen % 4), endian, base, where)
    iface = ifaces[ifid]
    stamp = ((high << 32) | low) / iface.per_second + iface.offset
    return ReadPacket(stamp, iface.name, _text(opts.get(_OPT_COMMENT, [])),
                      body[20:20 + caplen], iface.linktype, wirelen)
