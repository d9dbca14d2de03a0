"""Link state of the interfaces in the *current* network namespace, from the kernel.

A node process entered its namespace with ``nsenter --net``: ``/sys/class/net`` still
shows the root namespace's interfaces (sysfs is not remounted), so it cannot be read
there. ``LinkMonitor`` asks the kernel instead: ``SIOCGIFFLAGS`` once per interface
for the state at start, then an rtnetlink socket subscribed to ``RTMGRP_LINK`` for
every change, the moment it happens (``fileno()`` goes into the node's selector).

A link is *up* when it is administratively up and has carrier (``IFF_UP`` and
``IFF_RUNNING``): a veth whose peer went down loses its carrier.
"""

from __future__ import annotations

import fcntl
import socket
import struct

SIOCGIFFLAGS = 0x8913
SIOCGIFMTU = 0x8921
IFF_UP = 0x1
IFF_RUNNING = 0x40
RTMGRP_LINK = 0x1
RTM_NEWLINK, RTM_DELLINK = 16, 17
IFLA_IFNAME = 3

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTATTR = struct.Struct("=HH")  # len, type


def iface_flags(iface: str) -> int:
    """``ifr_flags`` of ``iface`` in this namespace (OSError when it does not exist)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", iface.encode(), 0))
    return struct.unpack_from("16sH", ifr)[1]


def iface_mtu(iface: str) -> int:
    """The MTU of ``iface`` in this namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, SIOCGIFMTU, struct.pack("16si12x", iface.encode(), 0))
    return struct.unpack_from("16si", ifr)[1]


def flags_up(flags: int) -> bool:
    return flags & (IFF_UP | IFF_RUNNING) == IFF_UP | IFF_RUNNING


def parse_link_messages(data: bytes) -> list[tuple[str | None, int, bool]]:
    """(name or None, ifindex, up) of each RTM_NEWLINK/RTM_DELLINK in one netlink read.

    Never raises: a truncated or foreign message ends the walk.
    """
    out: list[tuple[str | None, int, bool]] = []
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, mtype, _, _, _ = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > len(data):
            break
        body = off + _NLMSGHDR.size
        if mtype in (RTM_NEWLINK, RTM_DELLINK) and body + _IFINFOMSG.size <= off + length:
            _, _, index, flags, _ = _IFINFOMSG.unpack_from(data, body)
            name = None
            attr = body + _IFINFOMSG.size
            while attr + _RTATTR.size <= off + length:
                alen, atype = _RTATTR.unpack_from(data, attr)
                if alen < _RTATTR.size or attr + alen > off + length:
                    break
                if atype == IFLA_IFNAME:
                    name = data[attr + _RTATTR.size : attr + alen].split(b"\0", 1)[0].decode(
                        errors="replace")
                attr += (alen + 3) & ~3
            out.append((name, index, mtype == RTM_NEWLINK and flags_up(flags)))
        off += (length + 3) & ~3
    return out


class LinkMonitor:
    """Up/down of ``ifaces``; ``changes()`` after ``fileno()`` is readable."""

    def __init__(self, ifaces: list[str]):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, RTMGRP_LINK))  # subscribed first: no change is missed
        self.sock.setblocking(False)
        self.index = {socket.if_nametoindex(i): i for i in ifaces}
        self.up = {i: flags_up(iface_flags(i)) for i in ifaces}

    def fileno(self) -> int:
        return self.sock.fileno()

    def changes(self) -> list[tuple[str, bool]]:
        """(iface, up) for each of our interfaces whose state changed since the last call."""
        out: list[tuple[str, bool]] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError:  # ENOBUFS: events were lost; read the truth instead
                out += self._resync()
                continue
            for _, index, up in parse_link_messages(data):
                out += self._set(self.index.get(index), up)

    def mark(self, iface: str, up: bool) -> list[tuple[str, bool]]:
        """What a send error says (ENETDOWN): the link is down now, before netlink tells."""
        return self._set(iface, up)

    def _resync(self) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        for iface in self.up:
            try:
                out += self._set(iface, flags_up(iface_flags(iface)))
            except OSError:
                out += self._set(iface, False)
        return out

    def _set(self, iface: str | None, up: bool) -> list[tuple[str, bool]]:
        if iface is None or self.up.get(iface) == up:
            return []
        self.up[iface] = up
        return [(iface, up)]

    def close(self) -> None:
        self.sock.close()
