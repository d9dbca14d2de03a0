"""A small pcapng writer and a strict pcap/pcapng reader.

Writer: Scapy's writer names interfaces but cannot describe them, and the lab needs
one interface per link (``node:if``) with a description, plus comments that carry
the scenario step behind a packet. Nanosecond timestamps (if_tsresol = 9).

Reader: struct-based, so merge and replay never dissect; Scapy dissects a packet only
when its ``pkt`` is asked for. Scapy's own reader stops quietly at the first damage;
this one yields every good packet and then raises ``CaptureError`` saying at which
byte, in which record or block, and what is wrong, so a damaged capture never passes
for a shorter good one. It reads the whole file and indexes it into columns
(``Capture``): a run of plain Enhanced Packet Blocks or pcap records costs one struct
call per packet and no object, which is what lets replay keep up with tcpreplay.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import mmap
import os
import stat
import struct
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import accumulate, repeat
from typing import Any, BinaryIO

LINKTYPE_ETHERNET = 1
Buffer = bytes | bytearray | mmap.mmap
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
# The previous block's trailing length, then an Enhanced Packet Block's type, length,
# interface id, time (high, low) and captured length: one struct call per packet
_EPB_HEAD = {e: struct.Struct(e + "IIIIIII").unpack_from for e in "<>"}
_U32 = {e: struct.Struct(e + "I").unpack_from for e in "<>"}
_OPTION_HEAD = {e: struct.Struct(e + "HH").unpack_from for e in "<>"}
_WORDS = {e: struct.Struct(e + "II").unpack_from for e in "<>"}  # a packet's time stamp
_U32PACK = struct.Struct("<I").pack


def _registered(kind: int) -> bool:
    """A block type the pcapng registry assigns (Wireshark's list) or one for local use.

    Readers skip blocks they do not know, but no writer may use an unassigned type: one
    here is damage (most often a bit flipped in a packet block's type).
    """
    return (kind in (_SHB, 0xBAD, 0x40000BAD) or 1 <= kind <= 10 or 0x101 <= kind <= 0x102
            or 0x201 <= kind <= 0x221 or kind & 0x80000000 != 0)


class _Damage(Exception):
    """Raised inside the reader; the caller adds the source and the packet count.

    ``short``: the data ran out (in a gzip file, the stream's own damage is then the cause).
    """

    def __init__(self, offset: int, where: str, reason: str, short: bool = False):
        self.offset, self.where, self.reason, self.short = offset, where, reason, short


def _short(offset: int, where: str, need: int, got: int, packet: bool,
           part: str = "") -> _Damage:
    return _Damage(offset, where, f"{part}cut short, {got} of its {need} bytes are there "
                                  f"({_CUT} {'packet' if packet else 'block'})", short=True)


@dataclass(frozen=True)
class CaptureInterface:
    """An interface of a capture (a pcap file has one): how its packets' times are read."""

    name: str | None
    linktype: int
    snaplen: int
    per_second: int
    offset: int     # if_tsoffset, seconds
    endian: str
    scale: int      # ticks = first stamp word * scale + second: 2**32 (pcapng), per_second (pcap)
    description: str = ""  # if_description (ftsslab's names the whole link)


class Capture:
    """Every packet of a capture as columns over the file's bytes: no object per packet.

    Packet ``i`` is ``data[offsets[i]:offsets[i] + lengths[i]]`` on interface
    ``interfaces[ifaces[i]]``; in every record and packet block its time is the two 32-bit
    words 16 bytes before the data and its original length the word just before it, so
    times are read only when asked for. Replay and merge use these columns directly;
    ``read_packets`` makes a ``ReadPacket`` of each.
    """

    def __init__(self, data: Buffer, source: str | None):
        self.data, self.source = data, source
        self.offsets, self.lengths, self.ifaces = array("Q"), array("Q"), array("I")
        self.interfaces: list[CaptureInterface] = []
        self.comments: dict[int, list[str]] = {}   # packet number -> its comments
        self.notes: list[str] = []                 # the section headers' comments
        self.untimed: set[int] = set()             # Simple Packet Blocks: no time (0)

    def __len__(self) -> int:
        return len(self.offsets)

    def ticks(self) -> list[int]:
        """Each packet's time in its interface's units (``per_second``), from the file."""
        data, ifs = self.data, self.interfaces
        starts = map((-16).__add__, self.offsets)
        if len(ifs) == 1:
            scale, words = ifs[0].scale, _WORDS[ifs[0].endian]
            ticks = [a * scale + b for a, b in map(words, repeat(data), starts)]
        else:
            ticks = []
            for k, at in zip(self.ifaces, starts, strict=True):
                a, b = _WORDS[ifs[k].endian](data, at)
                ticks.append(a * ifs[k].scale + b)
        for i in self.untimed:
            ticks[i] = 0
        return ticks

    def times(self) -> list[float]:
        """Each packet's time in seconds since the epoch (``ReadPacket.time``)."""
        return self._scaled(lambda i: (lambda t: t / i.per_second + i.offset))

    def times_ns(self) -> list[int]:
        """Each packet's time in nanoseconds: exact at a resolution of 1 ns or coarser."""
        if [(i.per_second, i.offset) for i in self.interfaces] == [(10**9, 0)]:
            return self.ticks()  # ftsslab's own captures
        return self._scaled(lambda i: (lambda t: t * 10**9 // i.per_second + i.offset * 10**9))

    def _scaled(self, per_iface: Callable) -> list:
        ticks, convert = self.ticks(), [per_iface(i) for i in self.interfaces]
        if len(convert) == 1:
            return list(map(convert[0], ticks))
        return [convert[k](t) for k, t in zip(self.ifaces, ticks, strict=True)]

    def wirelen(self, i: int) -> int:
        return _U32[self.interfaces[self.ifaces[i]].endian](self.data, self.offsets[i] - 4)[0]

    def packets(self) -> Iterator[ReadPacket]:
        for i, (at, length, k, stamp) in enumerate(
                zip(self.offsets, self.lengths, self.ifaces, self.times(), strict=True)):
            iface = self.interfaces[k]
            yield ReadPacket(stamp, iface.name, list(self.comments.get(i, ())),
                             bytes(self.data[at:at + length]), iface.linktype, self.wirelen(i))


def read_capture(source: str | os.PathLike | bytes | bytearray,
                 ) -> tuple[Capture, CaptureError | None]:
    """The capture's good packets and the damage after them, if any (a report shows both)."""
    name = None if isinstance(source, bytes | bytearray) else os.fspath(source)
    if name is None:
        data: Buffer = bytes(source)
    else:
        with open(name, "rb") as fh:
            data = _map(fh)
    gzipped = data[:2] == b"\x1f\x8b"
    broken = None
    if gzipped:
        data, broken = _gunzip(data)
    cap = Capture(data, name)
    try:
        (_walk_pcapng if data[:4] == _SHB_MAGIC else _walk_pcap)(cap)
        damage = broken
    except _Damage as exc:
        damage = exc
        if exc.short and broken is not None:  # the data ran out where the gzip stream broke
            damage = _Damage(exc.offset, "", broken.reason)
    if damage is None:
        return cap, None
    return cap, CaptureError(damage.offset, damage.where, damage.reason, source=name,
                             packets=len(cap), gzipped=gzipped)


def _map(fh: BinaryIO) -> Buffer:
    """A regular file's bytes, mapped (copy-on-write, never written): not read into memory,
    so a 100 MB capture costs nothing before its packets are used. (Truncating the file
    while it is mapped kills the reader with SIGBUS; other files are read.)"""
    info = os.fstat(fh.fileno())
    if stat.S_ISREG(info.st_mode) and info.st_size:
        with contextlib.suppress(OSError):  # a file system that cannot map it: read it
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
    return fh.read()


def _gunzip(data: Buffer) -> tuple[bytearray, _Damage | None]:
    """As much as decompresses, and the damage (at its end) if the stream is broken."""
    out = bytearray()
    stream = gzip.GzipFile(fileobj=io.BytesIO(data))
    try:
        while chunk := stream.read1(1 << 20):  # read1: what a call decoded is never lost
            out += chunk
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        return out, _Damage(len(out), "", f"the gzip stream is damaged or cut short ({exc})")
    return out, None


def load_capture(source: str | os.PathLike | bytes | bytearray) -> Capture:
    """Every packet of a pcap or pcapng file (a path or its bytes; gzip works too), at once.

    CaptureError (a ValueError) when the data is not a capture file or is damaged anywhere;
    OSError when a path cannot be read.
    """
    cap, damage = read_capture(source)
    if damage is not None:
        raise damage
    return cap


def read_packets(source: str | os.PathLike | bytes | bytearray) -> Iterator[ReadPacket]:
    """Every packet of a pcap or pcapng file (a path or its bytes; gzip works too).

    CaptureError (a ValueError) when the data is not a capture file, or after the last
    good packet when it is damaged; OSError when a path cannot be read.
    """
    cap, damage = read_capture(source)
    yield from cap.packets()
    if damage is not None:
        raise damage


def merge(out: str | os.PathLike, inputs: list[str | os.PathLike]) -> int:
    """Merge captures by time into the pcapng ``out``; the number of packets written.

    Interfaces keep their names (one output interface per name; an unnamed one is
    ``<file>#<n>``), packets their comments and original lengths; packets of the same
    time stay in input order. Every input is read and checked before ``out`` is opened,
    so a damaged one (CaptureError) writes nothing. No object per packet but the output's
    byte strings.
    """
    caps = [load_capture(p) for p in inputs]
    stamps = [t for cap in caps for t in cap.times_ns()]
    order = sorted(range(len(stamps)), key=stamps.__getitem__)  # stable: ties by input
    owner = array("I")
    for n, cap in enumerate(caps):
        owner.extend(array("I", [n]) * len(cap))
    firsts = list(accumulate((len(cap) for cap in caps), initial=0))
    head, end_of_options = struct.Struct("<IIIIII").pack, struct.pack("<HH", _OPT_END, 0)
    tails = [struct.Struct(f"<{pad}xI").pack for pad in range(4)]  # padding, trailing length
    with open(out, "wb") as fh:
        w = PcapNgWriter(fh, comments=[f"merged by ftsslab from {len(inputs)} files"])
        ids, views, swapped = [], [], []
        for path, cap in zip(inputs, caps, strict=True):
            src = os.path.basename(path)
            ids.append([w.interface(Interface(i.name or f"{src}#{k}", f"from {src}", i.linktype))
                        for k, i in enumerate(cap.interfaces)])
            views.append(memoryview(cap.data))
            swapped.append([i.endian != "<" for i in cap.interfaces])
        parts: list[bytes | memoryview] = []
        for g in order:
            n = owner[g]
            cap, i, t = caps[n], g - firsts[n], stamps[g]
            at, caplen, k = cap.offsets[i], cap.lengths[i], cap.ifaces[i]
            pad = -caplen % 4
            opts = b""
            if i in cap.comments:
                opts = b"".join(_option(_OPT_COMMENT, c.encode()) for c in cap.comments[i])
                opts += end_of_options
            total = 32 + caplen + pad + len(opts)
            parts.append(head(_EPB, total, ids[n][k], t >> 32, t & 0xFFFFFFFF, caplen))
            if swapped[n][k]:  # the original length, then the data
                parts += (_U32PACK(cap.wirelen(i)), views[n][at:at + caplen])
            else:
                parts.append(views[n][at - 4:at + caplen])
            if opts:
                parts += (b"\0" * pad, opts, _U32PACK(total))
            else:
                parts.append(tails[pad](total))
            if len(parts) > 16384:
                fh.write(b"".join(parts))
                parts.clear()
        fh.write(b"".join(parts))
    return len(order)


def _walk_pcap(cap: Capture) -> None:
    buf, end = cap.data, len(cap.data)
    magic = bytes(buf[:4])
    if magic not in _PCAP_MAGIC:
        what = "an empty file" if not magic else f"it starts with {magic.hex(' ')}"
        raise _Damage(0, "", f"not a pcap or pcapng capture: {what}")
    endian, per_second = _PCAP_MAGIC[magic]
    if end < 24:
        raise _short(0, "pcap file header", 24, end, False)
    major, minor, _, _, snaplen, linktype = struct.unpack_from(endian + "HHiIII", buf, 4)
    if major != 2:
        raise _Damage(4, "pcap file header", f"version {major}.{minor}, not 2.x")
    cap.interfaces.append(CaptureInterface(None, linktype, snaplen, per_second, 0, endian,
                                           per_second))
    limit = min(max(snaplen, MAX_SNAPLEN), MAX_BLOCK)
    record = struct.Struct(endian + "IIII").unpack_from
    add_offset, add_length = cap.offsets.append, cap.lengths.append
    pos = 24
    while pos + 16 <= end:
        caplen = record(buf, pos)[2]
        if caplen > limit or pos + 16 + caplen > end:
            break
        add_offset(pos + 16)
        add_length(caplen)
        pos += 16 + caplen
    cap.ifaces = array("I", bytes(4 * len(cap)))  # all on the one interface
    if pos == end:
        return
    where, avail = f"record {len(cap) + 1}", end - pos
    if avail < 16:
        raise _short(pos, where, 16, avail, True, "header ")
    caplen = record(buf, pos)[2]
    if caplen > limit:
        raise _Damage(pos + 8, where, f"captured length {caplen} is absurd "
                      f"(snapshot length {snaplen}; at most {limit} is accepted)")
    raise _short(pos, where, 16 + caplen, avail, True)


def _walk_pcapng(cap: Capture) -> None:
    buf, end = cap.data, len(cap.data)
    add_offset, add_length, add_iface = cap.offsets.append, cap.lengths.append, cap.ifaces.append
    endian = "<"
    section: list[CaptureInterface] = []    # this section's interfaces, by interface id
    first = 0                               # the number of the section's first interface
    pos = n = 0
    while True:
        if section:
            before = len(cap)
            pos = _epb_run(cap, pos, endian, len(section), first)
            n += len(cap) - before
        if pos >= end:
            return
        start, avail = pos, end - pos
        n += 1
        if buf[start:start + 4] == _SHB_MAGIC:  # a new section: its own byte order, interfaces
            if avail < 12:
                raise _short(start, f"block {n} (Section Header Block)", 28, avail, False)
            bom = bytes(buf[start + 8:start + 12])
            if bom not in _BOM:
                raise _Damage(start + 8, f"block {n} (Section Header Block)",
                              f"bad byte-order magic {bom.hex(' ')}")
            endian, section, first = _BOM[bom], [], len(cap.interfaces)
        if avail < 8:
            raise _short(start, f"block {n}", 8, avail, False, "header ")
        kind, total = struct.unpack_from(endian + "II", buf, start)
        where = f"block {n} ({_BLOCK_NAMES.get(kind, f'type {kind:#x}')})"
        least = 28 if kind == _SHB else 12
        if total < least or total % 4 or total > MAX_BLOCK:
            raise _Damage(start + 4, where, f"total length {total} is impossible "
                                            f"(a multiple of 4 from {least} to {MAX_BLOCK})")
        if total > avail:
            raise _short(start, where, total, avail, kind in _PACKET_BLOCKS)
        (trailer,) = _U32[endian](buf, start + total - 4)
        if trailer != total:
            raise _Damage(start + total - 4, where,
                          f"total length {total} at its start but {trailer} at its end")
        body, base = bytes(buf[start + 8:start + total - 4]), start + 8
        if not _registered(kind):
            raise _Damage(start, where, "not a registered or local-use block type")
        if kind == _SHB:
            major, minor = struct.unpack_from(endian + "HH", body, 4)
            if major != 1:
                raise _Damage(base + 4, where, f"pcapng version {major}.{minor}, not 1.x")
            cap.notes += _text(_options(body, 16, endian, base, where).get(_OPT_COMMENT, []))
        elif kind == _IDB:
            section.append(_interface(body, endian, base, where))
            cap.interfaces.append(section[-1])
        elif kind in _PACKET_BLOCKS:
            at, caplen, ifid, comments = _packet(kind, body, endian, base, where, section)
            if kind == _SPB:
                cap.untimed.add(len(cap))
            if comments:
                cap.comments[len(cap)] = comments
            add_offset(base + at)
            add_length(caplen)
            add_iface(first + ifid)
        pos = start + total


def _epb_run(cap: Capture, pos: int, endian: str, nif: int, first: int) -> int:
    """Index the run of Enhanced Packet Blocks from ``pos`` that have no options, or one comment
    (what ftsslab writes for every frame), so nothing to check but lengths, interface and
    that one option; where it ends. One struct call per block also checks the trailing
    length of the block before; a block that fails is left to the careful path."""
    buf, end, before = cap.data, len(cap.data), len(cap)
    head, add_offset, add_length = _EPB_HEAD[endian], cap.offsets.append, cap.lengths.append
    option, comments = _OPTION_HEAD[endian], cap.comments
    last = _U32[endian](buf, pos - 4)[0]  # the block before was checked whole
    limit, most = end - 24, MAX_BLOCK  # (the loop is the reader's hot path: locals only)
    while pos <= limit:
        trailer, kind, total, ifid, _, _, caplen = head(buf, pos - 4)
        after = pos + total
        if trailer != last or kind != 6 or ifid >= nif or after > end or total > most:
            break
        plain = caplen + 35 & -4  # a block of 32 bytes + data padded to 4
        if total != plain:
            at = pos + plain - 4  # the options: a comment, then the end of options
            if total < plain + 8:
                break
            code, length = option(buf, at)
            tail = at + 4 + (length + 3 & -4)
            if code != _OPT_COMMENT or tail + 8 != after or option(buf, tail) != (0, 0):
                break
            comments[len(cap)] = [bytes(buf[at + 4:at + 4 + length]).decode("utf-8",
                                                                            "replace")]
        add_offset(pos + 28)
        add_length(caplen)
        pos, last = after, total
    if len(cap) > before and _U32[endian](buf, pos - 4)[0] != last:  # the last one's trailer
        cap.offsets.pop()
        cap.lengths.pop()
        comments.pop(len(cap), None)
        pos -= last
    if nif == 1:
        cap.ifaces.extend(array("I", [first]) * (len(cap) - before))
    else:
        u32 = _U32[endian]
        cap.ifaces.extend(first + u32(buf, at - 20)[0] for at in cap.offsets[before:])
    return pos


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


def _interface(body: bytes, endian: str, base: int, where: str) -> CaptureInterface:
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
    description = _text(opts[_IF_DESCRIPTION])[0] if _IF_DESCRIPTION in opts else ""
    return CaptureInterface(name, linktype, snaplen, per_second, offset, endian, 2**32,
                            description)


def _packet(kind: int, body: bytes, endian: str, base: int, where: str,
            ifaces: list[CaptureInterface]) -> tuple[int, int, int, list[str]]:
    """(where its data starts in the body, its length, its interface id, its comments)."""
    if kind == _SPB:  # interface 0, no time, no options
        if len(body) < 4:
            raise _Damage(base, where, f"{len(body)} bytes of body, 4 needed")
        if not ifaces:
            raise _Damage(base, where, "no interface is described before it")
        (wirelen,) = struct.unpack_from(endian + "I", body)
        return 4, min(wirelen, ifaces[0].snaplen or wirelen, len(body) - 4), 0, []
    if len(body) < 20:
        raise _Damage(base, where, f"{len(body)} bytes of body, 20 needed")
    if kind == _EPB:
        ifid, _, _, caplen, _ = struct.unpack_from(endian + "IIIII", body)
    else:  # the obsolete Packet Block
        ifid, _, _, _, caplen, _ = struct.unpack_from(endian + "HHIIII", body)
    if ifid >= len(ifaces):
        raise _Damage(base, where, f"unknown interface id {ifid} "
                                   f"(the section describes {len(ifaces)})")
    if 20 + caplen > len(body):
        raise _Damage(base + 12, where, f"captured length {caplen} does not fit in the block "
                                        f"({len(body) - 20} bytes of packet data)")
    opts = _options(body, 20 + caplen + (-caplen % 4), endian, base, where)
    return 20, caplen, ifid, _text(opts.get(_OPT_COMMENT, []))
