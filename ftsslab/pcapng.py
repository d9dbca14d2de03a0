"""A small pcapng writer: named interfaces with descriptions, per-packet comments.

Scapy's writer names interfaces but cannot describe them, and the lab needs one
interface per link (``node:if``) with a description, plus comments that carry
the scenario step behind a packet. Nanosecond timestamps (if_tsresol = 9).
"""

from __future__ import annotations

import io
import os
import struct
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
    """One packet of a capture: Scapy's dissection and what the file says about it."""

    pkt: Any            # the Scapy packet
    time: float
    interface: str | None
    comments: list[str]
    data: bytes         # the bytes as captured (not re-encoded)


def read_packets(source: str | os.PathLike | bytes | bytearray) -> Iterator[ReadPacket]:
    """Every packet of a pcap or pcapng file (a path or its bytes; gzip works too).

    ValueError when the data is not a capture file.
    """
    from scapy.error import Scapy_Exception
    from scapy.utils import PcapReader

    handle: Any = (io.BytesIO(bytes(source)) if isinstance(source, bytes | bytearray)
                   else os.fspath(source))
    try:
        reader = PcapReader(handle)
    except (Scapy_Exception, EOFError, ValueError) as exc:
        raise ValueError(f"not a pcap or pcapng capture ({exc})") from None
    with reader:
        try:
            for pkt in reader:
                comments = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
                            for c in (getattr(pkt, "comments", None) or [])]
                original = getattr(pkt, "original", None)
                yield ReadPacket(pkt, float(pkt.time), getattr(pkt, "sniffed_on", None),
                                 comments, bytes(original) if original is not None else bytes(pkt))
        except (Scapy_Exception, EOFError) as exc:
            raise ValueError(f"not a pcap or pcapng capture ({exc})") from None
