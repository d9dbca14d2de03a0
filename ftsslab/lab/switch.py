"""The switch data plane as a sans-IO core: frames in, ``Transmit`` actions out.

No sockets, threads or clocks: ``on_frame(port, frame, now)`` returns what to send
where, ``add``/``remove`` change the forwarding table and return ``TableEvent``s.
Frames are parsed with ``struct``/slicing only (never Scapy), so malformed input
costs a counter in ``stats`` and nothing else.

Semantics (shared with the veth backend, whose kernel does the same):

1. Forwarding table first (seed 002's table; on veth an nftables ``netdev`` ingress
   chain, which runs before the bridge): entries in insertion order, first match
   wins. An entry matches an IPv4 frame when ``ip daddr == vip`` and, for each field
   that is set, ``ip saddr == client_ip``, ``ip protocol == proto``, transport source
   port ``== client_port``, destination port ``== vport``. Action: rewrite the
   Ethernet destination when ``dst_mac`` is set, send out ``out_port`` (also when it
   is the in-port). Matched frames are not learned (the bridge never sees them).
   Matching reads the frame exactly as the veth switch's nftables rule does
   (``meta protocol ip``, ``ip daddr/saddr/protocol``, ``th sport/dport``): an IPv4
   frame is EtherType 0x0800 after at most one 802.1Q/802.1ad tag (the kernel strips
   the outer tag before the ingress hook) with 20 header bytes present; the "ports"
   are the first four bytes of the transport header, whatever the protocol (an
   ICMP echo request has "source port" 0x0800), and exist only when the kernel
   accepts the header (version 4, IHL >= 5, total length >= the header and within
   the frame), in the first fragment, with four bytes there.
2. Otherwise a learning bridge (Linux ``br0`` with STP off, no ageing):

   - a frame whose source MAC is multicast or all-zero is dropped (kernel rule);
   - the source MAC is learned on the in-port (unless it is one of the switch's own
     port MACs);
   - IEEE link-local destinations ``01:80:c2:00:00:0X``: ``X=0`` is flooded (STP is
     off), ``X=1`` (pause) dropped, the others consumed by the switch unless bit X of
     ``group_fwd_mask`` is set (the kernel's default mask is 0, which this class
     keeps; the lab's switches use 0xfff8 -- everything but 00-02 passes);
   - a destination that is one of the switch's own port MACs is consumed;
   - known unicast destination on another port: that port; on the in-port: drop;
   - unknown unicast, broadcast, multicast: flood to every other port that is up.

A port that is down neither receives nor sends; taking a port down forgets the
MACs learned on it (the kernel flushes them when a bridge port is disabled).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from .model import ForwardingEntry

__all__ = ["SwitchCore", "TableEvent", "Transmit", "format_entry", "parse_mac"]

_ZERO_MAC = b"\x00" * 6
_LINK_LOCAL_PREFIX = b"\x01\x80\xc2\x00\x00"
_VLAN_TYPES = (0x8100, 0x88A8)

_STATS = (
    "rx", "malformed", "rx_unknown_port", "rx_port_down", "table_hits", "table_drop_port_down",
    "invalid_src", "learned", "moved", "link_local", "local", "pause", "forwarded",
    "flooded", "same_port_drop", "tx",
)


@dataclass(frozen=True)
class Transmit:
    """Send ``frame`` out of ``port``."""

    port: str
    frame: bytes


@dataclass(frozen=True)
class TableEvent:
    """A forwarding-table change (``kind`` is "table-add" or "table-remove")."""

    time: float
    kind: str
    entry: ForwardingEntry
    detail: str


def parse_mac(text: str) -> bytes:
    """``"02:00:00:00:00:01"`` (or ``-`` separated) → 6 bytes; ValueError otherwise."""
    parts = str(text).replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
        raise ValueError(f"bad MAC address {text!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"bad MAC address {text!r}") from None


def _mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def format_entry(entry: ForwardingEntry) -> str:
    """One line: ``vip=10.0.0.100 client_ip=10.0.0.1 proto=6 ... -> p2 dst_mac=...``."""
    parts = [f"vip={entry.vip}"]
    for name in ("client_ip", "proto", "client_port", "vport"):
        value = getattr(entry, name)
        if value is not None:
            parts.append(f"{name}={value}")
    parts.append(f"-> {entry.out_port}")
    if entry.dst_mac is not None:
        parts.append(f"dst_mac={entry.dst_mac}")
    return " ".join(parts)


@dataclass(frozen=True)
class _Compiled:
    entry: ForwardingEntry
    vip: bytes
    client_ip: bytes | None
    proto: int | None
    client_port: int | None
    vport: int | None
    dst_mac: bytes | None


def _ipv4(text: str, what: str) -> bytes:
    try:
        return ipaddress.IPv4Address(str(text)).packed
    except ValueError:
        raise ValueError(f"{what}: bad IPv4 address {text!r}") from None


def _number(value: int | None, top: int, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ValueError(f"{what}: {value!r} is not a number 0..{top}")
    return value


class SwitchCore:
    """One switch: ports (its link interfaces), a forwarding table and a MAC table."""

    def __init__(self, ports: Iterable[str], *, local_macs: Iterable[str | bytes] = (),
                 group_fwd_mask: int = 0, name: str = "switch",
                 table_ports: Iterable[str] | None = None):
        self.name = name
        # the ports whose ingress the forwarding table sees (None: all); on the others
        # frames are only bridged, as a port with no nftables ingress chain on veth
        self._table_ports = None if table_ports is None else frozenset(table_ports)
        self._ports: dict[str, bool] = {}
        for port in ports:
            if port in self._ports:
                raise ValueError(f"{name}: duplicate port {port!r}")
            self._ports[port] = True
        self._local = frozenset(m if isinstance(m, bytes) else parse_mac(m) for m in local_macs)
        # 00, 01 and 02 can never be forwarded by the kernel's mask (restricted bits).
        self._group_fwd_mask = group_fwd_mask & ~0x0007
        self._table: list[_Compiled] = []
        self._macs: dict[bytes, str] = {}
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)

    # ---- control plane -----------------------------------------------------------------

    @property
    def ports(self) -> list[str]:
        return list(self._ports)

    def port_up(self, port: str) -> bool:
        return self._ports.get(port, False)

    def set_port(self, port: str, up: bool) -> None:
        if port not in self._ports:
            raise ValueError(f"{self.name}: no port {port!r}")
        self._ports[port] = bool(up)
        if not up:
            for mac in [m for m, p in self._macs.items() if p == port]:
                del self._macs[mac]

    def entries(self) -> list[ForwardingEntry]:
        return [c.entry for c in self._table]

    def mac_table(self) -> dict[str, str]:
        """Learned MAC → port (for display and tests)."""
        return {_mac_text(m): p for m, p in self._macs.items()}

    def _compile(self, entry: ForwardingEntry) -> _Compiled:
        if entry.out_port not in self._ports:
            raise ValueError(f"{self.name}: no port {entry.out_port!r} (ports: "
                             f"{', '.join(self._ports) or 'none'})")
        return _Compiled(
            entry=entry,
            vip=_ipv4(entry.vip, "vip"),
            client_ip=None if entry.client_ip is None else _ipv4(entry.client_ip, "client_ip"),
            proto=_number(entry.proto, 255, "proto"),
            client_port=_number(entry.client_port, 65535, "client_port"),
            vport=_number(entry.vport, 65535, "vport"),
            dst_mac=None if entry.dst_mac is None else parse_mac(entry.dst_mac),
        )

    def add(self, entry: ForwardingEntry, now: float) -> list[TableEvent]:
        """Append ``entry`` (last in match order; a duplicate is appended too, like an nft
        rule). ValueError if it is invalid."""
        self._table.append(self._compile(entry))
        return [TableEvent(now, "table-add", entry, format_entry(entry))]

    def remove(self, entry: ForwardingEntry, now: float) -> list[TableEvent]:
        """Remove the first copy of ``entry``. ValueError if it is not in the table."""
        for i, c in enumerate(self._table):
            if c.entry == entry:
                del self._table[i]
                return [TableEvent(now, "table-remove", entry, format_entry(entry))]
        raise ValueError(f"{self.name}: entry not in the table: {format_entry(entry)}")

    # ---- data plane --------------------------------------------------------------------

    def on_frame(self, port: str, frame: bytes, now: float) -> list[Transmit]:
        """A frame arrived on ``port``: what goes out where. Never raises."""
        stats = self.stats
        stats["rx"] += 1
        if not isinstance(frame, bytes | bytearray | memoryview):
            stats["malformed"] += 1
            return []
        up = self._ports.get(port)
        if up is None:
            stats["rx_unknown_port"] += 1
            return []
        if not up:
            stats["rx_port_down"] += 1
            return []
        data = bytes(frame)
        if len(data) < 14:
            stats["malformed"] += 1
            return []
        if self._table and (self._table_ports is None or port in self._table_ports):
            hit = self._lookup(data)
            if hit is not None:
                stats["table_hits"] += 1
                out = data if hit.dst_mac is None else hit.dst_mac + data[6:]
                if not self._ports[hit.entry.out_port]:
                    stats["table_drop_port_down"] += 1
                    return []
                stats["tx"] += 1
                return [Transmit(hit.entry.out_port, out)]
        return self._bridge(port, data)

    def _lookup(self, data: bytes) -> _Compiled | None:
        off = 12
        (ethertype,) = struct.unpack_from("!H", data, off)
        if ethertype in _VLAN_TYPES:
            if len(data) < 18:
                return None
            off = 16
            (ethertype,) = struct.unpack_from("!H", data, off)
        if ethertype != 0x0800:
            return None
        ip = off + 2
        if len(data) < ip + 20:
            return None
        proto = data[ip + 9]
        saddr = data[ip + 12:ip + 16]
        daddr = data[ip + 16:ip + 20]
        sport = dport = None
        ver_ihl = data[ip]
        hlen = (ver_ihl & 0x0F) * 4
        (total, frag) = struct.unpack_from("!H2xH", data, ip + 2)
        valid = ver_ihl >> 4 == 4 and hlen >= 20 and hlen <= total <= len(data) - ip
        th = ip + hlen
        if valid and frag & 0x1FFF == 0 and len(data) >= th + 4:
            sport, dport = struct.unpack_from("!HH", data, th)
        for c in self._table:
            if c.vip != daddr:
                continue
            if c.client_ip is not None and c.client_ip != saddr:
                continue
            if c.proto is not None and c.proto != proto:
                continue
            if c.client_port is not None and c.client_port != sport:
                continue
            if c.vport is not None and c.vport != dport:
                continue
            return c
        return None

    def _bridge(self, port: str, data: bytes) -> list[Transmit]:
        stats = self.stats
        dst, src = data[0:6], data[6:12]
        if src[0] & 1 or src == _ZERO_MAC:
            stats["invalid_src"] += 1
            return []
        if dst[:5] == _LINK_LOCAL_PREFIX and dst[5] <= 0x0F:
            code = dst[5]
            if code == 0x01:
                stats["pause"] += 1
                return []
            if code != 0x00 and not self._group_fwd_mask & (1 << code):
                self._learn(src, port)
                stats["link_local"] += 1
                return []
        self._learn(src, port)
        if dst in self._local:
            stats["local"] += 1
            return []
        if not dst[0] & 1:
            out = self._macs.get(dst)
            if out is not None:
                if out == port:
                    stats["same_port_drop"] += 1
                    return []
                stats["forwarded"] += 1
                stats["tx"] += 1
                return [Transmit(out, data)]
        stats["flooded"] += 1
        sent = [Transmit(p, data) for p, up in self._ports.items() if up and p != port]
        stats["tx"] += len(sent)
        return sent

    def _learn(self, src: bytes, port: str) -> None:
        if src in self._local:
            return
        old = self._macs.get(src)
        if old == port:
            return
        self.stats["moved" if old is not None else "learned"] += 1
        self._macs[src] = port
